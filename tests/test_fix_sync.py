"""`synclipmae-fix-sync` (synclipmae_jax/tools/fix_sync.py) on a real clip with the shared tiny
checkpoint (a model that cannot detect lags yet: these tests check the report, the sign and units,
the copy and the refusals, not the estimate's accuracy)."""

import json
import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from data_pipelines.prepare import decode, encode
from fixture_paths import HDTF
from synclipmae_jax.tools import fix_sync, sync_eval

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(HDTF, "WDA_KatieHill_000.mp4")


@pytest.fixture(scope="module")
def report(tiny_run):
  _, workdir, _ = tiny_run
  return fix_sync.Estimator(workdir)(SOURCE)


def test_report_gives_the_lag_in_frames_and_ms_with_its_curve(tiny_run, report):
  config, _, _ = tiny_run
  s = config.evals.sync.max_lag
  assert report["lags"] == list(range(-s, s + 1))
  curve = np.asarray(report["distance"])
  assert report["lag_frames"] == report["lags"][int(np.argmin(curve))]
  assert report["lag_ms"] == 40.0 * report["lag_frames"]
  assert report["confidence"] == pytest.approx(np.median(curve) - curve.min())
  assert report["clips"] and all(c["frames"] >= 50 for c in report["clips"])
  # The video's curve is the frame-weighted mean of its clips' curves: a clip's estimate that
  # disagrees with the video's is possible, but every clip's lies in the searched range.
  assert all(-s <= c["lag_frames"] <= s for c in report["clips"])


def test_corrected_copy_delays_the_audio_by_the_estimate(report, tmp_path):
  out = str(tmp_path / "fixed.mp4")
  fix_sync.write_corrected(SOURCE, out, report, min_confidence=0.0)
  lag = report["lag_frames"] * 640
  original, _ = decode.read_audio(SOURCE, Fraction(0), 200)
  fixed, _ = decode.read_audio(out, Fraction(0), 200)
  if lag > 0:
    np.testing.assert_array_equal(fixed[lag:], original[:-lag])
  elif lag < 0:
    skip = int(np.ceil(-lag / 1024)) * 1024 + 1024
    np.testing.assert_array_equal(fixed[skip:lag], original[skip - lag:])
  else:
    np.testing.assert_array_equal(fixed, original)


def test_low_confidence_writes_nothing(report, tmp_path):
  out = tmp_path / "fixed.mp4"
  with pytest.raises(fix_sync.NotEstimated, match="below --min_confidence=1000.0.*no file was written"):
    fix_sync.write_corrected(SOURCE, str(out), report, min_confidence=1000.0)
  assert not out.exists()


def test_unreadable_and_silent_files_end_with_their_reason_and_no_output(tiny_run, tmp_path):
  _, workdir, _ = tiny_run
  broken = tmp_path / "broken.mp4"
  broken.write_bytes(b"not a video at all" * 100)
  no_audio = str(tmp_path / "no_audio.mp4")
  encode.remux(SOURCE, no_audio, drop_audio=True)
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  for path, reason in ((str(broken), "unreadable"), (no_audio, "no_audio_stream")):
    out = tmp_path / "out.mp4"
    result = subprocess.run(
        [sys.executable, "-m", "synclipmae_jax.tools.fix_sync", f"--workdir={workdir}", f"--video={path}",
         f"--out={out}", f"--report={tmp_path / 'report.json'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"synclipmae-fix-sync: {path}: no clip kept: {reason}" in result.stderr
    assert not out.exists() and not (tmp_path / "report.json").exists()


def test_sync_eval_measures_a_folder_of_raw_videos_and_names_the_ones_it_cannot(tiny_run, tmp_path):
  _, workdir, _ = tiny_run
  folder = tmp_path / "videos"
  folder.mkdir()
  os.symlink(SOURCE, folder / "katie.mp4")
  (folder / "broken.mp4").write_bytes(b"\x00" * 1000)
  report = sync_eval.evaluate_videos(workdir, str(folder))
  assert [os.path.basename(v["video"]) for v in report["videos"]] == ["katie.mp4"]
  assert [os.path.basename(f["video"]) for f in report["failed"]] == ["broken.mp4"]
  assert "no clip kept: unreadable" in report["failed"][0]["reason"]
  paths = sync_eval.write_report(report, str(tmp_path / "out"))
  with open(paths["markdown"]) as f:
    md = f.read()
  assert "katie.mp4 | " in md and "| not measured | reason |" in md
  assert os.path.getsize(paths[sync_eval.CURVES_PNG]) > 1000
  with open(paths["json"]) as f:
    assert json.load(f)["videos"][0]["lag_ms"] == 40.0 * report["videos"][0]["lag_frames"]
