"""Tests of identity-consistent prompt shuffling: swaps stay within an identity, cross clips
wherever the identity has several, and the permutation is a bijection."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synclipmae_jax import objective
from synclipmae_jax.prompt_shuffle import identity_swap

_swap = jax.jit(identity_swap)


def _frames(identities_of_clips, frames_per_clip):
  """Frame-level (identity ids, clip ids) of clips laid out one after another."""
  identities = np.repeat(np.asarray(identities_of_clips, np.int32), frames_per_clip)
  clips = np.repeat(np.arange(len(identities_of_clips), dtype=np.int32), frames_per_clip)
  return identities, clips


def test_swaps_stay_within_an_identity_and_cross_clips():
  rng = np.random.default_rng(0)
  for seed in range(20):
    t = int(rng.integers(1, 6))
    identities, clips = _frames(rng.integers(-2, 4, size=int(rng.integers(1, 9))), t)
    perm = np.asarray(_swap(jax.random.key(seed), identities, clips))
    assert sorted(perm.tolist()) == list(range(len(perm)))  # a permutation
    np.testing.assert_array_equal(identities[perm], identities)
    for i, j in enumerate(perm):
      others = set(clips[identities == identities[i]]) - {clips[i]}
      if others:  # another clip of the identity exists: the partner comes from one
        assert clips[j] != clips[i], (seed, i)
      elif np.sum(clips == clips[i]) > 1:  # a single clip: another frame of it
        assert j != i


def test_clips_of_unequal_sizes_still_give_a_permutation():
  identities = np.asarray([1, 1, 1, 1, 1, 2, 2], np.int32)
  clips = np.asarray([0, 0, 1, 1, 1, 2, 3], np.int32)
  for seed in range(20):
    perm = np.asarray(_swap(jax.random.key(seed), identities, clips))
    assert sorted(perm.tolist()) == list(range(7))
    np.testing.assert_array_equal(identities[perm], identities)


def test_partners_are_spread_over_clips_and_frames():
  identities, clips = _frames([5, 5, 5, 9], 4)
  perms = np.asarray(jax.vmap(_swap, in_axes=(0, None, None))(
      jax.random.split(jax.random.key(0), 300), identities, clips))
  # frame 0 (clip 0 of identity 5) takes its partner from clip 1 or 2, any of their 4 frames
  freq = np.bincount(perms[:, 0], minlength=16)[4:12] / len(perms)
  np.testing.assert_allclose(freq, 1 / 8, atol=0.06)
  assert set(perms[:, 12]) == {13, 14, 15}  # the single clip of identity 9: the other frames


def test_single_frame_identity_keeps_its_prompt():
  perm = np.asarray(_swap(jax.random.key(1), jnp.arange(6, dtype=jnp.int32), jnp.arange(6, dtype=jnp.int32)))
  np.testing.assert_array_equal(perm, np.arange(6))


def test_batch_permutation_and_cross_clip_metric():
  """The objective's permutation over groups of a batch: offsets per group, metric = fraction."""
  identity_ids = jnp.asarray([0, 0, 1, 1, 2, 3, 4, 4], jnp.int32)  # 2 groups of 4 clips
  t = 3
  perm = np.asarray(objective.identity_permutation(jax.random.key(0), identity_ids, t, 4))
  frame_identity = np.repeat(np.asarray(identity_ids), t)
  np.testing.assert_array_equal(frame_identity[perm], frame_identity)
  assert (perm[:12] < 12).all() and (perm[12:] >= 12).all()  # never across groups
  clip = np.arange(24) // t
  expected = np.mean(clip[perm] != clip)
  assert expected == pytest.approx(18 / 24)  # identities 0, 1, 4 have two clips; 2 and 3 one
  assert float(objective.cross_clip_fraction(jnp.asarray(perm), t)) == pytest.approx(expected)


def test_rejects_bad_ids():
  with pytest.raises(ValueError, match="clip_ids"):
    identity_swap(jax.random.key(0), jnp.zeros(4, jnp.int32), jnp.zeros(3, jnp.int32))
  with pytest.raises(ValueError, match="identity_ids"):
    identity_swap(jax.random.key(0), jnp.zeros(4, jnp.float32), jnp.zeros(4, jnp.int32))
