"""Face detection behind a small interface, and the shipped detector (MTCNN).

A detector takes a batch of RGB frames and returns, per frame, the faces it finds: a box,
a confidence and optionally five landmarks (the eyes, the nose tip and the two mouth
corners). Any object with a `detect(images)` method of that shape plugs in
(`load_detector("my_package.my_module:MyDetector", weights="/my/weights.onnx")`), so users
can run their own detector with their own weight files.

The shipped detector is MTCNN (Zhang et al. 2016) from the `mtcnn` package (MIT licence),
whose wheel carries its three small networks (2 MB) and runs them on the TensorFlow
already installed for this project: no download at run time. It gives the five landmarks,
so mouth boxes come from the mouth corners.

The landmarks also say whether a detection has a face's geometry (`geometry_failure`): MTCNN
finds clasped hands, knees or folds of cloth as confident, face-sized "faces" whose five points
are not laid out as eyes, nose and mouth are. The preparation's tracking (`tracking.py`) drops
a track whose landmarks fail these checks in most of its frames and reports it as not a face.
A detector that gives no landmarks (`WholeFrameDetector`, a plugged one) is not checked: its
boxes are taken as faces.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np

# Landmark rows, in image coordinates (left = smaller x).
LANDMARK_NAMES = ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right")


@dataclasses.dataclass(frozen=True)
class Face:
  """One detected face, in pixels of the image it was found in."""

  box: np.ndarray  # float32 [4]: (x0, y0, x1, y1)
  score: float
  landmarks: np.ndarray | None = None  # float32 [5, 2] (x, y), LANDMARK_NAMES order

  def scaled(self, factor: float) -> Face:
    """The same face in an image `factor` times larger."""
    return Face(self.box * factor, self.score,
                None if self.landmarks is None else self.landmarks * factor)


# A face's geometry, in fractions of its box (checked by `geometry_failure`). Measured on MTCNN's
# landmarks of the frontal HDTF fixture faces (eye distance 0.40-0.50 of the box width, eyes to
# mouth 0.34-0.40 of its height, every point inside the box) and widened for head turns (the eye
# distance shrinks with yaw, the eyes-to-mouth height with pitch) and for other detectors' boxes.
LANDMARK_BOX_SLACK = 0.1  # points may lie this fraction of the box side outside it
EYE_DISTANCE = (0.15, 0.75)  # eye distance / box width
EYES_TO_MOUTH = (0.15, 0.7)  # (mean mouth-corner y - mean eye y) / box height
MOUTH_TO_EYES = (0.3, 2.0)  # mouth width / eye distance


def geometry_failure(face: Face) -> str | None:
  """Why `face`'s landmarks do not have a face's geometry, or None when they do (or when the
  detector gave none: nothing to check).

  In image coordinates (y grows downwards), a face seen upright or turned has: every point
  inside the box (up to LANDMARK_BOX_SLACK); the eyes and the mouth corners in left/right
  order (smaller x first, the LANDMARK_NAMES order); both eyes above the nose, the nose above
  both mouth corners (any roll under about 35 degrees); an eye distance of EYE_DISTANCE of the
  box width, an eyes-to-mouth height of EYES_TO_MOUTH of its height, a mouth width of
  MOUTH_TO_EYES of the eye distance. (`MtcnnDetector` sorts its points by x, so the order check
  only ever fails for a plugged detector's landmarks.)
  """
  if face.landmarks is None:
    return None
  m = np.asarray(face.landmarks, np.float64)
  x0, y0, x1, y1 = (float(v) for v in face.box)
  w, h = max(x1 - x0, 1e-6), max(y1 - y0, 1e-6)
  sx, sy = LANDMARK_BOX_SLACK * w, LANDMARK_BOX_SLACK * h
  if not ((m[:, 0] >= x0 - sx) & (m[:, 0] <= x1 + sx) & (m[:, 1] >= y0 - sy)
          & (m[:, 1] <= y1 + sy)).all():
    return "landmarks outside the box"
  eyes, nose, mouth = m[:2], m[2], m[3:]
  if eyes[0, 0] >= eyes[1, 0] or mouth[0, 0] >= mouth[1, 0]:
    return "eyes or mouth corners not in left/right order"
  if not eyes[:, 1].max() < nose[1] < mouth[:, 1].min():
    return "not eyes above nose above mouth"
  eye_distance = float(np.linalg.norm(eyes[1] - eyes[0]))
  checks = (("eye distance / box width", eye_distance / w, EYE_DISTANCE),
            ("eyes-to-mouth height / box height", (mouth[:, 1].mean() - eyes[:, 1].mean()) / h,
             EYES_TO_MOUTH),
            ("mouth width / eye distance",
             float(np.linalg.norm(mouth[1] - mouth[0])) / max(eye_distance, 1e-6), MOUTH_TO_EYES))
  for name, value, (lo, hi) in checks:
    if not lo <= value <= hi:
      return f"{name} {value:.2f} outside [{lo:g}, {hi:g}]"
  return None


class FaceDetector(Protocol):
  """What the preparation needs from a detector."""

  def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
    """uint8 RGB images [H, W, 3] (one size per call) -> the faces found in each."""


class MtcnnDetector:
  """MTCNN (P-Net, R-Net, O-Net cascade) with its five landmarks, batched on TensorFlow.

  Args:
    min_score: faces below this O-Net confidence are dropped.
    num_threads: TensorFlow intra-op threads (1 per worker process when several run).
  """

  def __init__(self, min_score: float = 0.9, num_threads: int | None = None):
    if not 0.0 <= min_score <= 1.0:
      raise ValueError(f"min_score must be in [0, 1], got {min_score}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    if num_threads:
      tf.config.threading.set_intra_op_parallelism_threads(num_threads)
      tf.config.threading.set_inter_op_parallelism_threads(num_threads)
    from mtcnn import MTCNN  # pylint: disable=import-outside-toplevel
    self._mtcnn = MTCNN()
    self.min_score = min_score

  def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
    if not images:
      return []
    # mtcnn scales float inputs in place and expects 0..255 values: hand it float copies.
    batch = [np.asarray(im, np.float32) for im in images]
    results = self._mtcnn.detect_faces(batch, box_format="xyxy")
    if len(results) != len(images):  # mtcnn returns a flat empty array when nothing is found
      results = [[] for _ in images]
    faces = []
    for found in results:
      faces.append([self._face(f) for f in found if f["confidence"] >= self.min_score])
    return faces

  @staticmethod
  def _face(found: dict) -> Face:
    k = found["keypoints"]
    eyes = sorted([k["left_eye"], k["right_eye"]], key=lambda p: p[0])
    mouth = sorted([k["mouth_left"], k["mouth_right"]], key=lambda p: p[0])
    landmarks = np.array([eyes[0], eyes[1], k["nose"], mouth[0], mouth[1]], np.float32)
    return Face(np.array(found["box"], np.float32), float(found["confidence"]), landmarks)


class WholeFrameDetector:
  """For videos that are face crops already (the face-centred crops that LRS3, VoxCeleb2 or
  rendered talking heads come as): every frame holds one face whose box is the whole frame.

  No landmarks: the mouth box comes from the face box's geometry (`crop.mouth_boxes`). With the
  preparation's crop margin set to 0 the crops are the frames themselves, resized.
  """

  def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
    return [[Face(np.array([0, 0, im.shape[1], im.shape[0]], np.float32), 1.0)] for im in images]


# The shipped detectors, by name.
DETECTORS = {"mtcnn": MtcnnDetector, "whole_frame": WholeFrameDetector}
DEFAULT = "mtcnn"  # the preparation's detector unless a tool is told otherwise


def load_detector(spec: str = DEFAULT, **kwargs) -> FaceDetector:
  """A detector by name (a key of DETECTORS) or "package.module:ClassName" (yours).

  Args:
    spec: "mtcnn", "whole_frame" or an import path "module:attribute" of a class or factory.
    **kwargs: passed to the class or factory (e.g. the path of your weight file).
  """
  if spec in DETECTORS:
    return DETECTORS[spec](**kwargs)
  module_name, sep, attribute = spec.partition(":")
  if not sep or not module_name or not attribute:
    raise ValueError(f"detector {spec!r} is neither one of {sorted(DETECTORS)} nor "
                     "'package.module:ClassName'")
  factory = getattr(importlib.import_module(module_name), attribute)
  detector = factory(**kwargs)
  if not callable(getattr(detector, "detect", None)):
    raise ValueError(f"detector {spec!r} has no detect(images) method")
  return detector
