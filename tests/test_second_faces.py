"""Several faces only when a second face is really there (data_pipelines/prepare/segments.py):
two overlapping tracks are two faces when both are detected long enough with comparable
confidence and size (`weaker_face`), else the weaker is ignored; on the real HDTF clip a plugged
detector's spurious background box keeps the clip, the clip side by side with another real
speaker is still rejected, with the evidence in the rejects report. A confident, face-sized box
whose landmarks lack a face's geometry (MTCNN's hits on clasped hands) is not a face
(`face_detector.geometry_failure`, `tracking.Track.not_face`): the clip is kept and the box is
named in not_faces.tsv."""

from __future__ import annotations

import csv
import json
import os
from fractions import Fraction

import numpy as np
import pytest

from data_pipelines.prepare import decode, encode, face_detector, plan, prepare, process, rejects
from data_pipelines.prepare import report as report_lib, segments, tracking
from fixture_paths import HDTF
from test_prepare_units import track

AOC = os.path.join(HDTF, "WDA_AlexandriaOcasioCortez_000.mp4")
HILL = os.path.join(HDTF, "WDA_KatieHill_000.mp4")
SPURIOUS_FRAMES = range(60, 110)  # 2 s of the 8 s clip
HANDS_FRAMES = range(60, 100)  # 40 frames
# Five points laid out as on a frontal face in a 100 px box at the origin (MTCNN's on the HDTF
# faces: eye distance 0.4-0.5 of the width, eyes to mouth 0.34-0.40 of the height).
FACE_MARKS = np.array([[30, 40], [72, 40], [51, 60], [36, 78], [66, 78]], np.float32)
# MTCNN's points on a pair of hands: a row of knuckles, the "mouth" above the "eyes".
HANDS_MARKS = np.array([[20, 70], [80, 70], [50, 50], [30, 30], [70, 30]], np.float32)


def face(marks, box=(0, 0, 100, 100), score=0.99):
  return face_detector.Face(np.array(box, np.float32), score, None if marks is None else marks)


def test_geometry_failure_names_the_check_a_detection_fails():
  assert face_detector.geometry_failure(face(FACE_MARKS)) is None
  assert face_detector.geometry_failure(face(None)) is None  # no landmarks: nothing to check
  # The same face shifted and scaled is still a face.
  assert face_detector.geometry_failure(face(FACE_MARKS * 3 + 50, (50, 50, 350, 350))) is None
  cases = {
      "not eyes above nose above mouth": HANDS_MARKS,
      "landmarks outside the box": FACE_MARKS + [0, 60],
      "left/right order": FACE_MARKS[[1, 0, 2, 3, 4]],
      "eye distance / box width 0.10 outside [0.15, 0.75]":
          FACE_MARKS * [1, 1] + np.array([[16, 0], [-16, 0], [0, 0], [0, 0], [0, 0]]),
      "eyes-to-mouth height / box height 0.08 outside [0.15, 0.7]":
          FACE_MARKS + np.array([[0, 15], [0, 15], [0, -1], [0, -15], [0, -15]]),
      "mouth width / eye distance 0.07 outside [0.3, 2]":
          FACE_MARKS + np.array([[0, 0], [0, 0], [0, 0], [14, 0], [-13, 0]]),
  }
  for expected, marks in cases.items():
    assert expected in face_detector.geometry_failure(face(np.asarray(marks, np.float32))), expected


def test_a_track_is_not_a_face_when_most_of_its_landmarks_fail():
  def frames(marks_per_frame):
    return [[face(m)] for m in marks_per_frame]

  hands = tracking.track_faces(frames([HANDS_MARKS] * 9 + [FACE_MARKS] * 1), 0, 10)
  assert len(hands) == 1 and "in 9 of 10 detections" in hands[0].not_face
  assert "not eyes above nose above mouth" in hands[0].not_face
  odd = tracking.track_faces(frames([FACE_MARKS] * 6 + [HANDS_MARKS] * 4), 0, 10)
  assert odd[0].not_face is None  # a real face with a few odd frames stays a face
  unchecked = tracking.track_faces(frames([None] * 10), 0, 10)
  assert unchecked[0].not_face is None
  # Ignored by the segmentation: a face-sized, confident hands track beside the face is not a
  # second face, whereas the same track as a face is.
  opts = segments.SegmentOptions(min_frames=10, max_frames=100, min_face_size=50)
  speaker, other = track(0, 100, size=200, score=0.999), track(0, 100, size=180, score=0.99)
  assert [s.reason for s in segments.scene_segments(0, 100, [speaker, other], opts)] == [
      rejects.SEVERAL_FACES]
  other.not_face = "landmarks without a face's geometry"
  assert [(s.reason, s.track) for s in segments.scene_segments(0, 100, [speaker, other], opts)] == [
      (None, speaker)]


def test_weaker_face_by_frames_then_confidence_then_size():
  opts = segments.SegmentOptions(min_frames=10, max_frames=100, min_face_size=50)
  speaker = track(0, 100, size=200, score=0.999)
  assert segments.weaker_face(speaker, track(0, 100, size=150, score=0.99), opts) is None
  brief = track(0, 100, size=200, score=0.999, detected=20)  # found in 20 of 100 frames
  assert segments.weaker_face(speaker, brief, opts) is brief
  unsure = track(0, 100, size=400, score=0.8)  # a big, unsure box on the background
  assert segments.weaker_face(speaker, unsure, opts) is unsure
  small = track(0, 100, size=90, score=0.999)
  assert segments.weaker_face(small, speaker, opts) is small
  # In a scene: the unsure box and the small face are ignored, two comparable faces are not.
  kept = segments.scene_segments(0, 100, [speaker, unsure, small], opts)
  assert [(s.start, s.stop, s.reason) for s in kept] == [(0, 100, None)]
  several = segments.scene_segments(0, 100, [speaker, track(0, 100, size=150, score=0.99)], opts)
  assert [s.reason for s in several] == [rejects.SEVERAL_FACES]
  assert several[0].detail == ("2 faces: 200 px, confidence 1.00, detected in 100 of frames 0-99; "
                               "150 px, confidence 0.99, detected in 100 of frames 0-99")
  with pytest.raises(ValueError, match="second_face_size_ratio must be in"):
    segments.SegmentOptions(second_face_size_ratio=1.5)


