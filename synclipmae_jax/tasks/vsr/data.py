"""Utterances of lip reading (paper 4.3): a labelled clip's per-frame vocal-motion tokens from
the frozen encoder and its transcript as units, and their fixed-shape padding (the training
batches and the evaluator's decoding share it)."""

from __future__ import annotations

import numpy as np

from synclipmae_jax import frame_features
from synclipmae_jax.models import synclipmae
from synclipmae_jax.tasks.vsr import text_units


def utterances(encoder, clips: list[dict], units: text_units.Units, *, max_units: int,
               max_frames: int, frames_per_call: int) -> list[dict]:
  """Per clip with a transcript: its vocal-motion tokens `features` [N, D] (every frame through
  the frozen encoder `encoder`, a `checkpointing.Restored`), unit ids, transcript and clip id.
  A clip over max_units units or max_frames frames, or with fewer frames than CTC needs for its
  units, is a ValueError naming it."""
  clips = [c for c in clips if c["transcript"].strip()]
  fn = frame_features.frame_features_fn(synclipmae.build(encoder.config.model))
  parts = frame_features.extract(fn, encoder.params, clips, frames_per_call)
  vocal = frame_features.PARTS.index("vocal")
  out = []
  for clip, p in zip(clips, parts):
    ids = units.encode(clip["transcript"])
    if len(ids) > max_units or len(p) > max_frames:
      raise ValueError(f"clip {clip['clip_id']}: {len(ids)} units and {len(p)} frames exceed "
                       f"data.max_units={max_units} or data.max_frames={max_frames}")
    needed = len(ids) + sum(a == b for a, b in zip(ids, ids[1:]))  # a blank between repeats
    if needed > len(p):
      raise ValueError(f"clip {clip['clip_id']}: {len(ids)} units need {needed} frames for a CTC "
                       f"alignment, it has {len(p)}: use longer clips, or a larger units.vocab_size "
                       f"(longer pieces, fewer units per word)")
    out.append({"features": p[:, vocal], "units": ids, "transcript": clip["transcript"].strip(),
                "clip_id": clip["clip_id"]})
  return out


def pad(u: dict, max_frames: int, max_units: int) -> dict:
  """One utterance as fixed-shape arrays: features [T, D], frame_mask [T], units [L] (BLANK
  after the last), unit_mask [L]."""
  n, k = len(u["features"]), len(u["units"])
  features = np.zeros((max_frames, u["features"].shape[1]), np.float32)
  features[:n] = u["features"]
  units = np.full(max_units, text_units.BLANK, np.int32)
  units[:k] = u["units"]
  return {"features": features, "frame_mask": np.arange(max_frames) < n,
          "units": units, "unit_mask": np.arange(max_units) < k}
