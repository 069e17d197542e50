"""Polyphase resampling of a stream, block by block, equal to one `scipy.signal.resample_poly`
call on the whole signal (its default Kaiser-windowed filter, zero padding at both ends).

A long file's audio is resampled as it is decoded, so a worker holds the 16 kHz output and a few
seconds of source samples instead of the whole track at the source rate (an hour at 48 kHz is
~0.7 GB as float32, more while resample_poly runs on it).

Output sample j lies at source position j * down / up and depends on the source samples within
`half_len / up` of it (resample_poly's filter: half_len = 10 * max(up, down) taps at the up-sampled
rate). A block is resampled from a slice that starts at a multiple of `down` (so the slice's
output phase is the whole signal's) with that much context on each side; only the outputs whose
whole support lies in the slice (or reaches the true start or end of the signal) are emitted.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal


class StreamingResampler:
  """`push(samples)` -> the output samples that are final; `finish()` -> the rest.

  The concatenation of every returned array equals `signal.resample_poly(x, up, down)` of the
  concatenation x of every pushed array (same dtype rules: float32 in, float32 out).
  """

  def __init__(self, rate_in: int, rate_out: int, block: int | None = None):
    if rate_in < 1 or rate_out < 1:
      raise ValueError(f"rates must be >= 1, got {rate_in} -> {rate_out}")
    g = math.gcd(rate_in, rate_out)
    self.up, self.down = rate_out // g, rate_in // g
    self.context = math.ceil(10 * max(self.up, self.down) / self.up) + 1  # source samples
    self.block = block or 4 * rate_in  # source samples resampled per call
    self.pending: list[np.ndarray] = []
    self.pending_len = 0
    self.start = 0  # source index of the first pending sample (a multiple of `down`)
    self.received = 0  # source samples pushed so far
    self.emitted = 0  # output samples returned so far

  def push(self, samples: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples, np.float32)
    self.pending.append(samples)
    self.pending_len += len(samples)
    self.received += len(samples)
    if self.pending_len < self.block + 2 * self.context:
      return np.zeros(0, np.float32)
    # Outputs whose support ends before the last pending sample are final.
    last = (self.received - 1 - self.context) * self.up // self.down
    return self._emit(last + 1, final=False)

  def finish(self) -> np.ndarray:
    """The remaining outputs: resample_poly's output has ceil(N * up / down) samples."""
    total = -(-self.received * self.up // self.down)
    return self._emit(total, final=True)

  def _emit(self, stop: int, *, final: bool) -> np.ndarray:
    if self.up == self.down == 1:
      out = np.concatenate(self.pending) if self.pending else np.zeros(0, np.float32)
      self.pending, self.pending_len, self.emitted = [], 0, self.emitted + len(out)
      return out
    x = np.concatenate(self.pending) if self.pending else np.zeros(0, np.float32)
    if stop <= self.emitted or not len(x):
      return np.zeros(0, np.float32)
    y = signal.resample_poly(x, self.up, self.down).astype(np.float32)
    first_out = self.start * self.up // self.down  # output index of y[0]
    out = y[self.emitted - first_out:stop - first_out]
    self.emitted = stop
    if not final:
      # Keep the source samples the next outputs need: from a multiple of `down` at least
      # `context` before the next output's position.
      keep_from = max(0, (self.emitted * self.down // self.up - self.context) // self.down * self.down)
      keep_from = max(keep_from, self.start)
      x = x[keep_from - self.start:]
      self.start = keep_from
      self.pending, self.pending_len = [x], len(x)
    else:
      self.pending, self.pending_len = [], 0
    return out
