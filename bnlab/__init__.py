"""bnlab: a reproducible replication of Santurkar et al. (2018), "How Does Batch Normalization Help
Optimization?". See README.md; docs/layout.md maps the library's layers; the probes
(bnlab.probes) work on any torch.nn.Module."""

__version__ = "0.1.0"
