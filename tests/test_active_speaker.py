"""Who speaks in a video with several faces (synclipmae_jax/active_speaker.py) and the tools that
measure it (`synclipmae-fix-sync`, `synclipmae-sync-eval --videos`).

Unit tests on constructed lag-distance matrices (a speaking track has a clear minimum at its
lag, a listener's curve is noise), then, with the run that has learnt sync (conftest.quick_run),
synthetic talking faces of unseen speakers side by side: 2 and 3 faces per frame, one speaking
in sync with the audio track, the others moving with other clips' speech, with and without a
known audio shift. A plugged detector (`TileDetector`) gives one box per face tile (no
landmarks, crop margin 0: the crops are the tiles). The right face is the active speaker in
>= 90 % of the measured frames, the file's lag is that face's within +-1 frame, every face is
reported with its own curve; when the speaker changes half way the time line switches within
1 s (the median of three speaker pairs; every one within the window's and the audio context's
reach); the fix-sync command corrects a two-face video shifted by +6 frames to 0 +- 1 with its
video packets identical; `synclipmae-prepare --multiple_faces=active_speaker` keeps the speaking
face's clip and rejects the listener's."""

import csv
import glob
import json
import os
import types

import jax
import numpy as np
import pytest

from data_pipelines import grain_pipeline, schema
from data_pipelines.prepare import encode, face_detector, prepare, rejects, report, shards
from data_pipelines.synthetic import identity as identity_lib
from data_pipelines.synthetic import talking_face
from synclipmae_jax import active_speaker, sync_metrics
from synclipmae_jax.tools import fix_sync, sync_eval
from test_shift_audio import video_packets

SIZE = 96  # face tile side; the preparation resizes the crops to the model's 48
FRAMES = 150  # 6 s per video
SPEAKERS = (900_010, 900_011, 900_012)  # never among the training identities (0 .. 39)
S = 15  # the quick run's max_lag


# ---------------------------------------------------------------- unit tests (no model)

def dist_with_minimum(lag: int, frames: int, rng, depth: float = 0.3) -> np.ndarray:
  """[2S+1, frames] distances around 1 with noise, lower by `depth` at `lag`."""
  d = 1.0 + 0.05 * rng.standard_normal((2 * S + 1, frames))
  d[lag + S] -= depth
  return d


def test_the_track_with_a_clear_minimum_speaks_and_gives_the_file_its_lag():
  rng = np.random.default_rng(0)
  tracks = {7: [(S, dist_with_minimum(4, 100, rng))],
            9: [(S, 1.0 + 0.05 * rng.standard_normal((2 * S + 1, 100)))]}
  a = active_speaker.analyse(tracks, 130, S)
  assert a["names"] == [7, 9]
  assert (a["speakers"][:S] == active_speaker.UNMEASURED).all()
  assert (a["speakers"][S:S + 100] == 0).all() and (a["speakers"][S + 100:] < 0).all()
  assert a["file"]["estimate"] == 4 and a["file"]["frames"] == 100
  assert a["tracks"][7]["estimate"] == 4 and a["tracks"][7]["speaking_frames"] == 100
  assert a["tracks"][9]["speaking_frames"] == 0 and a["tracks"][9]["frames"] == 100
  assert [(r["start_frame"], r["stop_frame"], r["track"], r["reason"]) for r in a["timeline"]] == [
      (0, S, None, "not measured"), (S, S + 100, 7, None), (S + 100, 130, None, "not measured")]
  # The file's curve is the speaker's columns only: the listener's noise does not enter it.
  np.testing.assert_allclose(a["file"]["distance"], tracks[7][0][1].mean(axis=1))


def test_two_equally_clear_faces_give_nobody_and_a_lone_face_needs_no_margin():
  rng = np.random.default_rng(1)
  both = {0: [(0, dist_with_minimum(2, 60, rng))], 1: [(0, dist_with_minimum(2, 60, rng))]}
  a = active_speaker.analyse(both, 60, S)
  assert (a["speakers"] == active_speaker.NOBODY).all() and a["file"] is None
  lone = active_speaker.analyse({0: both[0]}, 60, S)
  assert (lone["speakers"] == 0).all() and lone["file"]["estimate"] == 2
  high = active_speaker.analyse({0: both[0]}, 60, S, active_speaker.Options(min_confidence=10.0))
  assert high["file"] is None


