"""Transformer building blocks with logical axis names on every parameter.

Parameters use the logical names `embed`, `mlp`, `heads`, `kv`, `patch`, `audio_features`;
activations use `batch`, `length`, `act_embed`, `act_mlp`, `act_heads`. The mapping from
logical names to mesh axes is data in the config (`config.sharding.logical_axis_rules`).
Intermediate values carry the checkpoint names of `remat.CHECKPOINT_NAMES`, which the stacks'
rematerialisation policies (`remat.REMAT_POLICIES`) select.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
from jax.ad_checkpoint import checkpoint_name
import jax.numpy as jnp
import numpy as np

from synclipmae_jax.models import remat

Dtype = Any

xavier = nn.initializers.xavier_uniform()
LAYER_NORM_EPS = 1e-6  # every LayerNorm of the encoder, decoder and audio adapter (ViT/MAE's)


def layer_norm(name: str | None = None, dtype: Dtype = jnp.float32) -> nn.LayerNorm:
  return nn.LayerNorm(
      epsilon=LAYER_NORM_EPS, dtype=dtype, name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))


def dense(features: int, axes: tuple[str, str], dtype: Dtype, name: str | None = None,
          kernel_init=xavier) -> nn.Dense:
  return nn.Dense(
      features, dtype=dtype, name=name,
      kernel_init=nn.with_logical_partitioning(kernel_init, axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[1],)))


def sincos_2d(grid: int, width: int) -> np.ndarray:
  """Fixed 2-D sine-cosine position embedding [grid*grid, width] (MAE's initialisation)."""
  if width % 4:
    raise ValueError(f"width {width} must be divisible by 4 for 2-D sin-cos embeddings")
  omega = 1.0 / 10000 ** (np.arange(width // 4) / (width // 4))
  ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
  out = [f(c.reshape(-1, 1) * omega) for c in (xs, ys) for f in (np.sin, np.cos)]
  return np.concatenate(out, axis=1).astype(np.float32)


def constrain(x, *names):
  return nn.with_logical_constraint(x, names)


class Attention(nn.Module):
  """Multi-head attention of `x` [B, Lq, D] over `context` [B, Lk, D]; `mask` (bool,
  broadcastable to [B, heads, Lq, Lk], True = attend) hides keys (padding, the future)."""

  num_heads: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, context, mask=None):
    width = x.shape[-1]
    if width % self.num_heads:
      raise ValueError(f"width {width} is not divisible by num_heads {self.num_heads}")
    head_dim = width // self.num_heads
    in_init = nn.initializers.xavier_uniform(in_axis=0, out_axis=(1, 2))

    def proj(name, inputs, checkpoint):
      kernel = self.param(f"{name}_kernel", nn.with_logical_partitioning(
          in_init, ("embed", "heads", "kv")), (width, self.num_heads, head_dim))
      bias = self.param(f"{name}_bias", nn.with_logical_partitioning(
          nn.initializers.zeros, ("heads", "kv")), (self.num_heads, head_dim))
      y = jnp.einsum("bld,dhk->blhk", inputs, kernel.astype(self.dtype)) + bias.astype(self.dtype)
      return checkpoint_name(constrain(y, "batch", "length", "act_heads", None), checkpoint)

    q = proj("query", x, remat.QUERY) * (head_dim ** -0.5)
    k, v = proj("key", context, remat.KEY), proj("value", context, remat.VALUE)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32)
    if mask is not None:
      logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = nn.softmax(logits, axis=-1).astype(self.dtype)
    out = checkpoint_name(jnp.einsum("bhqk,bkhd->bqhd", weights, v), remat.CONTEXT)
    kernel = self.param("out_kernel", nn.with_logical_partitioning(
        nn.initializers.xavier_uniform(in_axis=(0, 1), out_axis=2), ("heads", "kv", "embed")),
        (self.num_heads, head_dim, width))
    bias = self.param("out_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                      (width,))
    y = jnp.einsum("bqhd,hdk->bqk", out, kernel.astype(self.dtype)) + bias.astype(self.dtype)
    return checkpoint_name(y, remat.OUT)


class Mlp(nn.Module):
  """Transformer MLP with the exact (erf) GELU of Sapiens, ViTMAE and torch's nn.GELU."""
  mlp_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    h = checkpoint_name(dense(self.mlp_dim, ("embed", "mlp"), self.dtype, "fc1")(x), remat.MLP_HIDDEN)
    h = constrain(nn.gelu(h, approximate=False), "batch", "length", "act_mlp")
    return checkpoint_name(dense(width, ("mlp", "embed"), self.dtype, "fc2")(h), remat.MLP_OUT)


class Block(nn.Module):
  """Pre-LN transformer block: self-attention, optional cross-attention, MLP.

  `context` (the prompt tokens, paper 3.2 "Decoder with Prompt Cross-Attention") is only
  attended to when `cross_attention` is set; the encoder's blocks have none.
  """

  num_heads: int
  mlp_dim: int
  cross_attention: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, context=None):
    x = constrain(x, "batch", "length", "act_embed")
    h = layer_norm("ln_self", self.dtype)(x)
    x = x + Attention(self.num_heads, self.dtype, name="self_attn")(h, h)
    if self.cross_attention:
      h = layer_norm("ln_cross", self.dtype)(x)
      c = layer_norm("ln_context", self.dtype)(context)
      x = x + Attention(self.num_heads, self.dtype, name="cross_attn")(h, c)
    h = layer_norm("ln_mlp", self.dtype)(x)
    x = x + Mlp(self.mlp_dim, self.dtype, name="mlp")(h)
    return constrain(x, "batch", "length", "act_embed")


class _ScanBlock(Block):
  """`Block` with the (carry, output) signature that `nn.scan` needs."""

  @nn.compact
  def __call__(self, x, context=None):
    return super().__call__(x, context), None


class Stack(nn.Module):
  """`depth` blocks, under `nn.scan` (one compiled layer, a leading `layers` axis on every
  parameter) when asked, each block rematerialised by `remat_policy` (`remat.REMAT_POLICIES`:
  what it keeps for the backward pass, what it recomputes)."""

  depth: int
  num_heads: int
  mlp_dim: int
  cross_attention: bool = False
  scan: bool = False
  remat_policy: str = "none"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, context=None):
    kwargs = dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim,
                  cross_attention=self.cross_attention, dtype=self.dtype)
    if self.scan:
      block = remat.wrap(_ScanBlock, self.remat_policy, scanned=True)
      x, _ = nn.scan(
          block, variable_axes={"params": 0}, split_rngs={"params": True},
          in_axes=nn.broadcast, length=self.depth,
          metadata_params={nn.PARTITION_NAME: "layers"})(**kwargs, name="layers")(x, context)
      return x
    block = remat.wrap(Block, self.remat_policy, scanned=False)
    for i in range(self.depth):
      x = block(**kwargs, name=f"layers_{i}")(x, context)
    return x
