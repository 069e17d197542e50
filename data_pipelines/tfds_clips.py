"""Clips of a `talking_faces` TFDS dataset (data_pipelines/tfds_builder) read through
`tfds.data_source` for the Grain pipelines (`data.source="tfds"`).

A TFDS example is a whole clip, so every access reads and parses the whole example: the training
pipeline's windows cost what the one-record-per-clip layout cost (BENCHMARKS.md (f)), where the
shards that `synclipmae-prepare` writes (clip_records.py) read only a window's records.

What the pipelines need before reading a clip (its number of frames and speaker, per clip) is the
dataset's metadata (`DatasetInfo.metadata`, metadata.json beside dataset_info.json): the builder
records it per split while it generates the examples (`split_metadata`), so opening a split reads
dataset_info.json and metadata.json and no example, where a scan of the examples read the whole
split on every host (20 ms of CPU and 4.8 MB per 8 s clip at 224 px: docs/data.md). The examples of
a split are stored in the order of their keys (the clip ids: the builder sets `disable_shuffling`,
and TFDS writes such a split sorted by key), which is the order of `split_metadata`'s lists, so
list position i is `tfds.data_source` index i; reading example i checks it against the metadata.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

import numpy as np

from data_pipelines import clip_records, schema

_TEXT = ("split", "image_format", "transcript")

# info.metadata[METADATA][split] = {"clip_ids": [...], "num_frames": [...], "identity_ids": [...]},
# one entry per example in the split's order (the order of its keys, the clip ids).
METADATA = "clips"
METADATA_FIELDS = ("clip_ids", "num_frames", "identity_ids")
# The first builder version that writes METADATA (talking_faces_dataset_builder.Builder.VERSION).
METADATA_VERSION = "1.1.0"


def summary(example: dict) -> list[int]:
  """[clip id, number of frames, identity id] of an example as the builder yields it or as
  `tfds.data_source` returns it (the number of frames is the number of face boxes, one per
  frame, as `TfdsClipSource` counts them when it parses a clip)."""
  return [int(example["clip_id"]), len(example["face_boxes"]), int(example["identity_id"])]


def split_metadata(summaries: Iterable[list[int]]) -> dict[str, list[int]]:
  """One split's METADATA entry from its examples' `summary`s (in any order): sorted by clip id,
  the order in which TFDS stores a split written with `disable_shuffling` (keys = clip ids).
  Raises ValueError for a clip id given twice (TFDS would refuse or drop the duplicate)."""
  rows = sorted(tuple(s) for s in summaries)
  ids = [r[0] for r in rows]
  if len(set(ids)) != len(ids):
    twice = sorted(i for i, n in collections.Counter(ids).items() if n > 1)
    raise ValueError(f"clip ids given more than once: {twice}")
  return {field: [r[k] for r in rows] for k, field in enumerate(METADATA_FIELDS)}


class TfdsClipSource(clip_records.ClipAccess):
  """The clips of a split of a TFDS `talking_faces` dataset (`name` with its config, e.g.
  "talking_faces/48px", in `data_dir`; `split` as `tfds.data_source` takes it, e.g. "train",
  "train[:10%]" or "train+validation").

  Opening it reads the dataset's metadata and no example. A dataset without the metadata (built
  before version METADATA_VERSION) is refused, with the command that regenerates it, rather than
  scanned: a fallback scan would bring back, silently, on every host of a pod, the reading of the
  whole dataset that the metadata removes, and the run would only show it as a slow start."""

  def __init__(self, name: str, split: str, data_dir: str):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    self.name, self.split, self.data_dir = name, split, data_dir
    builder = tfds.builder(name, data_dir=data_dir)
    info = builder.info
    clips = (info.metadata or {}).get(METADATA)
    if not clips:
      config = name.split("/")[1].split(":")[0] if "/" in name else "CONFIG"
      raise ValueError(
          f"{builder.data_dir} has no clip metadata ({METADATA!r} in metadata.json): the dataset "
          f"was not generated, or was generated before talking_faces {METADATA_VERSION}. "
          "Regenerate it (docs/data.md, 'Many machines with Apache Beam'): "
          "python -m tensorflow_datasets.scripts.cli.main build "
          f"data_pipelines/tfds_builder/talking_faces --config={config} --manual_dir=VIDEOS "
          f"--data_dir={data_dir} --file_format=array_record")
    parts = []
    for instruction in tfds.core.ReadInstruction.from_spec(split).to_absolute(info.splits):
      entry = clips.get(instruction.splitname)
      count = info.splits[instruction.splitname].num_examples
      if entry is None or any(len(entry[f]) != count for f in METADATA_FIELDS):
        raise ValueError(f"{builder.data_dir}: metadata.json's {METADATA!r} does not describe the "
                         f"{count} examples of split {instruction.splitname!r}")
      parts.append({f: entry[f][instruction.from_:instruction.to] for f in METADATA_FIELDS})
    self.clip_ids, self.num_frames, self.identity_ids = (
        np.concatenate([np.asarray(p[f], np.int64) for p in parts]) for f in METADATA_FIELDS)
    self._examples = builder.as_data_source(split=split)
    if len(self._examples) != len(self.num_frames):
      raise ValueError(f"{builder.data_dir}: split {split!r} holds {len(self._examples)} examples, "
                       f"its metadata {len(self.num_frames)}")
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
    if summary(e) != [self.clip_ids[i], self.num_frames[i], self.identity_ids[i]]:
      raise ValueError(
          f"{self.name} {self.split!r}: example {i} is clip {e['clip_id']} ({e['num_frames']} "
          f"frames, identity {e['identity_id']}), its metadata says clip {self.clip_ids[i]} "
          f"({self.num_frames[i]} frames, identity {self.identity_ids[i]}): the split is not in "
          "the order of its clip ids (built with --nondeterministic_order?); regenerate it")
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
