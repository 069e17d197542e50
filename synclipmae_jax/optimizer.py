"""AdamW with linear warmup and cosine decay, gradient clipping, and weight decay on every weight
matrix (dense, attention and convolution kernels), none on norms, biases, position embeddings,
prompt and mask tokens.

The frozen audio encoder is not part of the trainable parameters at all, so the optimizer
holds no state for it.
"""

from __future__ import annotations

import jax
import optax


def _param_name(path) -> str:
  names = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)]
  return names[-1] if names else ""


def decays(name: str) -> bool:
  """Whether a parameter named `name` gets weight decay: the kernels of dense and convolution
  layers (`kernel`) and of attention (`query_kernel`, `key_kernel`, `value_kernel`, `out_kernel`).
  Norm scales, biases (`bias`, `query_bias`, ...), `pos_embed`, `prompts` and `mask_token` do not."""
  return name == "kernel" or name.endswith("_kernel")


def decay_mask(params):
  """The weight-decay mask of a parameter tree (`decays` on each leaf's name)."""
  return jax.tree_util.tree_map_with_path(lambda path, _: decays(_param_name(path)), params)


def make(optim_config, total_steps: int):
  """Returns (optax transformation, learning-rate schedule)."""
  c = optim_config
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=c.learning_rate, warmup_steps=c.warmup_steps,
      decay_steps=max(total_steps, c.warmup_steps + 1), end_value=c.learning_rate * c.final_lr_fraction)
  tx = optax.chain(
      optax.clip_by_global_norm(c.grad_clip_norm),
      optax.adamw(schedule, b1=c.b1, b2=c.b2, weight_decay=c.weight_decay, mask=decay_mask))
  return tx, schedule
