"""PyTorch peer models of the parity tests (imported by test modules)."""

from __future__ import annotations


def random_eval_model(model_class, config, keep=lambda name: False):
  """`model_class(config)` in eval mode with seed 0, every parameter (norms and biases too)
  moved by N(0, 0.2^2) noise, except those whose name `keep` accepts."""
  import torch  # pylint: disable=import-outside-toplevel  # the test modules skip without it
  torch.manual_seed(0)
  model = model_class(config).eval()
  with torch.no_grad():
    for name, parameter in model.named_parameters():
      if not keep(name):
        parameter.add_(0.2 * torch.randn_like(parameter))
  return model