def test_window_score_is_the_centred_window_sync_c_moved_inside_its_run():
  rng = np.random.default_rng(2)
  d = np.full((2 * S + 1, 50), np.nan)
  d[:, 5:45] = dist_with_minimum(0, 40, rng)
  conf = active_speaker.window_scores(d, 11, S)
  assert np.isnan(conf[:5]).all() and np.isnan(conf[45:]).all()
  reference = sync_metrics.window_confidences(d[:, 5:45], 11, S)  # windows at stride 1
  assert conf[5 + 20] == reference[20 - 5]  # centred on frame 20 of the run
  assert conf[5] == conf[5 + 5] == reference[0]  # the run's first frames use its first window
  assert conf[44] == reference[-1]
  short = active_speaker.window_scores(d[:, :12], 25, S)  # a 7-frame run: one window
  assert np.all(short[5:] == short[5])
  # At a given lag: the window's median minus its mean distance at that lag.
  at = active_speaker.window_scores(d, 11, S, at_lag=3)
  window = d[:, 20:31]  # frame 25's window
  assert at[25] == pytest.approx(np.median(window.mean(axis=1)) - window[3 + S].mean())


def test_a_face_whose_own_minimum_is_at_another_lag_is_not_the_speaker():
  """Pass 2 scores every face at the file's lag: a listener whose curve happens to dip deeper at
  another lag for a while speaks in pass 1 there, no longer in pass 2."""
  rng = np.random.default_rng(4)
  speaker = dist_with_minimum(4, 150, rng)
  listener = 1.0 + 0.05 * rng.standard_normal((2 * S + 1, 150))
  listener[-9 + S, :50] -= 0.4
  tracks = {"speaker": [(0, speaker)], "listener": [(0, listener)]}
  first = active_speaker.decide(np.stack([active_speaker.window_scores(d, 50, S)
                                          for d in (speaker, listener)]), active_speaker.Options())
  assert (first[:10] == 1).all()  # pass 1: the listener's dip wins its first frames
  a = active_speaker.analyse(tracks, 150, S)
  assert a["file"]["estimate"] == 4 and (a["speakers"] == 0).all()
  assert a["tracks"]["listener"]["speaking_frames"] == 0


def test_switching_speakers_switch_the_time_line_and_options_are_checked():
  rng = np.random.default_rng(3)
  a_dist = np.concatenate([dist_with_minimum(0, 50, rng), 1 + 0.05 * rng.standard_normal((31, 50))],
                          axis=1)
  b_dist = np.concatenate([1 + 0.05 * rng.standard_normal((31, 50)), dist_with_minimum(0, 50, rng)],
                          axis=1)
  a = active_speaker.analyse({"A": [(0, a_dist)], "B": [(0, b_dist)]}, 100, S,
                             active_speaker.Options(window=25))
  runs = [(r["track"], r["start_frame"], r["stop_frame"]) for r in a["timeline"]]
  assert [r[0] for r in runs if r[0] is not None] == ["A", "B"]
  # The window (25 frames) around the change sees both halves: nobody for at most its width.
  assert runs[0][1] == 0 and runs[-1][2] == 100 and 50 - 12 <= runs[-1][1] <= 50 + 12
  for bad, match in (({"window": 0}, "window"), ({"margin": 0.5}, "margin"),
                     ({"min_confidence": -1.0}, "min_confidence")):
    with pytest.raises(ValueError, match=match):
      active_speaker.Options(**bad)


# ---------------------------------------------------------------- with the quick-trained run

