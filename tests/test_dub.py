"""`synclipmae-dub` (synclipmae_torch/dub.py) with a tiny dub-train run on an HDTF fixture clip:
a playable mp4 with the source's frame count at 25 fps, the target speech as its audio, the
source's pixels outside the regenerated lower face (within codec tolerance), the face window
regenerated; either control drives either run (a run trained on audio tokens dubs from a driving
video, one trained on video tokens from speech); a clear error without exactly one of them."""


import os

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from configs import dub as dub_configs  # pylint: disable=wrong-import-position
from data_pipelines.prepare import decode, encode  # pylint: disable=wrong-import-position
from fixture_paths import HDTF  # pylint: disable=wrong-import-position
from synclipmae_torch import dub, dub_train  # pylint: disable=wrong-import-position
from test_dub_train import inputs  # pylint: disable=wrong-import-position,unused-import

AOC = os.path.join(HDTF, "WDA_AlexandriaOcasioCortez_000.mp4")
HILL = os.path.join(HDTF, "WDA_KatieHill_000.mp4")


SHORT = 64  # frames of the short source: 3 segments of 17 and a last one of 13, as 200 gives 11 + 1


def first_frames(video, folder):
  """The first SHORT frames of `video` with their sound, re-encoded into `folder`."""
  frames = [f for f, _ in zip(decode.iter_frames(video, 0), range(SHORT))]
  sound, _ = decode.read_audio(video, decode.probe(video).start, SHORT)
  path = str(folder / f"short_{os.path.basename(video)}")
  encode.write_video(path, frames, (sound * 32767).astype(np.int16))
  return path


@pytest.fixture(scope="module")
def short_source(tmp_path_factory):
  """The AOC clip's first SHORT frames: a source to dub."""
  return first_frames(AOC, tmp_path_factory.mktemp("short"))


@pytest.fixture(scope="module")
def short_driving(tmp_path_factory):
  """The Hill clip's first SHORT frames: a driving video (its face tracked in SHORT frames only)."""
  return first_frames(HILL, tmp_path_factory.mktemp("driving"))


@pytest.fixture(scope="module")
def run(inputs, tmp_path_factory):  # pylint: disable=redefined-outer-name
  config = dub_configs.get_config("tiny")
  config.synclipmae, config.shards = inputs
  config.num_train_steps = 2
  workdir = str(tmp_path_factory.mktemp("dub_run"))
  dub_train.train(config, workdir)
  return workdir


def test_dubbed_video_keeps_the_source_outside_the_face_and_carries_the_new_speech(
    run, short_source, tmp_path):
  out = str(tmp_path / "dubbed.mp4")
  report = dub.dub(run, short_source, out, speech=HILL, size=32, steps=2)
  source = list(decode.iter_frames(short_source, 0))
  dubbed = list(decode.iter_frames(out, 0))
  info = decode.probe(out)
  assert len(dubbed) == len(source) == report["frames"] == SHORT
  assert info.average_fps == pytest.approx(25.0)
  assert report["segments"] == 4  # 3 x 17 + 13
  x0, y0, x1, y1 = report["regenerated_box"]
  outside = np.ones(source[0].shape[:2], bool)
  outside[y0:y1, x0:x1] = False
  diff = np.abs(np.stack(dubbed).astype(np.int16) - np.stack(source).astype(np.int16))
  assert diff[:, outside].mean() < 2.0  # the source's pixels, re-encoded once
  assert diff[:, ~outside].mean() > diff[:, outside].mean() + 1.0  # the lower face regenerated
  speech, _ = decode.read_audio(HILL, decode.probe(HILL).start, SHORT)
  audio, _ = decode.read_audio(out, info.start, SHORT)
  assert np.corrcoef(speech, audio)[0, 1] > 0.95


def test_a_dub_needs_exactly_one_control(run, tmp_path):
  with pytest.raises(ValueError, match="give either a speech track"):
    dub.dub(run, AOC, str(tmp_path / "x.mp4"), size=32, steps=1)
  with pytest.raises(ValueError, match="give either a speech track"):
    dub.dub(run, AOC, str(tmp_path / "x.mp4"), speech=HILL, driving_video=HILL, size=32, steps=1)
  with pytest.raises(ValueError, match="size=30 must be a multiple of 16"):
    dub.dub(run, AOC, str(tmp_path / "x.mp4"), speech=HILL, size=30, steps=1)
  assert not os.path.exists(tmp_path / "x.mp4")


