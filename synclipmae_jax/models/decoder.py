"""MAE decoder with prompt cross-attention (paper 3.2 "Decoder with Prompt Cross-Attention").

The visible tokens of bypass 1 are projected to the decoder width and put back at their
positions; a learnable mask token fills the masked ones; position embeddings are added.
Each block: self-attention over all N patches, cross-attention to the prompt tokens
[identity, ambient, condition], MLP. With `cross_attention=False` (ablation C1) the
prompts are instead concatenated to the sequence before self-attention.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from synclipmae_jax.models import layers


class MaeDecoder(nn.Module):
  """tokens [F, k, De] at `keep` [F, k] + prompts [F, S, De] -> pixels [F, N, patch_dim]."""

  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  grid: int
  patch_dim: int
  cross_attention: bool = True
  dtype: layers.Dtype = jnp.float32
  scan: bool = False
  remat_policy: str = "none"

  @nn.compact
  def __call__(self, tokens, keep, prompts):
    num_patches = self.grid * self.grid
    x = layers.dense(self.width, ("embed", "mlp"), self.dtype, "embed")(tokens)
    mask_token = self.param("mask_token", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), ("embed",)), (self.width,))
    full = jnp.broadcast_to(mask_token.astype(self.dtype), (x.shape[0], num_patches, self.width))
    full = jax.vmap(lambda f, i, v: f.at[i].set(v))(full, keep, x)
    pos = self.param("pos_embed", nn.with_logical_partitioning(
        lambda *_: jnp.asarray(layers.sincos_2d(self.grid, self.width)), ("length", "embed")))
    full = full + pos.astype(self.dtype)
    context = layers.dense(self.width, ("embed", "mlp"), self.dtype, "prompt_embed")(prompts)
    stack = layers.Stack(self.depth, self.num_heads, self.mlp_dim, cross_attention=self.cross_attention,
                         scan=self.scan, remat_policy=self.remat_policy, dtype=self.dtype,
                         name="blocks")
    if self.cross_attention:
      full = stack(full, context)
    else:
      full = stack(jnp.concatenate([full, context], axis=1))[:, :num_patches]
    full = layers.layer_norm("ln_out", self.dtype)(full)
    return layers.dense(self.patch_dim, ("embed", "patch"), self.dtype, "head")(full).astype(jnp.float32)
