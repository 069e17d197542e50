"""The inputs of the dubbing model (paper 4.4) cut from prepared clips (`data_pipelines`' records,
as `grain_pipeline.load_eval_clips` returns them).

A sample is TARGET_FRAMES = 17 consecutive frames to generate (1 + 4k, the Wan VAE's unit), the
lower-face mask of each (`lower_face_mask`: 1 = generate, 0 = keep the source), the speech of
those frames, an identity reference image (another frame of the same clip, outside the target
and its continuity frame) and the continuity reference (the frame just before the target, the
last frame of the previous segment at inference), dropped with probability CONTINUITY_DROP in
training so that the first segment of a video, which has none, is a case the model has seen.
"""

from __future__ import annotations

import numpy as np

from data_pipelines import schema

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


def training_sample(clip: dict, rng: np.random.Generator, *, num_frames: int = TARGET_FRAMES,
                    drop_continuity: float = CONTINUITY_DROP) -> dict:
  """One fine-tune sample of a prepared clip.

  Returns:
    {"start": first target frame, "target": uint8 [num_frames, H, W, 3], "mask": float32
     [num_frames, H, W], "audio": float32 [640 * num_frames], "reference": uint8 [H, W, 3],
     "reference_index": its frame, "continuity": uint8 [H, W, 3] or None (dropped)}.

  Raises:
    ValueError: a clip too short for a continuity frame, the target and a reference frame.
  """
  frames = clip["frames"]
  n, height, width = frames.shape[:3]
  if n < num_frames + 2:
    raise ValueError(f"clip {clip.get('clip_id')} has {n} frames: a sample needs {num_frames} "
                     "target frames, the one before them and a reference frame")
  start = int(rng.integers(1, n - num_frames + 1))
  stop = start + num_frames
  outside = np.concatenate([np.arange(0, start - 1), np.arange(stop, n)])
  reference = int(rng.choice(outside))
  spf = schema.SAMPLES_PER_FRAME
  return {
      "start": start, "target": frames[start:stop],
      "mask": lower_face_mask(clip["face_boxes"][start:stop], clip["mouth_boxes"][start:stop],
                              height, width),
      "audio": clip["audio"][spf * start:spf * stop],
      "reference": frames[reference], "reference_index": reference,
      "continuity": None if rng.random() < drop_continuity else frames[start - 1],
  }
