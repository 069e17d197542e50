"""How clips are laid out in ArrayRecord shards, so that a training window reads and decodes only
its own frames and audio (layout 2).

A clip is a run of consecutive records of its shard:

| record             | content                                                              |
|--------------------|----------------------------------------------------------------------|
| header             | msgpack map: the schema's fields except `frames` and `audio` (boxes  |
|                    | and actions as bytes, as schema.py lists them), plus `layout` (2)    |
|                    | and `num_frames` N                                                   |
| N frame records    | one encoded image each (`image_format`: PNG or JPEG bytes)           |
| ceil(N / K) audio  | int16 little-endian samples of K frames each (640 K; the last one    |
| records            | shorter): the clip's 640 N samples in order; K = AUDIO_CHUNK_FRAMES  |
|                    | (25) is part of the layout (another K would be another layout)       |

and the shard's last record is its index: a msgpack map `{"layout": 2, "clips": [[header
position, N, identity_id], ...]}`. A reader opens every shard's index once (`ClipSource`), so the
number of clips, their lengths and their speakers are known without reading a clip; a window of T
frames with C frames of audio context then reads its header, T frame records and the audio
records covering [start - C, stop + C) (`ClipSource.window`): about 0.2 ms for 8 frames of a
10 s clip where one record per clip cost 3 ms to read and unpack (BENCHMARKS.md (f)).

Shards written before layout 2 (one msgpack record per clip) are refused with a message naming
the converter (`python -m data_pipelines.convert_shards`).
"""

from __future__ import annotations

import abc

import grain
import msgpack
import numpy as np
from array_record.python import array_record_module

from data_pipelines import audio_windows, schema

LAYOUT = 2
AUDIO_CHUNK_FRAMES = 25  # frames of audio per audio record (1 s, 32 000 bytes) in LAYOUT 2


def header_fields(clip: schema.Clip, image_format: str) -> dict:
  """The stored fields of a clip's header (without the layout's own: `encoded_records` adds them)."""
  return {
      "clip_id": int(clip.clip_id),
      "identity_id": int(clip.identity_id),
      "split": clip.split,
      "fps": schema.FPS,
      "sample_rate": schema.SAMPLE_RATE,
      "image_format": image_format,
      "face_boxes": clip.face_boxes.astype("<f4").tobytes(),
      "mouth_boxes": clip.mouth_boxes.astype("<f4").tobytes(),
      "transcript": clip.transcript,
      "emotion": int(clip.emotion),
      "actions": clip.stored_actions.tobytes(),
  }


def encoded_records(fields: dict, frames: list[bytes], audio: bytes) -> list[bytes]:
  """A clip's records from its header fields, encoded frames and int16 little-endian audio."""
  n = len(frames)
  if len(audio) != 2 * schema.SAMPLES_PER_FRAME * n:
    raise ValueError(f"clip {fields.get('clip_id')}: {len(audio) // 2} audio samples for {n} frames")
  header = msgpack.packb({**fields, "layout": LAYOUT, "num_frames": n}, use_bin_type=True)
  chunk = 2 * schema.SAMPLES_PER_FRAME * AUDIO_CHUNK_FRAMES
  return [header] + list(frames) + [audio[k:k + chunk] for k in range(0, len(audio), chunk)]


class ShardWriter:
  """Writes clips into one ArrayRecord file in this layout; `close` adds the index.

  Records are grouped one per chunk ("group_size:1"): what random access needs.
  """

  def __init__(self, path: str):
    self._writer = array_record_module.ArrayRecordWriter(path, "group_size:1")
    self._position = 0
    self._index = []

  def write(self, clip: schema.Clip, image_format: str = "png") -> None:
    self.write_encoded(header_fields(clip, image_format),
                       [schema.encode_image(f, image_format) for f in clip.frames],
                       clip.audio.astype("<i2").tobytes())

  def write_encoded(self, fields: dict, frames: list[bytes], audio: bytes) -> None:
    """Writes a clip given as `encoded_records`' inputs (frames kept byte for byte)."""
    records = encoded_records(fields, frames, audio)
    self._index.append([self._position, len(frames), int(fields["identity_id"])])
    for record in records:
      self._writer.write(record)
    self._position += len(records)

  @property
  def num_clips(self) -> int:
    return len(self._index)

  def close(self) -> None:
    self._writer.write(msgpack.packb({"layout": LAYOUT, "clips": self._index}, use_bin_type=True))
    self._writer.close()


def read_index(path: str) -> tuple[list[list[int]], int]:
  """(a shard's index: [header position, num_frames, identity_id] per clip, its number of
  records); raises ValueError for a shard of another layout."""
  reader = array_record_module.ArrayRecordReader(path)
  try:
    count = reader.num_records()
    last = reader.read([count - 1])[0] if count else b""
  finally:
    reader.close()
  try:
    index = msgpack.unpackb(last, raw=False) if last else None
  except (ValueError, msgpack.exceptions.ExtraData):
    index = None
  if not isinstance(index, dict) or index.get("layout") != LAYOUT or "clips" not in index:
    raise ValueError(
        f"{path} is not a shard of clip layout {LAYOUT} (no index as its last record): shards "
        "written before layout 2 hold one record per clip; convert them with `python -m "
        "data_pipelines.convert_shards --input 'OLD/*.array_record' --output NEW/`")
  return index["clips"], count


