"""Rematerialisation policies of the transformer stacks: what a block keeps for the backward pass.

Training memory is dominated by what each block's forward pass keeps for the backward pass; a
policy trades that memory for recomputation (MaxText's per-layer `remat_policy`). The blocks
(`layers.Attention`, `layers.Mlp`) name their intermediate values with
`jax.ad_checkpoint.checkpoint_name` (`CHECKPOINT_NAMES`), so name-based policies can pick them:

- "none": no `nn.remat`; everything the backward pass needs is kept (fewest FLOPs, most memory).
- "dots_no_batch": keep the outputs of the matmuls without batch dimensions (the q / k / v / out
  projections and both MLP matmuls); recompute attention (logits, softmax, context) and the
  element-wise work (`jax.checkpoint_policies.dots_with_no_batch_dims_saveable`).
- "save_all_but_mlp": keep every named value except the MLP's hidden activations, which are the
  largest (mlp_dim = 4 x width per token); the backward pass recomputes the MLP's first matmul.
- "qkv_proj": keep only the query, key and value projections; recompute the rest.
- "full": keep only each block's input; the backward pass recomputes the whole forward pass
  (about +1/3 of the blocks' FLOPs: forward once more on top of forward + backward).
- "offload": like "save_all_but_mlp" plus the MLP hidden activations, but every named value goes
  to host memory ("pinned_host") instead of HBM and comes back for the backward pass; its cost is
  host-device transfer time, which FLOP counts do not show. Needs a runtime with a "pinned_host"
  memory space: TPU and GPU, and also jax's CPU backend (0.10), where the "transfers" are copies
  within host RAM, so tests/test_remat.py trains with it on CPU.
"""

from __future__ import annotations

import flax.linen as nn
import jax

# The named intermediate values of a transformer block (layers.Attention / layers.Mlp).
QUERY, KEY, VALUE = "query_proj", "key_proj", "value_proj"
CONTEXT = "attention_context"  # softmax(q k^T) v, before the output projection
OUT = "out_proj"
MLP_HIDDEN = "mlp_hidden"  # the first MLP matmul's output, before the GELU
MLP_OUT = "mlp_out"
CHECKPOINT_NAMES = (QUERY, KEY, VALUE, CONTEXT, OUT, MLP_HIDDEN, MLP_OUT)

# Ordered from the least recomputation (most memory) to the most; "offload" last.
REMAT_POLICIES = ("none", "dots_no_batch", "save_all_but_mlp", "qkv_proj", "full", "offload")
STACKS = ("encoder", "decoder")


def checkpoint_policy(name: str):
  """The `jax.checkpoint` policy of a remat policy name (None for "full": keep nothing)."""
  policies = jax.checkpoint_policies
  if name == "dots_no_batch":
    return policies.dots_with_no_batch_dims_saveable
  if name == "save_all_but_mlp":
    return policies.save_any_names_but_these(MLP_HIDDEN)
  if name == "qkv_proj":
    return policies.save_only_these_names(QUERY, KEY, VALUE)
  if name == "full":
    return None
  if name == "offload":
    return policies.save_and_offload_only_these_names(
        names_which_can_be_saved=(), names_which_can_be_offloaded=CHECKPOINT_NAMES,
        offload_src="device", offload_dst="pinned_host")
  raise ValueError(f"remat policy {name!r} has no checkpoint policy; known: {REMAT_POLICIES[1:]}")


def wrap(block: type[nn.Module], policy: str, *, scanned: bool) -> type[nn.Module]:
  """`block` under `nn.remat` with the named policy ("none": `block` itself).

  Under `nn.scan` the loop already keeps XLA from merging the recomputation with the forward
  pass, so common-subexpression elimination need not be prevented (`prevent_cse=False`, as
  jax.checkpoint's documentation recommends for scanned bodies).
  """
  if policy not in REMAT_POLICIES:
    raise ValueError(f"unknown remat policy {policy!r}; known: {REMAT_POLICIES}")
  if policy == "none":
    return block
  return nn.remat(block, prevent_cse=not scanned, policy=checkpoint_policy(policy))