class PluggedDetector:
  """MTCNN, plus the boxes `extra(frame, faces)` adds to a frame's faces (frames counted over the
  calls to detect)."""

  def __init__(self):
    self.mtcnn = face_detector.load_detector("mtcnn")
    self.seen = 0

  def detect(self, images):
    found = self.mtcnn.detect(images)
    for i, faces in enumerate(found):
      faces.extend(self.extra(self.seen + i, faces))
    self.seen += len(images)
    return found


class SpuriousBoxDetector(PluggedDetector):
  """A 32 px box on the background (top-left corner, confidence 0.8) in frames 60-109: what a
  detector finds on a poster or a pattern."""

  def extra(self, frame, faces):
    del faces
    if frame in SPURIOUS_FRAMES:
      return [face_detector.Face(np.array([4, 4, 36, 36], np.float32), 0.8)]
    return []


class HandsDetector(PluggedDetector):
  """For frames 60-99 a box below the face, of its size and confidence, whose landmarks are a
  pair of hands' (HANDS_MARKS): what MTCNN finds on clasped hands."""

  def extra(self, frame, faces):
    if frame not in HANDS_FRAMES or not faces:
      return []
    x0, y0, x1, y1 = faces[0].box
    box = np.array([x0, y1 + 0.1 * (y1 - y0), x1, y1 + 1.1 * (y1 - y0)], np.float32)
    scale = (box[2:] - box[:2]) / 100
    return [face_detector.Face(box, faces[0].score, HANDS_MARKS * scale + box[:2])]


def run(path: str, out, detector: str, **segment_options) -> tuple[dict, list[dict]]:
  out.mkdir(exist_ok=True)
  manifest = out / "manifest.jsonl"
  manifest.write_text(json.dumps({"path": path, "speaker": "s", "split": "train"}) + "\n")
  options = process.PrepareOptions(image_size=64,
                                   segment=segments.SegmentOptions(**segment_options))
  summary = prepare.prepare(plan.read_manifest(str(manifest)), str(out / "prepared"), options,
                            detector=detector, progress=False)
  with open(out / "prepared" / "rejects.tsv", encoding="utf-8") as f:
    rejected = list(csv.DictReader(f, delimiter="\t"))
  return summary, rejected


def test_a_spurious_background_box_keeps_the_clip(tmp_path):
  detector = "tests.test_second_faces:SpuriousBoxDetector"
  summary, rejected = run(AOC, tmp_path / "new", detector)
  # Its confidence (0.8 against MTCNN's ~1.0) makes it the weaker track: ignored.
  assert rejected == [] and summary["rejected"] == {}
  # The box is above min_face_size in the source and tracked for 50 frames: when every
  # overlapping track counts (the rule before), those 2 s are rejected as several faces.
  _, rejected = run(AOC, tmp_path / "every_track", detector, second_face_min_frames=1,
                    second_face_size_ratio=0.0, second_face_score_ratio=0.0)
  assert [(r["reason"], float(r["start"]), float(r["end"])) for r in rejected] == [
      (rejects.SEVERAL_FACES, SPURIOUS_FRAMES.start / 25, SPURIOUS_FRAMES.stop / 25)]


def test_a_confident_face_sized_box_without_a_face_geometry_keeps_the_clip(tmp_path):
  summary, rejected = run(AOC, tmp_path, "tests.test_second_faces:HandsDetector")
  assert rejected == [] and summary["rejected"] == {} and summary["clips"]["train"] >= 1
  assert summary["not_faces"] == 1
  with open(tmp_path / "prepared" / report_lib.NOT_FACES, encoding="utf-8") as f:
    named = list(csv.DictReader(f, delimiter="\t"))
  assert len(named) == 1
  row = named[0]
  assert (float(row["start"]), float(row["end"])) == (HANDS_FRAMES.start / 25,
                                                      HANDS_FRAMES.stop / 25)
  assert float(row["confidence"]) > 0.9 and len(row["box"].split()) == 4
  assert "not eyes above nose above mouth" in row["detail"] and "in 40 of 40" in row["detail"]


def test_a_second_real_speaker_throughout_is_still_rejected_with_evidence(tmp_path):
  size = (256, 256)
  left = list(decode.iter_frames(AOC, 0, size))
  right = list(decode.iter_frames(HILL, 0, size))
  n = min(len(left), len(right))
  frames = [np.concatenate([a, b], axis=1) for a, b in zip(left[:n], right[:n])]
  audio, _ = decode.read_audio(AOC, Fraction(0), n)
  path = str(tmp_path / "two_speakers.mp4")
  encode.write_video(path, frames, audio, options={"preset": "ultrafast"})
  summary, rejected = run(path, tmp_path, "mtcnn")
  assert [r["reason"] for r in rejected] == [rejects.SEVERAL_FACES]
  assert float(rejected[0]["start"]) == 0.0 and float(rejected[0]["end"]) == pytest.approx(n / 25)
  detail = rejected[0]["detail"]
  assert detail.startswith("2 faces: ") and detail.count("px, confidence") == 2
  assert summary["rejected"][rejects.SEVERAL_FACES]["count"] == 1
  assert summary["not_faces"] == 0  # both real faces pass the landmark geometry checks