class ClipAccess(abc.ABC):
  """What the pipelines read clips through (`grain_pipeline`): `len`, `num_frames` and
  `identity_ids` per clip ([C] arrays), a clip's header fields, its encoded frames and its audio;
  `clip` and `window` are built from those. `ClipSource` reads this layout's shards; a TFDS dataset
  is read through `tfds_clips.TfdsClipSource`."""

  num_frames: np.ndarray
  identity_ids: np.ndarray

  @abc.abstractmethod
  def __len__(self) -> int:
    """The number of clips."""

  @abc.abstractmethod
  def header(self, i: int) -> dict:
    """Clip i's fields without frames and audio (boxes [N, 4], actions [N, A] or None)."""

  @abc.abstractmethod
  def frames(self, i: int, start: int, stop: int) -> list[bytes]:
    """The encoded frames [start, stop) of clip i."""

  @abc.abstractmethod
  def audio(self, i: int, start: int, stop: int) -> np.ndarray:
    """int16 samples of frames [start, stop) of clip i (within the clip)."""

  def clip(self, i: int) -> dict:
    """Clip i as the header's fields plus every encoded frame and the whole int16 audio."""
    r = self.header(i)
    n = r["num_frames"]
    r["frames"] = self.frames(i, 0, n)
    r["audio"] = self.audio(i, 0, n)
    return r

  def window(self, i: int, start: int, stop: int, context_frames: int) -> dict:
    """Frames [start, stop) of clip i: its header's fields with boxes cut to the window, the
    window's encoded frames, and `audio_windows.audio_window`'s float32 audio of frames
    [start - C, stop + C) (silence beyond the clip), reading nothing else of the clip."""
    r = self.header(i)
    n = r["num_frames"]
    lo, hi = max(0, start - context_frames), min(n, stop + context_frames)
    r["audio"] = audio_windows.audio_window(self.audio(i, lo, hi), start - lo, stop - lo,
                                            context_frames)
    r["frames"] = self.frames(i, start, stop)
    r["face_boxes"], r["mouth_boxes"] = r["face_boxes"][start:stop], r["mouth_boxes"][start:stop]
    return r


def check_audio_span(num_frames: int, i: int, start: int, stop: int) -> None:
  """Raises ValueError unless [start, stop) lies within clip i's `num_frames` frames."""
  if not 0 <= start <= stop <= num_frames:
    raise ValueError(f"audio frames [{start}, {stop}) are outside clip {i}'s {num_frames} frames")


class ClipSource(ClipAccess):
  """The clips of shards in this layout, by clip index (shards in the order given).

  Picklable (grain's worker processes rebuild the readers). `identity_ids` and `num_frames` come
  from the shards' indexes, so nothing else is read until a clip or a window is asked for.
  """

  def __init__(self, paths: list[str]):
    if not paths:
      raise ValueError("paths is empty")
    self.paths = list(paths)
    self._records = grain.sources.ArrayRecordDataSource(self.paths)
    positions, frames, identities = [], [], []
    offset = 0
    for path in self.paths:
      index, count = read_index(path)
      for position, num_frames, identity_id in index:
        positions.append(offset + position)
        frames.append(num_frames)
        identities.append(identity_id)
      offset += count
    self.positions = np.asarray(positions, np.int64)
    self.num_frames = np.asarray(frames, np.int64)
    self.identity_ids = np.asarray(identities, np.int64)

  def __len__(self) -> int:
    return len(self.positions)

  def header(self, i: int) -> dict:
    r = msgpack.unpackb(self._records[int(self.positions[i])], raw=False)
    n = r["num_frames"]
    if r.get("fps") != schema.FPS or r.get("sample_rate") != schema.SAMPLE_RATE:
      raise ValueError(f"clip {r.get('clip_id')} has fps={r.get('fps')} sample_rate="
                       f"{r.get('sample_rate')}; expected {schema.FPS} and {schema.SAMPLE_RATE}")
    r["face_boxes"] = np.frombuffer(r["face_boxes"], "<f4").reshape(n, 4)
    r["mouth_boxes"] = np.frombuffer(r["mouth_boxes"], "<f4").reshape(n, 4)
    a = np.frombuffer(r["actions"], np.uint8)
    r["actions"] = a.reshape(n, -1) if a.size else None
    return r

  def frames(self, i: int, start: int, stop: int) -> list[bytes]:
    first = int(self.positions[i]) + 1
    return [self._records[first + f] for f in range(start, stop)]

  def audio(self, i: int, start: int, stop: int) -> np.ndarray:
    """int16 samples of frames [start, stop) of clip i, reading only the audio records that hold
    them."""
    n = int(self.num_frames[i])
    check_audio_span(n, i, start, stop)
    if start == stop:
      return np.zeros(0, np.int16)
    first = int(self.positions[i]) + 1 + n
    lo, hi = start // AUDIO_CHUNK_FRAMES, (stop - 1) // AUDIO_CHUNK_FRAMES + 1
    samples = np.frombuffer(b"".join(self._records[first + k] for k in range(lo, hi)), "<i2")
    skip = schema.SAMPLES_PER_FRAME * (start - lo * AUDIO_CHUNK_FRAMES)
    return samples[skip:skip + schema.SAMPLES_PER_FRAME * (stop - start)]
