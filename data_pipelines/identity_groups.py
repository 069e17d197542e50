"""Identity-aware batch composition (paper 3.2, identity-consistent prompt shuffling).

The identity shuffle swaps identity prompts among frames of one identity "that exhibit different
facial motions". With globally shuffled batches, the frames of a contrastive group that share an
identity are almost always the frames of one clip. `IdentityGroupedRecords` orders the records so
that every run of `clips_per_identity` consecutive records belongs to one identity (different clips
of it where it has them); since a contrastive group is a run of consecutive clips of the global
batch (a multiple of `clips_per_identity`), each group holds several clips of a few identities.

The order is a pure function of (seed, epoch), a new one every epoch, so the Grain iterator over it
stays deterministic and checkpointable (its state is a position in this sequence).
"""

from __future__ import annotations

import numpy as np

MAX_EPOCHS = 1 << 20  # the sequence is "infinite": this many epochs


class IdentityGroupedRecords:
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
    self._source, self._k, self._seed = source, clips_per_identity, seed
    self._members = [np.flatnonzero(identities == i) for i in np.unique(identities)]
    self.epoch_length = sum(-(-len(m) // self._k) * self._k for m in self._members)
    self._cached = (None, None)

  def __len__(self) -> int:
    return self.epoch_length * MAX_EPOCHS

  def order(self, epoch: int) -> np.ndarray:
    """Record indices of `epoch` [epoch_length], in runs of K of one identity."""
    cached = self._cached  # one read: Grain's reader threads may replace it meanwhile
    if cached[0] != epoch:
      rng = np.random.default_rng([self._seed, epoch])
      runs = []
      for members in self._members:
        shuffled = rng.permutation(members)
        pad = -len(shuffled) % self._k
        shuffled = np.concatenate([shuffled, rng.choice(members, pad)])
        runs.extend(shuffled.reshape(-1, self._k))
      runs = np.stack(runs)
      cached = (epoch, runs[rng.permutation(len(runs))].reshape(-1))
      self._cached = cached
    return cached[1]

  def __getitem__(self, index: int):
    epoch, position = divmod(int(index), self.epoch_length)
    return self._source[int(self.order(epoch)[position])]
