"""`synclipmae-dub-score` (synclipmae_torch/dub_score.py) on a real HDTF clip with the tiny run
exported to PyTorch and SyncNet with random weights: the command's report and table, its figures
equal to the tokens' and SyncNet's own computations on the same prepared clips, a broken file
reported with its reason while the other is scored. (That the score finds real shifts with a model
that has learnt sync: tests/test_drift_estimates.py.)"""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

torch = pytest.importorskip("torch")

from data_pipelines import grain_pipeline  # pylint: disable=wrong-import-position
from data_pipelines.prepare import encode, prepare, process  # pylint: disable=wrong-import-position
from fixture_paths import HDTF  # pylint: disable=wrong-import-position
from synclipmae_jax import checkpointing, sync_metrics  # pylint: disable=wrong-import-position
from synclipmae_torch import dub_score, export, syncnet  # pylint: disable=wrong-import-position
from synclipmae_torch import tokens as tokens_lib  # pylint: disable=wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIDEO = os.path.join(HDTF, "WDA_KatieHill_000.mp4")


@pytest.fixture(scope="module")
def folders(tiny_run, tmp_path_factory):
  """(the tiny run exported, SyncNet's random weights in its file layout)."""
  _, workdir, _ = tiny_run
  root = tmp_path_factory.mktemp("dub_score")
  restored = checkpointing.load(workdir)
  export.export(restored.config, restored.params, str(root / "torch"), step=restored.step)
  torch.manual_seed(0)
  weights = str(root / "syncnet_v2.model")
  torch.save(syncnet.SyncNet().state_dict(), weights)
  return str(root / "torch"), weights


@pytest.fixture(scope="module")
def report(folders, tmp_path_factory):
  """The command's JSON report and printed table for the clip and a broken file."""
  exported, weights = folders
  root = tmp_path_factory.mktemp("cli")
  broken = root / "broken.mp4"
  broken.write_bytes(b"not a video" * 100)
  result = subprocess.run(
      [sys.executable, "-m", "synclipmae_torch.dub_score", f"--synclipmae={exported}",
       f"--video={VIDEO}", f"--video={broken}", f"--syncnet={weights}",
       f"--report={root / 'score.json'}"],
      cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO), capture_output=True,
      text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads((root / "score.json").read_text()), result.stdout


def prepared(video: str, size: int, folder: str) -> list[dict]:
  paths, _ = prepare.prepare_video(video, folder, process.PrepareOptions(image_size=size))
  return grain_pipeline.load_eval_clips(paths)


def test_report_lists_the_scored_video_and_the_broken_one_with_its_reason(report):
  scored, table = report
  assert [os.path.basename(v["video"]) for v in scored["videos"]] == [os.path.basename(VIDEO)]
  assert [os.path.basename(f["video"]) for f in scored["failed"]] == ["broken.mp4"]
  assert "no clip kept: unreadable" in scored["failed"][0]["reason"]
  v = scored["videos"][0]
  assert v["frames"] == 200 and v["clips"] >= 1
  s, n = v["synclipmae"], v["syncnet"]
  assert s["lags"] == list(range(-15, 16)) and len(s["distance"]) == 31
  assert f"| {os.path.basename(VIDEO)} | 200 | {s['sync_c']:.4f} | " in table
  assert f"{n['lse_c']:.3f} | {n['lse_d']:.3f} | {n['offset']:+d} |" in table
  assert "not scored:" in table and "broken.mp4" in table


def test_synclipmae_figures_are_the_tokens_lag_curves(report, folders, tmp_path):
  """With --syncnet the video is prepared once at 224 px; the model's frames are those crops
  resized to its size (Pillow's bicubic filter, as the preparation resamples)."""
  exported, _ = folders
  tokenizer = tokens_lib.SyncTokenizer.from_pretrained(exported)
  clips = prepared(VIDEO, syncnet.CROP, str(tmp_path / "p"))
  n = tokenizer.image_size
  dists = []
  for clip in clips:
    frames = np.stack([np.asarray(Image.fromarray(f).resize((n, n), Image.BICUBIC))
                       for f in clip["frames"]])
    with torch.no_grad():
      out = tokenizer(frames, clip["face_boxes"], clip["mouth_boxes"],
                      torch.from_numpy(clip["audio"]))
    audio, vocal = out["audio"].numpy(), out["vocal"].numpy()
    dists.append(sync_metrics.lag_distance_matrix(audio[15:-15], vocal, 15))
  windows = np.concatenate([sync_metrics.window_curves(d, 5, 15) for d in dists], axis=1)
  s = report[0]["videos"][0]["synclipmae"]
  assert s["windows"] == windows.shape[1]
  np.testing.assert_allclose(s["sync_c"], np.mean(np.median(windows, 0) - windows.min(0)), rtol=1e-6)
  np.testing.assert_allclose(s["in_sync"], np.mean(np.abs(windows.argmin(0) - 15) <= 1))
  curve = np.concatenate(dists, axis=1).mean(1)
  np.testing.assert_allclose(s["distance"], curve, rtol=1e-6)
  assert s["offset"] == int(curve.argmin()) - 15


def test_syncnet_figures_are_syncnet_evaluate_on_the_224_px_crops(report, folders, tmp_path):
  _, weights = folders
  model = syncnet.load_syncnet(weights)
  results = [syncnet.evaluate(model, c["frames"][..., ::-1],
                              np.round(c["audio"] * 32768).astype(np.int16))
             for c in prepared(VIDEO, syncnet.CROP, str(tmp_path / "p"))]
  n = report[0]["videos"][0]["syncnet"]
  total = sum(r.num_windows for r in results)
  assert n["windows"] == total
  np.testing.assert_allclose(n["lse_d"], sum(r.lse_d * r.num_windows for r in results) / total, rtol=1e-5)
  np.testing.assert_allclose(n["lse_c"], sum(r.lse_c * r.num_windows for r in results) / total, rtol=1e-5)
  if len(results) == 1:
    assert n["offset"] == results[0].offset


def test_a_video_without_a_face_is_not_scored(folders, tmp_path):
  exported, _ = folders
  scorer = dub_score.Scorer(exported)
  blank = str(tmp_path / "blank.mp4")
  encode.write_video(blank, np.zeros((60, 64, 64, 3), np.uint8), np.zeros(60 * 640, np.int16))
  result = dub_score.score_videos([blank], scorer)
  assert not result["videos"] and "no clip kept" in result["failed"][0]["reason"]
