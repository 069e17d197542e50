"""The one clip schema shared by every data source (synthetic and real video).

A clip's fields (`clip_records.py` lays them out in ArrayRecord shards: a msgpack header with the
small fields, one record per frame, the audio in chunks):

| key            | type                     | meaning                                              |
|----------------|--------------------------|------------------------------------------------------|
| clip_id        | int                      | unique id of the clip inside its dataset             |
| identity_id    | int                      | speaker id; frames sharing it may swap identity prompts (paper 3.2) |
| split          | str                      | "train", "validation" or "test"                      |
| fps            | int                      | always 25                                            |
| sample_rate    | int                      | always 16000                                         |
| image_format   | str                      | "png" or "jpeg" (what each entry of `frames` holds)  |
| frames         | list[bytes]              | N encoded RGB frames, all H x W                      |
| audio          | bytes                    | mono int16 little-endian, exactly 640 * N samples;   |
|                |                          | frame t covers samples [640 t, 640 (t + 1))          |
| face_boxes     | bytes (float32 [N, 4])   | face box per frame, (x0, y0, x1, y1) in [0, 1]       |
| mouth_boxes    | bytes (float32 [N, 4])   | mouth box per frame, same convention; the face-      |
|                |                          | preserving mask weights derive from these two boxes  |
| transcript     | str                      | words spoken, "" when unknown                        |
| emotion        | int                      | emotion class, -1 when unknown                       |
| actions        | bytes (uint8 [N, A])     | per-frame action flags, may be empty (A = 0)         |

Emotion indices and action columns name the dataset's vocabularies (`labels.py`, its
labels.json): the synthetic renderer's EMOTION_NAMES and ACTION_NAMES unless a prepared
dataset says otherwise.

Boxes are normalised by frame width (x) and height (y). A clip with N frames always has
640 * N audio samples: the writer cuts or pads the audio, never the reader.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image

FPS = 25
SAMPLE_RATE = 16_000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
EMOTION_NAMES = ("neutral", "happy", "sad", "angry", "surprised")
ACTION_NAMES = ("blink", "head_turn", "smile")
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class Clip:
  """A decoded clip: what a record holds, as numpy arrays."""

  clip_id: int
  identity_id: int
  split: str
  frames: np.ndarray  # uint8 [N, H, W, 3]
  audio: np.ndarray  # int16 [640 N]
  face_boxes: np.ndarray  # float32 [N, 4]
  mouth_boxes: np.ndarray  # float32 [N, 4]
  transcript: str = ""
  emotion: int = -1
  actions: np.ndarray | None = None  # uint8 [N, A] (A actions of the dataset's labels) or None

  def __post_init__(self):
    n = len(self.frames)
    if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
      raise ValueError(f"frames must be uint8 [N, H, W, 3], got {self.frames.dtype} {self.frames.shape}")
    if self.audio.dtype != np.int16 or self.audio.shape != (SAMPLES_PER_FRAME * n,):
      raise ValueError(
          f"audio must be int16 [{SAMPLES_PER_FRAME} * {n}], got {self.audio.dtype} {self.audio.shape}")
    for name in ("face_boxes", "mouth_boxes"):
      boxes = getattr(self, name)
      if boxes.shape != (n, 4):
        raise ValueError(f"{name} must be [{n}, 4], got {boxes.shape}")
    if self.split not in SPLITS:
      raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
    if self.actions is not None and (self.actions.ndim != 2 or self.actions.shape[0] != n):
      raise ValueError(f"actions must be [{n}, A] (one flag per action), got {self.actions.shape}")

  @property
  def num_frames(self) -> int:
    return len(self.frames)

  @property
  def stored_actions(self) -> np.ndarray:
    """The actions as stored: uint8 [N, A], [N, 0] for a clip without action labels."""
    if self.actions is None:
      return np.zeros((self.num_frames, 0), np.uint8)
    return np.ascontiguousarray(self.actions, np.uint8)


def encode_image(image: np.ndarray, image_format: str) -> bytes:
  buf = io.BytesIO()
  if image_format == "png":
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
  elif image_format == "jpeg":
    Image.fromarray(image).save(buf, format="JPEG", quality=95)
  else:
    raise ValueError(f"unknown image_format {image_format!r}")
  return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as im:
    return np.asarray(im.convert("RGB"))


def decode_frames(parsed: dict, start: int = 0, stop: int | None = None) -> np.ndarray:
  """Decodes frames [start, stop) of a clip's encoded `frames` (`clip_records.ClipSource`) to
  uint8 [n, H, W, 3]."""
  return np.stack([decode_image(b) for b in parsed["frames"][start:stop]])
