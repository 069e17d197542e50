"""Clips of a `talking_faces` TFDS dataset (data_pipelines/tfds_builder) read through
`tfds.data_source` for the Grain pipelines (`data.source="tfds"`).

A TFDS example is a whole clip, so every access reads and parses the whole example: the training
pipeline's windows cost what the one-record-per-clip layout cost (BENCHMARKS.md (f)), where the
shards that `synclipmae-prepare` writes (clip_records.py) read only a window's records. The clips'
lengths and speakers are read once, when the source is opened.
"""

from __future__ import annotations

import numpy as np

from data_pipelines import clip_records, schema

_TEXT = ("split", "image_format", "transcript")


class TfdsClipSource(clip_records.ClipAccess):
  """The clips of one split of a TFDS `talking_faces` dataset (`name` with its config, e.g.
  "talking_faces/48px", in `data_dir`)."""

  def __init__(self, name: str, split: str, data_dir: str):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    self.name, self.split, self.data_dir = name, split, data_dir
    self._examples = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    lengths, identities = [], []
    for i in range(len(self._examples)):
      example = self._examples[i]
      lengths.append(len(example["face_boxes"]))
      identities.append(int(example["identity_id"]))
    self.num_frames = np.asarray(lengths, np.int64)
    self.identity_ids = np.asarray(identities, np.int64)
    self._last = (None, None)

  def __len__(self) -> int:
    return len(self._examples)

  def _example(self, i: int) -> dict:
    """Example i parsed (the last one kept: a window asks for its header, audio and frames)."""
    last = self._last  # one read: Grain's reader threads may replace it meanwhile
    if last[0] != i:
      last = (i, self._parse(i))
      self._last = last
    return dict(last[1])

  def _parse(self, i: int) -> dict:
    e = dict(self._examples[int(i)])
    for key in _TEXT:
      e[key] = e[key].decode() if isinstance(e[key], bytes) else str(e[key])
    for key in ("clip_id", "identity_id", "emotion"):
      e[key] = int(e[key])
    e["num_frames"] = len(e["face_boxes"])
    e["fps"], e["sample_rate"] = schema.FPS, schema.SAMPLE_RATE
    e["actions"] = e["actions"] if e["actions"].size else None
    return e

  def header(self, i: int) -> dict:
    e = self._example(i)
    del e["frames"], e["audio"]
    return e

  def frames(self, i: int, start: int, stop: int) -> list[bytes]:
    return [bytes(f) for f in self._example(i)["frames"][start:stop]]

  def audio(self, i: int, start: int, stop: int) -> np.ndarray:
    e = self._example(i)
    clip_records.check_audio_span(e["num_frames"], i, start, stop)
    return np.asarray(e["audio"], np.int16)[schema.SAMPLES_PER_FRAME * start:
                                           schema.SAMPLES_PER_FRAME * stop]
