"""The inputs of the dubbing model (paper 4.4) cut from prepared clips: a whole clip as
`grain_pipeline.load_eval_clips` returns it (`training_sample`), or only what a sample needs, read
from the shards (`shard_sample`: what the fine-tune streams).

A sample is TARGET_FRAMES = 17 consecutive frames to generate (1 + 4k, the Wan VAE's unit), the
lower-face mask of each (`lower_face_mask`: 1 = generate, 0 = keep the source), the speech of
those frames, an identity reference image (another frame of the same clip, outside the target
and its continuity frame) and the continuity reference (the frame just before the target, the
last frame of the previous segment at inference), dropped with probability CONTINUITY_DROP in
training so that the first segment of a video, which has none, is a case the model has seen.
"""

from __future__ import annotations

import numpy as np

from data_pipelines import audio_windows, clip_records, schema

TARGET_FRAMES = 17
CONTINUITY_DROP = 0.1
CHIN_EXTENSION = 0.15  # how far below the face box the mask reaches, in face-box heights


def lower_face_mask(face_boxes: np.ndarray, mouth_boxes: np.ndarray, height: int, width: int,
                    chin_extension: float = CHIN_EXTENSION) -> np.ndarray:
  """float32 [F, height, width], 1 = generate: per frame, the face box's width from its vertical
  centre (or the mouth box's top, if higher) down to `chin_extension` face heights below the box
  (the chin and the jaw's motion), clipped to the frame. Boxes are [F, 4] (x0, y0, x1, y1) in
  [0, 1] of the frame, the records' convention."""
  face, mouth = np.asarray(face_boxes, np.float64), np.asarray(mouth_boxes, np.float64)
  if face.ndim != 2 or face.shape[1] != 4 or mouth.shape != face.shape:
    raise ValueError(f"face_boxes {face.shape} and mouth_boxes {mouth.shape} must both be [F, 4]")
  top = np.minimum((face[:, 1] + face[:, 3]) / 2, mouth[:, 1])
  bottom = face[:, 3] + chin_extension * (face[:, 3] - face[:, 1])
  ys = (np.arange(height) + 0.5) / height  # pixel centres
  xs = (np.arange(width) + 0.5) / width
  rows = (ys[None, :] >= top[:, None]) & (ys[None, :] <= bottom[:, None])  # [F, H]
  cols = (xs[None, :] >= face[:, 0, None]) & (xs[None, :] <= face[:, 2, None])  # [F, W]
  return (rows[:, :, None] & cols[:, None, :]).astype(np.float32)


def sample_plan(num_clip_frames: int, rng: np.random.Generator, *, num_frames: int = TARGET_FRAMES,
                drop_continuity: float = CONTINUITY_DROP, clip_id=None) -> tuple[int, int, bool]:
  """The random choices of a sample of a clip of `num_clip_frames` frames: (first target frame,
  reference frame, whether the continuity frame is kept); raises ValueError for a clip too short
  for a continuity frame, the target and a reference frame."""
  n = num_clip_frames
  if n < num_frames + 2:
    raise ValueError(f"clip {clip_id} has {n} frames: a sample needs {num_frames} "
                     "target frames, the one before them and a reference frame")
  start = int(rng.integers(1, n - num_frames + 1))
  outside = np.concatenate([np.arange(0, start - 1), np.arange(start + num_frames, n)])
  reference = int(rng.choice(outside))
  return start, reference, bool(rng.random() >= drop_continuity)


def make_sample(start: int, target: np.ndarray, face_boxes: np.ndarray, mouth_boxes: np.ndarray,
                audio: np.ndarray, reference: np.ndarray, reference_index: int,
                continuity: np.ndarray | None) -> dict:
  """A sample from its pieces: target frames uint8 [F, H, W, 3] with their boxes [F, 4] and audio
  [640 F], the reference frame and the continuity frame (or None); `start` locates the target in
  the clip (or in the part of it the caller holds)."""
  height, width = target.shape[1:3]
  return {"start": start, "target": target,
          "mask": lower_face_mask(face_boxes, mouth_boxes, height, width), "audio": audio,
          "reference": reference, "reference_index": reference_index, "continuity": continuity}


def training_sample(clip: dict, rng: np.random.Generator, *, num_frames: int = TARGET_FRAMES,
                    drop_continuity: float = CONTINUITY_DROP) -> dict:
  """One fine-tune sample of a whole prepared clip (`sample_plan`'s choices, `make_sample`).

  Returns:
    {"start": first target frame, "target": uint8 [num_frames, H, W, 3], "mask": float32
     [num_frames, H, W], "audio": float32 [640 * num_frames], "reference": uint8 [H, W, 3],
     "reference_index": its frame, "continuity": uint8 [H, W, 3] or None (dropped)}.
  """
  frames = clip["frames"]
  start, reference, keep = sample_plan(len(frames), rng, num_frames=num_frames,
                                       drop_continuity=drop_continuity, clip_id=clip.get("clip_id"))
  stop, spf = start + num_frames, schema.SAMPLES_PER_FRAME
  return make_sample(start, frames[start:stop], clip["face_boxes"][start:stop],
                     clip["mouth_boxes"][start:stop], clip["audio"][spf * start:spf * stop],
                     frames[reference], reference, frames[start - 1] if keep else None)


def shard_sample(source: clip_records.ClipSource, rng: np.random.Generator, *,
                 num_frames: int = TARGET_FRAMES, drop_continuity: float = CONTINUITY_DROP,
                 context_frames: int = 0) -> tuple[dict, dict]:
  """(the part of a random clip that a sample needs, the sample), read from prepared shards.

  The same draws from `rng` as picking `clips[rng.integers(len(clips))]` and `training_sample`,
  hence the same sample, but reading only its frames (target, reference, continuity) and the audio
  and boxes of the target with `context_frames` frames on each side (clip_records). The part is
  {"clip_id", "offset": its first frame in the clip, "audio" float32, "face_boxes",
  "mouth_boxes"}; the sample's `start` counts from the part's first frame.
  """
  i = int(rng.integers(len(source)))
  n, header = int(source.num_frames[i]), source.header(i)
  start, reference, keep = sample_plan(n, rng, num_frames=num_frames,
                                       drop_continuity=drop_continuity, clip_id=header["clip_id"])
  lo, hi = max(0, start - context_frames), min(n, start + num_frames + context_frames)
  part = {"clip_id": header["clip_id"], "offset": lo,
          "audio": source.audio(i, lo, hi).astype(np.float32) / audio_windows.INT16_SCALE,
          "face_boxes": header["face_boxes"][lo:hi], "mouth_boxes": header["mouth_boxes"][lo:hi]}

  def frames(a: int, b: int) -> np.ndarray:
    return schema.decode_frames({"frames": source.frames(i, a, b)})

  s, spf = start - lo, schema.SAMPLES_PER_FRAME
  return part, make_sample(s, frames(start, start + num_frames),
                           part["face_boxes"][s:s + num_frames], part["mouth_boxes"][s:s + num_frames],
                           part["audio"][spf * s:spf * (s + num_frames)],
                           frames(reference, reference + 1)[0], reference,
                           frames(start - 1, start)[0] if keep else None)
