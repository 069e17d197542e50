"""Several faces only when a second face is really there (data_pipelines/prepare/segments.py):
two overlapping tracks are two faces when both are detected long enough with comparable
confidence and size (`weaker_face`), else the weaker is ignored; on the real HDTF clip a plugged
detector's spurious background box keeps the clip, the clip side by side with another real
speaker is still rejected, with the evidence in the rejects report."""

from __future__ import annotations

import csv
import json
import os
from fractions import Fraction

import numpy as np
import pytest

from data_pipelines.prepare import decode, encode, face_detector, plan, prepare, process, rejects
from data_pipelines.prepare import segments
from fixture_paths import HDTF
from test_prepare_units import track

AOC = os.path.join(HDTF, "WDA_AlexandriaOcasioCortez_000.mp4")
HILL = os.path.join(HDTF, "WDA_KatieHill_000.mp4")
SPURIOUS_FRAMES = range(60, 110)  # 2 s of the 8 s clip


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


class SpuriousBoxDetector:
  """MTCNN, plus a 32 px box on the background (top-left corner, confidence 0.8) in frames
  60-109: what a detector finds on a poster or a pattern."""

  def __init__(self):
    self.mtcnn = face_detector.load_detector("mtcnn")
    self.seen = 0

  def detect(self, images):
    found = self.mtcnn.detect(images)
    for i, faces in enumerate(found):
      if self.seen + i in SPURIOUS_FRAMES:
        faces.append(face_detector.Face(np.array([4, 4, 36, 36], np.float32), 0.8))
    self.seen += len(images)
    return found


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