class TileDetector:
  """One face per square tile of the frame (the videos below are tiles side by side), no
  landmarks."""

  def detect(self, images):
    out = []
    for im in images:
      h, w = im.shape[:2]
      out.append([face_detector.Face(np.array([i * h, 0, (i + 1) * h, h], np.float32), 1.0)
                  for i in range(w // h)])
    return out


PREPARATION = {"detector": "tests.test_active_speaker:TileDetector", "margin": 0.0}


def render(speaker: int, frames: int = FRAMES):
  return talking_face.generate_clip(identity_lib.make_identity(speaker, 0), clip_id=speaker,
                                    num_frames=frames, image_size=SIZE, speech_seed=speaker,
                                    ambient_seed=speaker)


@pytest.fixture(scope="module")
def clips():
  return [render(s) for s in SPEAKERS]


@pytest.fixture(scope="module")
def estimator(quick_run):
  """One restored model for every video of this file."""
  return fix_sync.Estimator(quick_run, **PREPARATION)


def side_by_side(path: str, faces, audio, lag: int = 0) -> str:
  """Writes the faces' frames side by side with `audio`, its sound `lag` frames early."""
  frames = np.concatenate([c.frames for c in faces], axis=2)
  if lag == 0:
    encode.write_video(path, frames, audio)
    return path
  encode.write_video(path + ".src.mp4", frames, audio)
  encode.remux(path + ".src.mp4", path, audio_shift=-lag / 25, keep_duration=True)
  os.remove(path + ".src.mp4")
  return path


def tile_of(track: dict) -> int:
  return round(track["face_box"][0] / SIZE)


def check(report: dict, speaker_tile: int, faces: int, lag: int):
  assert len(report["tracks"]) == faces and sorted(map(tile_of, report["tracks"])) == list(
      range(faces))
  speaking = {tile_of(t): t for t in report["tracks"]}
  measured = max(t["measured_frames"] for t in report["tracks"])
  assert speaking[speaker_tile]["speaking_frames"] >= 0.9 * measured, report["tracks"]
  assert abs(report["lag_frames"] - lag) <= 1, report["lag_frames"]
  assert abs(speaking[speaker_tile]["lag_frames"] - lag) <= 1
  for t in report["tracks"]:
    assert len(t["distance"]) == 2 * S + 1 and t["share"] == pytest.approx(1.0)
    if tile_of(t) != speaker_tile:  # a listener: its own curve, less confident than the speaker's
      assert t["confidence"] < speaking[speaker_tile]["confidence"]


@pytest.mark.slow
@pytest.mark.parametrize("faces,speaker_tile,lag", [(2, 1, 0), (2, 0, -4), (3, 1, 5)])
def test_the_face_in_sync_is_the_active_speaker_and_gives_the_lag(
    estimator, clips, tmp_path, faces, speaker_tile, lag):
  order = list(clips[1:faces])
  order.insert(speaker_tile, clips[0])  # the face whose speech is the audio track
  path = side_by_side(str(tmp_path / "faces.mp4"), order, clips[0].audio, lag)
  report = estimator(path)
  check(report, speaker_tile, faces, lag)


def switch_frame(report: dict, n: int) -> float:
  """Where the time line of `report` switches from tile 0 to tile 1: the middle of the frames
  that leave the fewest frames on the wrong side (tile 1 said to speak before, tile 0 after)."""
  tiles = {t["track"]: tile_of(t) for t in report["tracks"]}
  said = np.full(n, -1)  # per frame: the tile of the speaker, -1 for nobody or unmeasured
  for r in report["speakers"]:
    if r["track"] is not None:
      said[r["start_frame"]:r["stop_frame"]] = tiles[r["track"]]
  errors = np.array([(said[:c] == 1).sum() + (said[c:] == 0).sum() for c in range(n + 1)])
  return float(np.flatnonzero(errors == errors.min()).mean())


@pytest.mark.slow
def test_the_time_line_follows_a_change_of_speaker(estimator, tmp_path):
  """Faces A and B side by side, the audio A's speech then B's. A frame's decision reads the
  audio within window / 2 frames, and each audio token its encoder's context, on each side: the
  time line cannot switch further than their sum from the change. With the quick run, it
  switches within 1 s of the change for most speaker pairs (the median of three here)."""
  n, half = 200, 100
  reach = (active_speaker.Options().window // 2
           + estimator.config.model.audio.input_context_frames)
  switches = []
  for first, second in zip(SPEAKERS, SPEAKERS[1:] + SPEAKERS[:1]):
    a, b = render(first, n), render(second, n)
    audio = np.concatenate([a.audio[:640 * half], b.audio[640 * half:]])
    report = estimator(side_by_side(str(tmp_path / "change.mp4"), [a, b], audio))
    switches.append(switch_frame(report, n))
    assert abs(report["lag_frames"]) <= 1
  assert all(abs(s - half) <= reach for s in switches), (switches, reach)
  assert abs(np.median(switches) - half) <= schema.FPS, switches


@pytest.mark.slow
def test_fix_sync_corrects_a_two_face_video_on_its_speaker(quick_run, estimator, clips, tmp_path,
                                                            capsys):
  source = side_by_side(str(tmp_path / "two.mp4"), clips[:2], clips[0].audio, lag=6)
  out, report_path = tmp_path / "fixed.mp4", tmp_path / "report.json"
  defaults = active_speaker.Options()
  fix_sync.main(types.SimpleNamespace(  # the command's flags (`fix_sync.run`)
      workdir=quick_run, step=None, video=source, detector=PREPARATION["detector"], crop_margin=0.0,
      out=str(out), report=str(report_path), min_confidence=0.0, speaker_window=defaults.window,
      speaker_margin=defaults.margin, speaker_min_confidence=defaults.min_confidence))
  stdout = capsys.readouterr().out
  report = json.loads(report_path.read_text())
  assert abs(report["lag_frames"] - 6) <= 1 and len(report["tracks"]) == 2
  assert "track 0: box 0 0 96 96" in stdout and "who speaks:" in stdout
  assert video_packets(str(out)) == video_packets(source)
  assert abs(estimator(str(out))["lag_frames"]) <= 1
  # sync-eval --videos reports both faces with their curves, and the time line.
  evaluated = sync_eval.evaluate_videos(quick_run, str(out), **PREPARATION)
  paths = sync_eval.write_report(evaluated, str(tmp_path / "eval"))
  md = open(paths["markdown"]).read()
  assert md.count("| fixed.mp4 | ") == 3 and "who speaks" in md
  assert set(paths) >= {sync_eval.CURVES_PNG, sync_eval.SPEAKERS_PNG}


@pytest.mark.slow
def test_prepare_keeps_the_speaking_face_and_rejects_the_listener(quick_run, clips, tmp_path):
  """synclipmae-prepare --multiple_faces=active_speaker on two faces side by side, the audio the
  left one's speech: the left face's clip is kept, cropped on it; the right face's is rejected as
  not speaking, with the left named as the speaker; the default still rejects both."""
  source = side_by_side(str(tmp_path / "two.mp4"), clips[:2], clips[0].audio)
  manifest = tmp_path / "videos.jsonl"
  manifest.write_text(json.dumps({"path": source, "speaker": "s", "split": "train"}) + "\n")

  def prepare_with(out: str, *flags):
    summary = prepare.main(["--manifest", str(manifest), "--output", str(tmp_path / out),
                            "--workers=0", f"--detector={PREPARATION['detector']}", "--margin=0",
                            "--image_size=48", "--no_progress", *flags])
    with open(tmp_path / out / report.MANIFEST, encoding="utf-8") as f:
      kept = [json.loads(line) for line in f if line.strip()]
    with open(tmp_path / out / report.REJECTS, encoding="utf-8") as f:
      rejected = list(csv.DictReader(f, delimiter="\t"))
    return summary, kept, rejected

  summary, kept, rejected = prepare_with("speaker", "--multiple_faces=active_speaker",
                                         f"--speaker_model={quick_run}")
  assert [c["face_box"] for c in kept] == [[0.0, 0.0, SIZE, SIZE]]
  assert [(r["reason"], float(r["start"]), float(r["end"])) for r in rejected] == [
      (rejects.NOT_SPEAKING, 0.0, FRAMES / schema.FPS)]
  listener = 1 - kept[0]["track"]
  assert rejected[0]["detail"].startswith(f"face track {listener} is the active speaker in ")
  assert f"track {kept[0]['track']} in " in rejected[0]["detail"]
  # The kept clip is the left tile, resized to 48 px.
  (clip,) = grain_pipeline.load_eval_clips(
      glob.glob(str(tmp_path / "speaker" / ("*" + shards.SUFFIX))), max_clips=1)
  tiles = [np.asarray(jax.image.resize(c.frames.astype(np.float32), (FRAMES, 48, 48, 3), "linear"))
           for c in clips[:2]]
  error = [np.abs(clip["frames"].astype(np.float32) - t).mean() for t in tiles]
  assert error[0] < error[1] / 4, error
  default = prepare_with("default")
  assert default[1] == [] and [r["reason"] for r in default[2]] == [rejects.SEVERAL_FACES]
  with pytest.raises(SystemExit):
    prepare_with("no_model", "--multiple_faces=active_speaker")
  with pytest.raises(FileNotFoundError, match="is not a training workdir"):  # before any file
    prepare_with("bad_model", "--multiple_faces=active_speaker", f"--speaker_model={tmp_path}")
