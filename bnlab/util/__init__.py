"""Layer 0: small helpers that know nothing of bnlab (files, generator states, devices, processes)."""
