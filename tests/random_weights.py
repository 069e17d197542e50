"""Random weights for the dub-score evaluators' tests (FID Inception, I3D, StableSyncNet): every
tensor of a model drawn so that activations stay of order one through many layers and
BatchNorm's statistics are not the identity (imported by test modules)."""

from __future__ import annotations

import math


def randomize(model, seed: int = 0):
  """`model` in eval mode (no gradients), its parameters and BatchNorm statistics drawn with
  `seed`: weights N(0, 2 / fan_in), scales U(0.5, 1.5), shifts N(0, 0.1^2), running means
  N(0, 0.1^2), variances U(0.5, 1.5)."""
  import torch  # pylint: disable=import-outside-toplevel  # the test modules skip without it
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
      if not t.is_floating_point():
        continue
      leaf = name.rsplit(".", 1)[-1]
      if leaf == "weight" and t.dim() > 1:
        fan_in = math.prod(t.shape[1:])
        t.copy_(torch.randn(t.shape, generator=g) * (2.0 / fan_in) ** 0.5)
      elif leaf in ("weight", "running_var"):
        t.copy_(0.5 + torch.rand(t.shape, generator=g))
      else:  # biases, running means
        t.copy_(0.1 * torch.randn(t.shape, generator=g))
  return model.eval().requires_grad_(False)
