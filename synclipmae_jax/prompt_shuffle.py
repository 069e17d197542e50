"""Identity-consistent prompt shuffling (paper 3.2).

Within a mini-batch, identity prompts are randomly swapped among frames that share the
same subject identity, so the identity prompt cannot carry the short-term motion of its
own frame. The permutation has static shapes (two sorts of length N), so it jits and vmaps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def shuffle_within_groups(
    rng: jax.Array,
    tokens: jnp.ndarray,
    group_ids: jnp.ndarray,
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Permutes `tokens` uniformly at random within each group of equal `group_ids`.

  A stable sort by group id lists the positions of each group in index order; a sort by
  (group id, random key) lists the same positions in a uniformly random order. Pairing
  the k-th entries of the two orders maps each position to a random position of its own
  group, so `group_ids[permutation] == group_ids`. Every within-group permutation is
  equally likely (including leaving a frame in place); a group of size 1 maps to itself.

  Args:
    rng: a JAX PRNG key.
    tokens: [N, ...] tokens (e.g. identity prompts of N frames, [N, D]).
    group_ids: [N] integer identity of each row.

  Returns:
    (shuffled, permutation): shuffled = tokens[permutation], permutation [N] int32.

  Raises:
    ValueError: if `group_ids` is not a 1-D integer array of length N.
  """
  if group_ids.ndim != 1 or tokens.ndim < 1 or tokens.shape[0] != group_ids.shape[0]:
    raise ValueError(
        f"group_ids shape {group_ids.shape} must be [N] with N = tokens.shape[0] "
        f"(tokens shape {tokens.shape})")
  if not jnp.issubdtype(group_ids.dtype, jnp.integer):
    raise ValueError(f"group_ids must be integers, got dtype {group_ids.dtype}")
  n = group_ids.shape[0]
  random_keys = jax.random.permutation(rng, n)
  in_index_order = jnp.argsort(group_ids, stable=True)
  in_random_order = jnp.lexsort((random_keys, group_ids))
  permutation = jnp.zeros(n, jnp.int32).at[in_index_order].set(
      in_random_order.astype(jnp.int32))
  return tokens[permutation], permutation
