"""IoU face tracking with box smoothing, inside one scene (SyncNet's face-track rule).

Detections of consecutive frames are linked when their boxes overlap (IoU above a
threshold; the best overall assignment per frame, by the Hungarian method); a track
survives up to `max_missed` frames without a detection. Each track's boxes and mouth
corners are then interpolated over the frames the detector missed and median-filtered
over time, so the crop that follows the track does not jitter.

A track whose detections come with landmarks that lack a face's geometry
(`face_detector.geometry_failure`) in more than half of the frames where it was detected with
landmarks is marked `not_face` (the preparation ignores it and reports its box): the decision is
per track, so one odd frame of a real face, or one face-like frame of a pair of hands, does not
decide it.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
from scipy import ndimage, optimize

from data_pipelines.prepare import face_detector


@dataclasses.dataclass
class Track:
  """One face followed through frames [start, start + len(boxes))."""

  start: int
  boxes: np.ndarray  # float32 [n, 4] smoothed (x0, y0, x1, y1), pixels
  mouth_corners: np.ndarray | None  # float32 [n, 2, 2] smoothed (x, y), or None
  detected: np.ndarray  # bool [n]: the detector found this face in that frame
  scores: np.ndarray  # float32 [n]: the detector's confidence (0 where it missed the face)
  not_face: str | None = None  # why its landmarks say it is not a face (None: a face, or unchecked)

  @property
  def stop(self) -> int:
    return self.start + len(self.boxes)

  @property
  def size(self) -> float:
    """Median over the detected frames of the smaller side of the face box (pixels)."""
    wh = self.boxes[self.detected, 2:] - self.boxes[self.detected, :2]
    return float(np.median(wh.min(axis=1)))

  @property
  def score(self) -> float:
    """Median over the detected frames of the detector's confidence."""
    return float(np.median(self.scores[self.detected]))


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Intersection over union of boxes a [M, 4] and b [K, 4] -> [M, K]."""
  lo = np.maximum(a[:, None, :2], b[None, :, :2])
  hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
  inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
  area_a = np.prod(a[:, 2:] - a[:, :2], axis=-1)
  area_b = np.prod(b[:, 2:] - b[:, :2], axis=-1)
  return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _fill_and_smooth(frames: np.ndarray, values: np.ndarray, start: int, stop: int,
                     smooth: int) -> np.ndarray:
  """Values [k, d] known at `frames` -> [stop - start, d] interpolated and median-filtered."""
  grid = np.arange(start, stop)
  filled = np.stack([np.interp(grid, frames, values[:, j]) for j in range(values.shape[1])], 1)
  size = min(smooth, len(grid)) | 1  # odd, at most the track length
  return ndimage.median_filter(filled, size=(size, 1), mode="nearest").astype(np.float32)


def track_faces(faces: list[list[face_detector.Face]], start: int, stop: int, *,
                iou_threshold: float = 0.5, max_missed: int = 25, smooth: int = 13
                ) -> list[Track]:
  """Face tracks of frames [start, stop) (one scene), in order of their first frame.

  Args:
    faces: the detector's faces for every frame of the file.
    start: first frame of the scene.
    stop: frame after its last.
    iou_threshold: smallest IoU linking a detection to a track.
    max_missed: frames a track may go without a detection before it ends.
    smooth: median filter length (frames) of boxes and mouth corners.
  """
  if not 0.0 < iou_threshold < 1.0:
    raise ValueError(f"iou_threshold must be in (0, 1), got {iou_threshold}")
  raw: list[dict[int, face_detector.Face]] = []  # per track: frame -> face
  last_seen: list[int] = []  # per track: its latest frame
  for f in range(start, stop):
    found = faces[f]
    live = [i for i, seen in enumerate(last_seen) if f - seen <= max_missed + 1]
    assigned = set()
    if live and found:
      overlap = iou(np.stack([raw[i][last_seen[i]].box for i in live]),
                    np.stack([face.box for face in found]))
      rows, cols = optimize.linear_sum_assignment(-overlap)
      for r, c in zip(rows, cols):
        if overlap[r, c] > iou_threshold:
          raw[live[r]][f] = found[c]
          last_seen[live[r]] = f
          assigned.add(c)
    for c, face in enumerate(found):
      if c not in assigned:
        raw.append({f: face})
        last_seen.append(f)
  tracks = []
  for t in raw:  # created in order of their first frame
    frames = np.array(sorted(t))
    first, last = int(frames[0]), int(frames[-1]) + 1
    boxes = _fill_and_smooth(frames, np.stack([t[f].box for f in frames]), first, last, smooth)
    with_marks = [f for f in frames if t[f].landmarks is not None]
    corners = None
    if with_marks:
      marks = np.stack([t[f].landmarks[3:5].reshape(4) for f in with_marks])
      corners = _fill_and_smooth(np.array(with_marks), marks, first, last, smooth).reshape(-1, 2, 2)
    detected = np.zeros(last - first, bool)
    detected[frames - first] = True
    scores = np.zeros(last - first, np.float32)
    scores[frames - first] = [t[f].score for f in frames]
    tracks.append(Track(first, boxes, corners, detected, scores,
                        _not_face([t[f] for f in with_marks])))
  return tracks


def _not_face(faces: list[face_detector.Face]) -> str | None:
  """Why detections with landmarks are not a face (most fail `geometry_failure`), or None."""
  failures = [r for r in map(face_detector.geometry_failure, faces) if r is not None]
  if 2 * len(failures) <= len(faces):
    return None
  reason, _ = collections.Counter(failures).most_common(1)[0]
  return (f"landmarks without a face's geometry in {len(failures)} of {len(faces)} detections "
          f"(most often: {reason})")