def crossed_dub(workdir, source, out, **target):
  """Dubs `source` (1 step at 32 px) and checks what any control gives: SHORT frames with the
  target's sound (the speech, or the driving video's), the source kept outside the regenerated
  box and the lower face regenerated inside it; returns the report."""
  report = dub.dub(workdir, source, out, size=32, steps=1, **target)
  dubbed = np.stack(list(decode.iter_frames(out, 0))).astype(np.int16)
  original = np.stack(list(decode.iter_frames(source, 0))).astype(np.int16)
  assert report["frames"] == len(dubbed) == SHORT
  x0, y0, x1, y1 = report["regenerated_box"]
  outside = np.ones(original.shape[1:3], bool)
  outside[y0:y1, x0:x1] = False
  diff = np.abs(dubbed - original)
  assert diff[:, outside].mean() < 2.0  # the source's pixels, re-encoded once
  assert diff[:, ~outside].mean() > diff[:, outside].mean() + 1.0  # the lower face regenerated
  sound_of = next(iter(target.values()))
  sound, _ = decode.read_audio(sound_of, decode.probe(sound_of).start, SHORT)
  audio, _ = decode.read_audio(out, decode.probe(out).start, SHORT)
  assert np.corrcoef(sound, audio)[0, 1] > 0.95
  return report


def test_a_run_trained_on_audio_tokens_dubs_from_a_driving_video(run, short_source, short_driving,
                                                                 tmp_path):
  report = crossed_dub(run, short_source, str(tmp_path / "driven.mp4"), driving_video=short_driving)
  assert (report["trained_tokens"], report["control"]) == ("audio", "video")


def test_a_run_trained_on_video_tokens_dubs_from_speech(inputs, short_source, tmp_path):  # pylint: disable=redefined-outer-name
  config = dub_configs.get_config("tiny")
  config.synclipmae, config.shards = inputs
  config.num_train_steps, config.tokens = 1, "video"
  workdir = str(tmp_path / "video_run")
  dub_train.train(config, workdir)
  report = crossed_dub(workdir, short_source, str(tmp_path / "spoken.mp4"), speech=HILL)
  assert (report["trained_tokens"], report["control"]) == ("video", "audio")


def test_each_segments_window_follows_a_moving_speaker(run, tmp_path):
  """The HDTF clip panned 1 px per frame across a wider canvas: every segment's face window moves
  with the face, and only pixels inside the windows change."""
  source = list(decode.iter_frames(AOC, 0))
  canvas = np.zeros((len(source), 512, 512 + 200, 3), np.uint8)
  for t, frame in enumerate(source):
    canvas[t, :, t:t + 512] = frame
  speech, _ = decode.read_audio(AOC, decode.probe(AOC).start, len(source))
  panned = str(tmp_path / "panned.mp4")
  encode.write_video(panned, list(canvas), (speech * 32767).astype(np.int16))
  out = str(tmp_path / "dubbed.mp4")
  report = dub.dub(run, panned, out, speech=HILL, size=32, steps=1)
  windows = np.array(report["windows"], np.float64)
  assert len(windows) == report["segments"] == 12
  # The windows' centres move with the pan (the speaker's own head motion adds a few pixels):
  # about 17 px per 17-frame segment.
  centres = (windows[:, 0] + windows[:, 2]) / 2
  segment_starts = np.arange(12) * 17
  slope = np.polyfit(segment_starts, centres, 1)[0]
  assert 0.7 < slope < 1.3, (slope, windows.tolist())
  dubbed = np.stack(list(decode.iter_frames(out, 0))).astype(np.int16)
  inside = np.zeros(canvas.shape[1:3], bool)
  for x0, y0, x1, y1 in report["windows"]:
    inside[y0:y1, x0:x1] = True
  original = np.stack(list(decode.iter_frames(panned, 0))).astype(np.int16)
  assert np.abs(dubbed - original)[:, ~inside].mean() < 2.0
