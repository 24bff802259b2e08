"""Probes of SPEC section 3: internal covariate shift, the loss landscape along the gradient, and
activation statistics. They work on any torch.nn.Module under one assumption:

    the model's forward pass uses its parameters in the order of `model.named_parameters()`
    (true of every nn.Sequential and of models that register submodules in the order they call them).

"Layers" are the model's nn.Linear and nn.Conv2d modules in that order (and modules that set
`counts_as_layer`); the paper's layer #n is the n-th of them.

A model with a `runs` attribute stacks that many independent runs (bnlab.models.dln_stack): its loss
function returns one loss per run, its parameters and activations have a leading run axis, and every
result gets one.

Every probe
- runs the model in training mode (batch statistics: exactly the function being optimized),
- computes in strict fp32 on CUDA (TF32 off for its duration, whatever the training step uses): TF32 rounds
  products to about 1e-3 relative, and the gradient differences the probes report go below that,
- leaves the model's parameters, buffers (running statistics included) and train/eval mode of every
  submodule exactly as it found them,
- replays one random draw: torch's generators are reset to the state they had when the probe was called
  before every forward pass, so a stochastic layer (noisy BatchNorm, dropout) sees the same draw at every
  point of one measurement, and they are left in that state afterwards, so probing does not change the
  random stream of the training run.

The probes, by module: internal covariate shift (shift), the loss landscape (landscape), activation
statistics (activations), the Hessian's eigenvalues, trace and spectral density (curvature, which can also
measure the eval-mode function: running statistics), both sides of the paper's Theorems 4.1 and 4.2 for each
BatchNorm layer (theorems); what they share (measurement).
"""

from bnlab.probes.activations import DEFAULT_QUANTILES, activation_stats, bn_input_sigma, sample_units
from bnlab.probes.curvature import (
    gradient_in_top_eigenspace,
    hessian_eigenvalues,
    hessian_spectrum,
    hessian_trace,
    spectral_density,
)
from bnlab.probes.landscape import landscape, landscape_multipliers, landscape_tensors
from bnlab.probes.measurement import LossFn, batchnorm_layers, modes_differ, numbered_layers
from bnlab.probes.shift import ics, ics_tensors
from bnlab.probes.theorems import batchnorm_theorems, theorem_layers

__all__ = ["DEFAULT_QUANTILES", "LossFn", "activation_stats", "batchnorm_layers", "batchnorm_theorems",
           "bn_input_sigma", "gradient_in_top_eigenspace", "hessian_eigenvalues", "hessian_spectrum", "hessian_trace",
           "ics", "ics_tensors", "landscape", "landscape_multipliers", "landscape_tensors", "modes_differ",
           "numbered_layers", "sample_units", "spectral_density", "theorem_layers"]
