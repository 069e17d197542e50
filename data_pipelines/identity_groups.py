"""The order of the training clips over epochs: a global shuffle (`ShuffledRecords`), or identity-aware
batch composition (`IdentityGroupedRecords`; paper 3.2, identity-consistent prompt shuffling).

The identity shuffle swaps identity prompts among frames of one identity "that exhibit different
facial motions". With globally shuffled batches, the frames of a contrastive group that share an
identity are almost always the frames of one clip. `IdentityGroupedRecords` orders the records so
that every run of `clips_per_identity` consecutive records belongs to one identity (different clips
of it where it has them); since a contrastive group is a run of consecutive clips of the global
batch (a multiple of `clips_per_identity`), each group holds several clips of a few identities.

Either order is a pure function of (seed, epoch), a new one every epoch, so the Grain iterator over it
stays deterministic and checkpointable (its state is a position in this sequence).
"""

from __future__ import annotations

import abc

import numpy as np

MAX_EPOCHS = 1 << 20  # the sequence is "infinite": this many epochs


class _EpochOrder(abc.ABC):
  """Random access over MAX_EPOCHS epochs of `source`: item i of epoch e is
  source[order(e)[i]], each epoch's order a pure function of (seed, e) drawn by `_draw` and
  cached (one epoch at a time)."""

  def __init__(self, source, seed: int, epoch_length: int):
    self._source, self._seed, self.epoch_length = source, seed, epoch_length
    self._cached = (None, None)

  @abc.abstractmethod
  def _draw(self, rng: np.random.Generator) -> np.ndarray:
    """The order of one epoch."""

  def __len__(self) -> int:
    return self.epoch_length * MAX_EPOCHS

  def order(self, epoch: int) -> np.ndarray:
    """Source indices of `epoch` [epoch_length]."""
    cached = self._cached  # one read: Grain's reader threads may replace it meanwhile
    if cached[0] != epoch:
      cached = (epoch, self._draw(np.random.default_rng([self._seed, epoch])))
      self._cached = cached
    return cached[1]

  def __getitem__(self, index: int):
    epoch, position = divmod(int(index), self.epoch_length)
    return self._source[int(self.order(epoch)[position])]


class ShuffledRecords(_EpochOrder):
  """Every record once per epoch, in a new random order each epoch: grain's
  `MapDataset.shuffle(seed).repeat()` without its per-element index shuffle (1.6 ms per element
  on these machines, as much as decoding a window's frames: BENCHMARKS.md (f))."""

  def __init__(self, source, seed: int):
    if not len(source):
      raise ValueError("no records")
    super().__init__(source, seed, len(source))

  def _draw(self, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(self.epoch_length)


class IdentityGroupedRecords(_EpochOrder):
  """Random access over epochs of records in runs of `clips_per_identity` clips of one identity.

  Each epoch: every identity's records in a random order, padded to a multiple of K with randomly
  repeated records of the same identity (an identity with one clip gives runs of that clip), cut
  into runs of K; the runs in a random order. Every epoch has the same length. A speaker with fewer
  than K clips repeats one in its run: another random window of the same clip.
  """

  def __init__(self, source, identities: np.ndarray, clips_per_identity: int, seed: int):
    if clips_per_identity < 1:
      raise ValueError(f"clips_per_identity must be >= 1, got {clips_per_identity}")
    identities = np.asarray(identities)
    if len(identities) != len(source) or not len(source):
      raise ValueError(f"{len(identities)} identities for {len(source)} records")
    self._k = clips_per_identity
    self._members = [np.flatnonzero(identities == i) for i in np.unique(identities)]
    super().__init__(source, seed, sum(-(-len(m) // self._k) * self._k for m in self._members))

  def _draw(self, rng: np.random.Generator) -> np.ndarray:
    runs = []
    for members in self._members:
      shuffled = rng.permutation(members)
      pad = -len(shuffled) % self._k
      shuffled = np.concatenate([shuffled, rng.choice(members, pad)])
      runs.extend(shuffled.reshape(-1, self._k))
    runs = np.stack(runs)
    return runs[rng.permutation(len(runs))].reshape(-1)
