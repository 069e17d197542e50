"""ViT encoder with three per-frame prompt tokens (paper 3.2 "Visual Encoder and Prompt Tokens").

The encoder consumes only the visible patches: patch pixels are gathered before the patch
embedding, so nothing is computed for masked patches. Three learnable prompt tokens
(identity, vocal motion, ambient motion) are prepended to every frame's visible tokens.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from synclipmae_jax.models import layers

PROMPT_NAMES = ("identity", "vocal", "ambient")


@dataclasses.dataclass(frozen=True)
class VitSize:
  width: int
  depth: int
  num_heads: int
  mlp_dim: int


SIZES = {
    "tiny": VitSize(32, 2, 2, 64),  # unit tests
    "mini": VitSize(96, 4, 4, 384),  # the CPU demo
    "S": VitSize(384, 12, 6, 1536),
    "B": VitSize(768, 12, 12, 3072),
    "L": VitSize(1024, 24, 16, 4096),
    "sapiens_0.3b": VitSize(1024, 24, 16, 4096),  # Sapiens-0.3B (ViT-L/16), paper 5
}


def vit_size(name: str) -> VitSize:
  if name not in SIZES:
    raise ValueError(f"unknown encoder size {name!r}; known: {sorted(SIZES)}")
  return SIZES[name]


class VitEncoder(nn.Module):
  """patches [F, N, P] (all patches of F frames) + keep [F, k] -> (tokens [F, k, D], prompts [F, 3, D])."""

  size: VitSize
  grid: int
  dtype: layers.Dtype = jnp.float32
  scan: bool = False
  remat_policy: str = "none"

  @nn.compact
  def __call__(self, patches, keep):
    width = self.size.width
    visible = jnp.take_along_axis(patches, keep[..., None], axis=1)
    x = layers.dense(width, ("patch", "embed"), self.dtype, "patch_embed")(visible)
    pos = self.param("pos_embed", nn.with_logical_partitioning(
        lambda *_: jnp.asarray(layers.sincos_2d(self.grid, width)), ("length", "embed")))
    x = x + jnp.take(pos, keep, axis=0).astype(self.dtype)
    prompts = self.param("prompts", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), ("prompts", "embed")), (len(PROMPT_NAMES), width))
    x = jnp.concatenate([jnp.broadcast_to(prompts.astype(self.dtype), (x.shape[0],) + prompts.shape),
                         x], axis=1)
    x = layers.Stack(self.size.depth, self.size.num_heads, self.size.mlp_dim, scan=self.scan,
                     remat_policy=self.remat_policy, dtype=self.dtype, name="blocks")(x)
    x = layers.layer_norm("ln_out", self.dtype)(x)
    return x[:, len(PROMPT_NAMES):], x[:, :len(PROMPT_NAMES)]
