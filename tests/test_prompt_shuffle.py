"""Tests of identity-consistent prompt shuffling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synclipmae_jax.prompt_shuffle import shuffle_within_groups

_shuffle = jax.jit(shuffle_within_groups)


@pytest.fixture(scope="module")
def layout():
  """12 frames of 4 identities, interleaved, with one singleton identity (7)."""
  group_ids = np.array([3, 1, 3, 7, 1, 1, 3, 2, 2, 3, 1, 2], np.int32)
  tokens = np.arange(12 * 4, dtype=np.float32).reshape(12, 4)
  return tokens, group_ids


@pytest.fixture(scope="module")
def many_permutations(layout):
  tokens, group_ids = layout
  keys = jax.random.split(jax.random.key(0), 300)
  shuffled, perms = jax.jit(jax.vmap(shuffle_within_groups, in_axes=(0, None, None)))(
      keys, tokens, group_ids)
  return np.asarray(shuffled), np.asarray(perms)


def test_permutation_stays_within_random_group_layouts():
  rng = np.random.default_rng(0)
  for seed in range(20):
    n = int(rng.integers(1, 40))
    group_ids = rng.integers(-3, 5, size=n).astype(np.int32)
    tokens = rng.normal(size=(n, 3)).astype(np.float32)
    shuffled, perm = _shuffle(jax.random.key(seed), tokens, group_ids)
    perm = np.asarray(perm)
    assert sorted(perm.tolist()) == list(range(n))
    np.testing.assert_array_equal(group_ids[perm], group_ids)
    np.testing.assert_array_equal(np.asarray(shuffled), tokens[perm])


def test_tokens_multiset_preserved(layout, many_permutations):
  tokens, _ = layout
  shuffled, _ = many_permutations
  want = np.sort(tokens.ravel())
  for s in shuffled[:20]:
    np.testing.assert_array_equal(np.sort(s.ravel()), want)


def test_every_member_of_a_larger_group_sometimes_moves(layout, many_permutations):
  _, group_ids = layout
  _, perms = many_permutations
  sizes = {g: int(np.sum(group_ids == g)) for g in np.unique(group_ids)}
  moved = (perms != np.arange(len(group_ids))).any(axis=0)
  for i, g in enumerate(group_ids):
    assert moved[i] == (sizes[g] >= 2), (i, g)


def test_within_group_permutation_is_uniform(layout, many_permutations):
  _, group_ids = layout
  _, perms = many_permutations
  members = np.flatnonzero(group_ids == 2)  # size 3: each target with probability 1/3
  for i in members:
    freq = np.mean(perms[:, i][:, None] == members[None, :], axis=0)
    np.testing.assert_allclose(freq, 1.0 / 3.0, atol=0.1)


def test_singleton_group_stays_fixed():
  group_ids = jnp.arange(6, dtype=jnp.int32)
  tokens = jnp.ones((6, 2)) * jnp.arange(6)[:, None]
  shuffled, perm = _shuffle(jax.random.key(1), tokens, group_ids)
  np.testing.assert_array_equal(np.asarray(perm), np.arange(6))
  np.testing.assert_array_equal(np.asarray(shuffled), np.asarray(tokens))


def test_rejects_bad_group_ids():
  tokens = jnp.zeros((4, 2))
  with pytest.raises(ValueError, match="group_ids shape"):
    shuffle_within_groups(jax.random.key(0), tokens, jnp.zeros(3, jnp.int32))
  with pytest.raises(ValueError, match="integers"):
    shuffle_within_groups(jax.random.key(0), tokens, jnp.zeros(4, jnp.float32))
