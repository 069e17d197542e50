"""`synclipmae-dub-score` (synclipmae_torch/dub_score.py) on a real HDTF clip with the tiny run
exported to PyTorch and SyncNet with random weights: the command's report and table, its figures
equal to the tokens' and SyncNet's own computations on the same prepared clips, a broken file
reported with its reason while the other is scored; with every evaluator (SyncNet; StableSyncNet,
FID Inception and I3D with narrow random weights in their file layouts), all columns for two short
rendered videos against a reference, the new figures equal to their modules' computations on the
same prepared clips. (That the score finds real shifts with a model that has learnt sync:
tests/test_drift_estimates.py; the evaluators' networks: tests/test_fid_inception.py,
tests/test_i3d.py, tests/test_stable_syncnet.py, tests/test_frechet.py.)"""

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
# pylint: disable-next=wrong-import-position
from data_pipelines.synthetic import identity as identity_lib, talking_face
from fixture_paths import HDTF  # pylint: disable=wrong-import-position
from random_weights import randomize  # pylint: disable=wrong-import-position
from synclipmae_jax import checkpointing, sync_metrics  # pylint: disable=wrong-import-position
# pylint: disable-next=wrong-import-position
from synclipmae_torch import dub_score, export, fid_inception, frechet, i3d, stable_syncnet, syncnet
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


SHORT_FRAMES = 56  # 2.24 s: the preparation keeps clips of >= 2 s; 11 StableSyncNet windows
EVALUATOR_FLAGS = ("stable_syncnet", "fid_inception", "i3d")


@pytest.fixture(scope="module")
def evaluator_weights(tmp_path_factory):
  """{flag: file} of narrow random StableSyncNet (widths 32, 64 last), FID Inception and I3D
  (widths / 16) in their public files' layouts (LatentSync's {"state_dict": ...} checkpoint)."""
  root = tmp_path_factory.mktemp("evaluators")
  narrow = lambda config: dict(config, widths=[32] * (len(config["widths"]) - 1) + [64])
  sixteenth = lambda name, width: max(2, width // 16)
  models = {"stable_syncnet": randomize(stable_syncnet.StableSyncNet(
                narrow(stable_syncnet.VISUAL), narrow(stable_syncnet.AUDIO)), seed=1),
            "fid_inception": randomize(fid_inception.FidInceptionV3(sixteenth), seed=2),
            "i3d": randomize(i3d.I3D(sixteenth), seed=3)}
  out = {}
  for flag, model in models.items():
    out[flag] = str(root / f"{flag}.pt")
    state = model.state_dict()
    torch.save({"state_dict": state} if flag == "stable_syncnet" else state, out[flag])
  return out


@pytest.fixture(scope="module")
def short_videos(tmp_path_factory):
  """Two rendered talking faces to score and a third as the reference, 56 frames each."""
  folder = tmp_path_factory.mktemp("short")
  paths = []
  for speaker in (900_010, 900_011, 900_012):
    clip = talking_face.generate_clip(identity_lib.make_identity(speaker, 0), clip_id=speaker,
                                      num_frames=SHORT_FRAMES, image_size=128,
                                      speech_seed=speaker, ambient_seed=speaker)
    paths.append(str(folder / f"{speaker}.mp4"))
    encode.write_video(paths[-1], clip.frames, clip.audio)
  return paths


@pytest.fixture(scope="module")
def full_report(folders, evaluator_weights, short_videos, tmp_path_factory):
  """The command with every evaluator: SyncNet (full size, random), StableSyncNet, FID
  Inception and I3D (narrow, random)."""
  exported, syncnet_weights = folders
  out = tmp_path_factory.mktemp("full") / "score.json"
  result = subprocess.run(
      [sys.executable, "-m", "synclipmae_torch.dub_score", f"--synclipmae={exported}",
       f"--video={short_videos[0]}", f"--video={short_videos[1]}",
       f"--reference={short_videos[2]}",
       "--detector=whole_frame", "--crop_margin=0", f"--syncnet={syncnet_weights}",
       f"--report={out}"]
      + [f"--{flag}={evaluator_weights[flag]}" for flag in EVALUATOR_FLAGS],
      cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO, OMP_NUM_THREADS="1"),
      capture_output=True, text=True, timeout=900)  # one thread: small convolutions beside the
  # other test worker spend more CPU time in waiting threads than in arithmetic
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(out.read_text()), result.stdout


