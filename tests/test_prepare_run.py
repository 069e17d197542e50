"""The preparation run (data_pipelines.prepare.prepare) with a stand-in detector: reports,
resume, interruption, several tasks, worker processes, the CLI with a plugged detector."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os

import numpy as np
import pytest
from scipy import ndimage

from data_pipelines import clip_records, schema
from data_pipelines.prepare import decode
from data_pipelines.prepare import encode
from data_pipelines.prepare import plan
from data_pipelines.prepare import face_detector
from data_pipelines.prepare import prepare
from data_pipelines.prepare import process
from data_pipelines.prepare import rejects
from data_pipelines.prepare import segments

SIZE, SQUARE = 64, 24


class BrightSquareDetector:
  """Finds white squares (every channel > 200): a detector for drawn test videos."""

  calls = 0

  def detect(self, images):
    BrightSquareDetector.calls += 1
    result = []
    for image in images:
      labels, _ = ndimage.label(image.min(axis=-1) > 200)
      faces = []
      for sl in ndimage.find_objects(labels):
        box = np.array([sl[1].start, sl[0].start, sl[1].stop, sl[0].stop], np.float32)
        faces.append(face_detector.Face(box, 1.0))
      result.append(faces)
    return result


def drawn_video(path: str, seconds: float, *, squares=((20, 20),), second_until: float = 0.0,
                audio: bool = True, faststart: bool = False) -> None:
  """A grey video with white squares (the faces; a second one until `second_until` s) and
  noise audio."""
  n = round(seconds * 25)
  frames = np.full((n, SIZE, SIZE, 3), 60, np.uint8)
  for t in range(n):
    for k, (x, y) in enumerate(squares):
      if k == 0 or t < second_until * 25:
        frames[t, y:y + SQUARE - 8 * k, x + t % 3:x + t % 3 + SQUARE - 8 * k] = 255
  rng = np.random.default_rng(n)
  sound = (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32) if audio else None
  target = path + ".tmp.mp4" if faststart else path
  encode.write_video(target, list(frames), sound, options={"preset": "ultrafast"})
  if faststart:
    encode.remux(target, path, container_options={"movflags": "faststart"})
    os.remove(target)


OPTIONS = process.PrepareOptions(
    image_size=32, margin=0.25, image_format="png", detect_size=64,
    segment=segments.SegmentOptions(min_frames=25, max_frames=50, min_face_size=10,
                                    min_track_frames=3, second_face_min_frames=5))
DETECTOR = "tests.test_prepare_run:BrightSquareDetector"


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> str:
  root = tmp_path_factory.mktemp("videos")
  drawn_video(str(root / "a.mp4"), 2.4)  # 60 frames -> clips of 30 + 30
  drawn_video(str(root / "b.mp4"), 1.6, squares=((4, 4), (36, 36)), second_until=0.6)
  drawn_video(str(root / "c.mp4"), 1.2)
  open(root / "d.mp4", "wb").close()
  drawn_video(str(root / "e.mp4"), 0.6)  # 15 frames: too short
  drawn_video(str(root / "f_full.mp4"), 4.0, faststart=True)
  with open(root / "f_full.mp4", "rb") as f:
    data = f.read()
  os.remove(root / "f_full.mp4")
  with open(root / "f.mp4", "wb") as f:  # truncated: index first, half of the data
    f.write(data[:len(data) // 2])
  return str(root)


def run(videos, output, **kwargs):
  rows = plan.scan_folder(videos)
  kwargs = dict(dict(root=videos, files_per_shard=2, detector=DETECTOR, progress=False), **kwargs)
  return prepare.prepare(rows, str(output), OPTIONS, **kwargs)


def stable(summary: dict) -> dict:
  """The summary without its CPU timings (which differ between runs)."""
  return {k: v for k, v in summary.items() if not k.startswith(("cpu", "video_seconds_per"))}


def read_rejects(output) -> list[dict]:
  with open(os.path.join(output, "rejects.tsv"), encoding="utf-8") as f:
    return list(csv.DictReader(f, delimiter="\t"))


def records(output, split="train") -> list[dict]:
  paths = sorted(p for p in os.listdir(output)
                 if p.startswith(split) and p.endswith(".array_record"))
  source = clip_records.ClipSource([os.path.join(output, p) for p in paths])
  return [source.clip(i) for i in range(len(source))]


@pytest.fixture(scope="module")
def prepared(videos, tmp_path_factory):
  output = tmp_path_factory.mktemp("out")
  return str(output), run(videos, output)


def test_reports_every_file_and_range(prepared, videos):
  output, summary = prepared
  by_file = {}
  for r in read_rejects(output):
    by_file.setdefault(os.path.basename(r["path"]), []).append((r["start"], r["end"], r["reason"]))
  assert by_file == {
      "b.mp4": [("0.00", "0.60", rejects.SEVERAL_FACES)],
      "d.mp4": [("0.00", "", rejects.EMPTY_FILE)],
      "e.mp4": [("0.00", "", rejects.TOO_SHORT)],
      "f.mp4": by_file["f.mp4"],
  }
  # The truncated file keeps what decodes; the rest of its stated 4 s is reported (where
  # the audio breaks, then where the video ends).
  broken = by_file["f.mp4"]
  assert {r[2] for r in broken} == {rejects.DECODE_ERROR} and broken[-1][1] == "4.00"
  assert all(a[1] == b[0] for a, b in zip(broken[:-1], broken[1:]))
  assert 0.5 < float(broken[0][0]) < 3.0
  with open(os.path.join(output, "manifest.jsonl")) as f:
    kept = [json.loads(line) for line in f]
  assert [(os.path.basename(c["path"]), c["start"], c["end"]) for c in kept] == [
      ("a.mp4", 0.0, 1.2), ("a.mp4", 1.2, 2.4), ("b.mp4", 0.6, 1.6), ("c.mp4", 0.0, 1.2),
      ("f.mp4", 0.0, float(broken[0][0]))]
  assert all(c["mouth_from"] == "face_box" for c in kept)  # no landmarks from this detector
  assert summary["clips"]["train"] == len(kept) == len(records(output))
  assert summary["files"] == {"total": 6, "with_clips": 4, "rejected_whole": 2}
  assert summary["rejected"][rejects.SEVERAL_FACES] == {"count": 1,
                                                       "hours": pytest.approx(0.6 / 3600)}
  assert summary["hours_kept"] == pytest.approx(sum(c["end"] - c["start"] for c in kept) / 3600)
  info = json.load(open(os.path.join(output, "dataset_info.json")))
  assert info["speakers"] == {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4, "f": 5}


def test_records_follow_the_schema(prepared):
  output, _ = prepared
  with open(os.path.join(output, "manifest.jsonl")) as f:
    kept = {c["clip_id"]: c for c in map(json.loads, f)}
  for r in records(output):
    c = kept[r["clip_id"]]
    n = len(r["frames"])
    assert n == c["num_frames"] and r["audio"].shape == (640 * n,)
    assert r["identity_id"] == c["identity_id"] and r["split"] == "train"
    assert schema.decode_frames(r, 0, 1).shape == (1, 32, 32, 3)
    # A square face in a crop of margin 0.25: its box is [1/6, 5/6] of the crop.
    np.testing.assert_allclose(r["face_boxes"].mean(0), [1 / 6, 1 / 6, 5 / 6, 5 / 6], atol=0.02)
    m = r["mouth_boxes"].mean(0)  # the lower-middle part of the face box
    assert 0.3 < m[0] < m[2] < 0.7 and 0.5 < m[1] < m[3] < 0.85


def test_rerun_skips_what_is_done(prepared, videos):
  output, summary = prepared
  parts = {p: os.stat(os.path.join(output, "parts", p)).st_mtime_ns
           for p in os.listdir(os.path.join(output, "parts"))}
  calls = BrightSquareDetector.calls
  again = run(videos, output)
  assert BrightSquareDetector.calls == calls  # nothing detected again
  assert {p: os.stat(os.path.join(output, "parts", p)).st_mtime_ns for p in parts} == parts
  assert again == summary
  with pytest.raises(ValueError, match="other"):
    run(videos, output, seed=1)  # another plan in the same directory


def test_interrupted_run_keeps_committed_shards_and_resumes(prepared, videos, tmp_path,
                                                            monkeypatch):
  reference, summary = prepared
  real = process.prepare_file
  seen = []

  def interrupt_at_third_file(source, *args):
    seen.append(source.path)
    if len(seen) == 3:
      raise KeyboardInterrupt
    return real(source, *args)

  monkeypatch.setattr(process, "prepare_file", interrupt_at_third_file)
  with pytest.raises(KeyboardInterrupt):
    run(videos, tmp_path)
  monkeypatch.setattr(process, "prepare_file", real)
  first = os.path.join(tmp_path, "train-00000-of-00003.array_record")
  assert sorted(os.listdir(tmp_path)) == ["labels.json", "locks", "parts", "plan.json", os.path.basename(first)]
  assert os.listdir(tmp_path / "parts") == ["train-00000-of-00003.json"]
  before = os.stat(first)
  assert stable(run(videos, tmp_path)) == stable(summary)
  assert os.stat(first).st_mtime_ns == before.st_mtime_ns and os.stat(first).st_ino == before.st_ino
  assert [r["clip_id"] for r in records(tmp_path)] == [r["clip_id"] for r in records(reference)]


def test_tasks_split_the_shards_and_the_last_one_reports(prepared, videos, tmp_path):
  _, summary = prepared
  assert run(videos, tmp_path, num_tasks=2, task_index=0) is None
  assert sorted(os.listdir(tmp_path / "parts")) == ["train-00000-of-00003.json",
                                                    "train-00002-of-00003.json"]
  assert stable(run(videos, tmp_path, num_tasks=2, task_index=1)) == stable(summary)


def test_worker_processes_give_the_same_result(prepared, videos, tmp_path):
  reference, summary = prepared
  assert stable(run(videos, tmp_path, workers=2)) == stable(summary)
  for a, b in zip(records(tmp_path), records(reference), strict=True):
    assert a["clip_id"] == b["clip_id"] and a["frames"] == b["frames"]
    np.testing.assert_array_equal(a["audio"], b["audio"])


class DyingDetector(BrightSquareDetector):
  """Kills the worker process it runs in at its first call (as the OOM killer would)."""

  def detect(self, images):
    if os.environ.get("DIE_IN_WORKER") and multiprocessing.parent_process() is not None:
      os._exit(9)
    return super().detect(images)


def test_a_dying_worker_stops_the_run_with_a_clear_error(videos, tmp_path, monkeypatch):
  monkeypatch.setenv("DIE_IN_WORKER", "1")  # spawned workers inherit it
  with pytest.raises(RuntimeError, match="a worker process died"):
    run(videos, tmp_path, workers=2, detector="tests.test_prepare_run:DyingDetector")


def test_cli_with_a_manifest_and_a_plugged_detector(videos, tmp_path):
  manifest = tmp_path / "m.csv"
  manifest.write_text("path,speaker,split,transcript,emotion\n"
                      f"{videos}/a.mp4,anna,validation,hello world,happy\n"
                      f"{videos}/c.mp4,carl,train,whole clip words,\n")
  out = tmp_path / "out"
  summary = prepare.main([
      "--manifest", str(manifest), "--output", str(out), "--workers", "0",
      "--detector", DETECTOR, "--image_size", "32", "--min_seconds", "1", "--max_seconds", "2",
      "--min_face_size", "10", "--detect_size", "64", "--no_progress"])
  assert summary["clips"] == {"train": 1, "validation": 2, "test": 0}
  assert summary["identities"] == {"train": 1, "validation": 1, "test": 0}
  (val_a, val_b), (train,) = records(out, "validation"), records(out, "train")
  assert (val_a["identity_id"], val_a["emotion"], val_a["transcript"]) == (0, 1, "")  # a part
  assert (val_b["identity_id"], val_b["emotion"]) == (0, 1)  # both parts keep anna's labels
  assert (train["identity_id"], train["emotion"], train["transcript"]) == (1, -1,
                                                                           "whole clip words")
  with pytest.raises(SystemExit):
    prepare.main(["--manifest", str(manifest), "--output", str(out), "--detector_arg", "x"])


def _source(videos, name):
  return process.Source(os.path.join(videos, name), "s", 0, "train", 0)


def test_clips_cut_off_by_a_failing_second_decoding_are_reported(videos, monkeypatch):
  iter_frames = decode.iter_frames

  def breaks_in_pass_two(path, rotation, size=None, errors=None):  # pass 2 decodes full size
    for t, image in enumerate(iter_frames(path, rotation, size, errors)):
      if size is None and t == 40:
        errors.append("simulated break")
        return
      yield image

  monkeypatch.setattr(decode, "iter_frames", breaks_in_pass_two)
  written = []
  report = process.prepare_file(_source(videos, "a.mp4"), BrightSquareDetector(), OPTIONS,
                                written.append)
  assert [(c["start"], c["end"]) for c in report.kept] == [(0.0, 1.2)]
  assert len(written) == 1
  assert [(r["start"], r["end"], r["reason"]) for r in report.rejected] == [
      (1.2, 2.4, rejects.DECODE_ERROR)]
  assert "simulated break" in report.rejected[0]["detail"]


class ForgetfulDetector(BrightSquareDetector):
  def detect(self, images):
    return super().detect(images)[:-1]


def test_a_detector_returning_too_few_results_is_an_error_not_a_shift(videos):
  report = process.prepare_file(_source(videos, "a.mp4"), ForgetfulDetector(), OPTIONS,
                                lambda clip: None)
  assert report.kept == []
  assert [r["reason"] for r in report.rejected] == [rejects.ERROR]
  assert "the detector returned" in report.rejected[0]["detail"]


class OutOfMemoryOnceDetector(BrightSquareDetector):
  """Runs out of memory on its first call in a process whose FAIL_FLAG file exists, then
  removes the flag (the machine recovered): the run must stop, the resume must retry."""

  def detect(self, images):
    flag = os.environ.get("FAIL_FLAG", "")
    if flag and os.path.exists(flag):
      os.remove(flag)
      raise MemoryError("simulated: the detector ran out of memory")
    return super().detect(images)


def test_an_infrastructure_failure_stops_the_run_and_a_resume_retries_the_file(videos, tmp_path,
                                                                              monkeypatch):
  assert rejects.is_infrastructure_failure(OSError(28, "No space left on device"))
  assert not rejects.is_infrastructure_failure(OSError(2, "No such file"))
  assert not rejects.is_infrastructure_failure(ValueError("bad input"))
  flag = tmp_path / "fail_once"
  flag.touch()
  monkeypatch.setenv("FAIL_FLAG", str(flag))
  detector = "tests.test_prepare_run:OutOfMemoryOnceDetector"
  out = tmp_path / "out"
  with pytest.raises(MemoryError, match="ran out of memory"):
    run(videos, out, detector=detector)
  assert not flag.exists()
  summary = run(videos, out, detector=detector)  # the resume: every file prepared, none an error
  assert rejects.ERROR not in {r["reason"] for r in read_rejects(out)}
  reference = run(videos, tmp_path / "reference")
  assert stable(summary) == stable(reference)
