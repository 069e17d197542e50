"""The Conformer encoder of the lip-reading head (paper 4.3; Gulati et al. 2020, as in
Auto-AVSR): per-frame vocal-motion tokens in, per-frame hidden states out.

Block (pre-LN, macaron): x + FFN/2 -> + self-attention -> + convolution module -> + FFN/2 -> LN.
Convolution module: LN -> pointwise to 2C -> GLU -> depthwise temporal convolution (kernel k,
centred, or causal: frame t sees frames t-k+1..t) -> LN -> swish -> pointwise. Two departures
from the paper's recipe, both for equal sharded and unsharded numerics and a simple state:
LayerNorm where the Conformer has BatchNorm after the depthwise convolution, and sinusoidal
absolute positions added at the input instead of relative-position attention.

Padding: `mask` [B, T] (True = a real frame). Padded frames are hidden from attention and
zeroed before the depthwise convolution, so the hidden states of real frames do not depend on
what the padding holds.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from synclipmae_jax.models import layers


def sincos_1d(length: int, width: int) -> np.ndarray:
  """Transformer sine-cosine positions [length, width] (Vaswani et al. 2017)."""
  if width % 2:
    raise ValueError(f"width {width} must be even for sin-cos positions")
  omega = 1.0 / 10000 ** (np.arange(width // 2) / (width // 2))
  angle = np.arange(length)[:, None] * omega[None]
  return np.concatenate([np.sin(angle), np.cos(angle)], axis=1).astype(np.float32)


class FeedForward(nn.Module):
  """LN -> dense to mlp_dim -> swish -> dense back (the Conformer's half-step FFN)."""

  mlp_dim: int
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = layers.layer_norm("ln", self.dtype)(x)
    h = nn.swish(layers.dense(self.mlp_dim, ("embed", "mlp"), self.dtype, "fc1")(h))
    h = layers.constrain(h, "batch", "length", "act_mlp")
    return layers.dense(x.shape[-1], ("mlp", "embed"), self.dtype, "fc2")(h)


class ConvModule(nn.Module):
  """The Conformer's convolution module over time, on x [B, T, C] with mask [B, T]."""

  kernel_size: int
  causal: bool = False
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask):
    width = x.shape[-1]
    h = layers.layer_norm("ln", self.dtype)(x)
    h = nn.glu(layers.dense(2 * width, ("embed", "mlp"), self.dtype, "pointwise_in")(h), axis=-1)
    h = jnp.where(mask[..., None], h, 0)
    k = self.kernel_size
    padding = [(k - 1, 0)] if self.causal else [((k - 1) // 2, k // 2)]
    h = nn.Conv(width, (k,), padding=padding, feature_group_count=width, dtype=self.dtype,
                name="depthwise",
                kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                         (None, None, "embed")),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))(h)
    h = nn.swish(layers.layer_norm("ln_conv", self.dtype)(h))
    return layers.dense(width, ("mlp", "embed"), self.dtype, "pointwise_out")(h)


class ConformerBlock(nn.Module):
  num_heads: int
  mlp_dim: int
  kernel_size: int
  causal: bool = False
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask):
    x = layers.constrain(x, "batch", "length", "act_embed")
    x = x + 0.5 * FeedForward(self.mlp_dim, self.dtype, name="ffn1")(x)
    h = layers.layer_norm("ln_attn", self.dtype)(x)
    x = x + layers.Attention(self.num_heads, self.dtype, name="self_attn")(
        h, h, mask[:, None, None, :])
    x = x + ConvModule(self.kernel_size, self.causal, self.dtype, name="conv")(x, mask)
    x = x + 0.5 * FeedForward(self.mlp_dim, self.dtype, name="ffn2")(x)
    return layers.constrain(layers.layer_norm("ln_out", self.dtype)(x), "batch", "length", "act_embed")


class ConformerEncoder(nn.Module):
  """features [B, T, F] (vocal-motion tokens), mask [B, T] -> hidden states [B, T, width]."""

  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  kernel_size: int
  causal: bool = False
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, features, mask):
    x = layers.dense(self.width, ("mlp", "embed"), self.dtype, "input_proj")(features)
    x = x + jnp.asarray(sincos_1d(features.shape[1], self.width), self.dtype)
    for i in range(self.depth):
      x = ConformerBlock(self.num_heads, self.mlp_dim, self.kernel_size, self.causal, self.dtype,
                         name=f"layers_{i}")(x, mask)
    return x