@pytest.fixture
def one_thread():
  """torch on one thread for the test (see full_report), restored after it."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_all_columns_for_two_videos_against_a_reference(full_report, evaluator_weights,
                                                         short_videos, tmp_path):
  """Every column printed and filled; StableSyncNet's figures (of the first video), FID and FVD
  equal to the modules' own computations on the same prepared clips (256 px crops: StableSyncNet's
  face side and FID / FVD's; SyncNet's figures: the HDTF tests above)."""
  report, table = full_report
  assert [os.path.basename(v["video"]) for v in report["videos"]] == [
      os.path.basename(p) for p in short_videos[:2]]
  assert not report["failed"] and report["references"] == [os.path.abspath(short_videos[2])]
  header = ("| video | frames | SyncLipMAE Sync-C | in sync (+-1) | offset / confidence | "
            "SyncNet LSE-C | LSE-D | offset | StableSyncNet Sync-C | offset |")
  assert header in table
  options = process.PrepareOptions(image_size=stable_syncnet.FACE, margin=0.0)
  prepared = []
  for path in short_videos:
    paths, _ = prepare.prepare_video(path, str(tmp_path / os.path.basename(path)), options,
                                     "whole_frame")
    prepared.append(grain_pipeline.load_eval_clips(paths))
  model = stable_syncnet.load(evaluator_weights["stable_syncnet"])
  for i, (v, clips) in enumerate(zip(report["videos"], prepared)):
    s, n, st = v["synclipmae"], v["syncnet"], v["stable_syncnet"]
    assert st["windows"] == sum(len(c["frames"]) - 45 for c in clips)
    if i == 0:
      dist = np.concatenate([stable_syncnet.distance_matrix(model, c["frames"], c["audio"])
                             for c in clips])
      assert st["windows"] == len(dist)
      np.testing.assert_allclose(st["sync_c"], np.mean(np.median(dist, 1) - dist.min(1)),
                                 rtol=1e-5)
      assert st["offset"] == -(int(dist.mean(0).argmin()) - 15)
    row = (f"| {os.path.basename(v['video'])} | {v['frames']} | {s['sync_c']:.4f} | "
           f"{100 * s['in_sync']:.1f} % | {s['offset']:+d} / {s['confidence']:.4f} | "
           f"{n['lse_c']:.3f} | {n['lse_d']:.3f} | {n['offset']:+d} | "
           f"{st['sync_c']:.4f} | {st['offset']:+d} |")
    assert row in table
  inception = fid_inception.load(evaluator_weights["fid_inception"])
  network = i3d.load(evaluator_weights["i3d"])
  frames = lambda sets: np.concatenate([c["frames"] for clips in sets for c in clips])
  clips16 = lambda sets: dub_score.clips_of([c for clips in sets for c in clips])
  fid = frechet.features_distance(fid_inception.frame_features(inception, frames(prepared[:2])),
                                  fid_inception.frame_features(inception, frames(prepared[2:])))
  fvd = frechet.features_distance(i3d.clip_features(network, clips16(prepared[:2])),
                                  i3d.clip_features(network, clips16(prepared[2:])))
  q = report["quality"]
  assert q["fid"]["samples"] == 2 * SHORT_FRAMES and q["fid"]["reference_samples"] == SHORT_FRAMES
  assert q["fvd"]["samples"] == 2 * (SHORT_FRAMES // 16)
  np.testing.assert_allclose(q["fid"]["value"], fid, rtol=1e-4)
  np.testing.assert_allclose(q["fvd"]["value"], fvd, rtol=1e-4)
  assert f"FID: {q['fid']['value']:.3f} ({2 * SHORT_FRAMES} frames" in table
  assert f"FVD: {q['fvd']['value']:.3f} ({2 * (SHORT_FRAMES // 16)} 16-frame clips" in table


def test_fid_and_fvd_need_references_and_weights(folders, evaluator_weights, short_videos,
                                                 tmp_path):
  exported, _ = folders
  plain = dub_score.Scorer(exported)
  with pytest.raises(ValueError, match="give both --reference"):
    dub_score.score_videos(short_videos[:1], plain, references=short_videos[2:])
  with pytest.raises(FileNotFoundError, match="--i3d: .*absent.pt"):
    dub_score.Scorer(exported, evaluators=dub_score.Evaluators(i3d=str(tmp_path / "absent.pt")))
  broken = tmp_path / "broken.pt"
  torch.save({"Conv3d_1a_7x7.conv3d.weight": torch.zeros(4, 3, 7, 7, 7)}, broken)
  with pytest.raises(ValueError, match=r"--i3d: .*no 'Conv3d_2b_1x1\.conv3d\.weight'"):
    dub_score.Scorer(exported, evaluators=dub_score.Evaluators(i3d=str(broken)))
  scorer = dub_score.Scorer(exported, evaluators=dub_score.Evaluators(
      fid_inception=evaluator_weights["fid_inception"]))
  with pytest.raises(ValueError, match="need --reference"):
    dub_score.score_videos(short_videos[:1], scorer)
