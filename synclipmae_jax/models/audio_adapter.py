"""Audio adapter (paper 3.2 "Audio Features and Adapter").

The frozen speech encoder's per-layer hidden states, aligned to one token per video frame,
are concatenated along features (`all_layers`, the paper's ConcatAdapter) or reduced to the
last layer (`last_layer`, ablation B1) and projected to the shared width D.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from synclipmae_jax.models import layers

ADAPTER_MODES = ("all_layers", "last_layer")


class AudioAdapter(nn.Module):
  """features [B, T, L, C] -> audio tokens [B, T, D]."""

  width: int
  mode: str = "all_layers"
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, features):
    if self.mode not in ADAPTER_MODES:
      raise ValueError(f"adapter mode must be one of {ADAPTER_MODES}, got {self.mode!r}")
    if self.mode == "last_layer":
      features = features[:, :, -1:]
    x = features.reshape(features.shape[:2] + (-1,)).astype(self.dtype)
    x = nn.LayerNorm(epsilon=layers.LAYER_NORM_EPS, dtype=self.dtype, name="ln_in",
                     scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("audio_features",)),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("audio_features",)))(x)
    x = layers.dense(self.width, ("audio_features", "mlp"), self.dtype, "proj_in")(x)
    return layers.dense(self.width, ("mlp", "embed"), self.dtype, "proj_out")(
        nn.gelu(x, approximate=False))
