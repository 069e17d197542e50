"""Identity-consistent prompt shuffling (paper 3.2).

Identity prompts are swapped among frames that share the same subject identity "but exhibit
different facial motions", so the identity prompt cannot carry the short-term motion of its own
frame. `identity_swap` takes each frame's partner from another clip of its identity wherever the
group holds one (identity-aware batches, `data_pipelines.identity_groups`, make that common), and
from another frame of its own clip otherwise. Static shapes (one sort of length N), so it jits and
vmaps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _run_starts(boundary: jnp.ndarray) -> jnp.ndarray:
  """[N] bool run boundaries (True at each run's first position) -> each position's run start."""
  return jax.lax.cummax(jnp.where(boundary, jnp.arange(boundary.shape[0]), 0))


def identity_swap(rng: jax.Array, identity_ids: jnp.ndarray, clip_ids: jnp.ndarray) -> jnp.ndarray:
  """A permutation of N frames that moves identity prompts between frames of one identity.

  Frames are sorted by (identity, clip in a random order, frame in a random order). Within the
  run of one identity, positions shift cyclically by the size of the frame's clip block: with the
  C >= 2 clips of an identity holding T frames each, the j-th (random) frame of one clip takes
  the prompt of the j-th (random) frame of the next clip in the random cycle, so every partner is
  in another clip (clips of unequal sizes still get a permutation, but then not every partner is
  in another clip). An identity with one clip in the group shifts by one within it (a random
  derangement of its frames); an identity with one frame keeps it.

  Args:
    rng: a JAX PRNG key.
    identity_ids: [N] integer identity of each frame.
    clip_ids: [N] integer clip of each frame (frames of one clip share an identity).

  Returns:
    permutation [N] int32: frame i gets the identity prompt of frame permutation[i];
    identity_ids[permutation] == identity_ids.

  Raises:
    ValueError: if the ids are not 1-D integer arrays of the same length.
  """
  n = identity_ids.shape[0]
  for name, ids in (("identity_ids", identity_ids), ("clip_ids", clip_ids)):
    if ids.shape != (n,) or not jnp.issubdtype(ids.dtype, jnp.integer):
      raise ValueError(f"{name} must be integers [N={n}], got {ids.dtype} {ids.shape}")
  k_clip, k_frame = jax.random.split(rng)
  clip_key = jax.vmap(lambda c: jax.random.uniform(jax.random.fold_in(k_clip, c)))(clip_ids)
  order = jnp.lexsort((jax.random.uniform(k_frame, (n,)), clip_ids, clip_key, identity_ids))
  ident, clip = identity_ids[order], clip_ids[order]
  position = jnp.arange(n)
  new_identity = jnp.concatenate([jnp.ones(1, bool), ident[1:] != ident[:-1]])
  new_clip = new_identity | jnp.concatenate([jnp.ones(1, bool), clip[1:] != clip[:-1]])
  start = _run_starts(new_identity)
  size = jnp.zeros(n, jnp.int32).at[start].add(1)[start]
  clip_start = _run_starts(new_clip)
  clip_size = jnp.zeros(n, jnp.int32).at[clip_start].add(1)[clip_start]
  first_clip = clip_size[start]  # one shift per identity: a cyclic shift is a bijection
  shift = jnp.where(size > first_clip, first_clip, jnp.minimum(size - 1, 1))
  target = start + (position - start + shift) % size
  return jnp.zeros(n, jnp.int32).at[order].set(order[target].astype(jnp.int32))
