"""Timestamps are honoured on a real clip: re-encoded at 30 fps and at a variable frame rate
it prepares to the same duration and the same audio; its audio moved by +200 ms when
re-muxed comes out moved by exactly 3200 samples."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from scipy import signal

from data_pipelines import grain_pipeline
from data_pipelines.prepare import decode
from data_pipelines.prepare import encode
from data_pipelines.prepare import prepare
from data_pipelines.prepare import process
from fixture_paths import HDTF

SOURCE = os.path.join(HDTF, "WDA_KatieHill_000.mp4")
SHIFT = 0.2


def nearest(frames: list[np.ndarray], time: float) -> np.ndarray:
  """The 25 fps source frame nearest to `time` (what a camera at that instant saw)."""
  return frames[min(len(frames) - 1, int(np.floor(time * 25 + 0.5)))]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp("timing")
  frames = list(decode.iter_frames(SOURCE, 0))
  # 30 fps: video re-encoded, the audio stream copied untouched.
  encode.write_video(str(root / "v30.mp4"), [nearest(frames, j / 30) for j in range(240)],
                     None, fps=30, options={"preset": "ultrafast"})
  encode.remux(str(root / "v30.mp4"), str(root / "fps30.mp4"), audio_source=SOURCE)
  # Variable frame rate: frame intervals drawn in [15, 35] ms, the last frame at 7.98 s.
  rng = np.random.default_rng(0)
  times = np.round(np.concatenate([[0], np.cumsum(rng.uniform(0.015, 0.035, 400))]), 3)
  times = np.append(times[times < 7.96], 7.98)
  encode.write_video(str(root / "vvfr.mkv"), [nearest(frames, t) for t in times], None,
                     times=times.tolist(), options={"preset": "ultrafast"})
  encode.remux(str(root / "vvfr.mkv"), str(root / "vfr.mkv"), audio_source=SOURCE)
  # +200 ms: the same packets, audio timestamps moved.
  encode.remux(SOURCE, str(root / "shifted.mp4"), audio_shift=SHIFT)
  rows = [{"path": SOURCE, "speaker": "original"}] + [
      {"path": str(root / name), "speaker": name.split(".")[0]}
      for name in ("fps30.mp4", "vfr.mkv", "shifted.mp4")]
  output = root / "out"
  options = process.PrepareOptions(image_size=32, detect_size=160)
  prepare.prepare(rows, str(output), options, progress=False)
  with open(output / "manifest.jsonl") as f:
    kept = [json.loads(line) for line in f]
  shards = sorted(str(output / p) for p in os.listdir(output) if p.endswith(".array_record"))
  clips = {c["speaker"]: clip for c, clip in zip(kept, grain_pipeline.load_eval_clips(shards))}
  assert [c["clip_id"] for c in kept] == [c["clip_id"] for c in clips.values()]
  return root, kept, clips


def identify(path: str, original: np.ndarray) -> np.ndarray:
  """For every 25 fps frame of `path`, the index of the most similar original frame."""
  frames = np.stack(list(decode.iter_frames(path, 0, (64, 64)))).astype(np.float32)
  return np.array([np.argmin(((original - f) ** 2).mean(axis=(1, 2, 3))) for f in frames])


def test_30_fps_and_variable_frame_rate_give_the_same_clip(prepared):
  root, kept, clips = prepared
  spans = {c["speaker"]: (c["start"], c["end"], c["num_frames"]) for c in kept}
  original = clips["original"]
  for name in ("fps30", "vfr"):
    assert spans[name] == spans["original"] == (0.0, 8.0, 200)
    np.testing.assert_array_equal(clips[name]["audio"], original["audio"])
  # Frame t of each shows what frame t of the original shows.
  reference = np.stack(list(decode.iter_frames(SOURCE, 0, (64, 64)))).astype(np.float32)
  for name in ("fps30.mp4", "vfr.mkv"):
    np.testing.assert_array_equal(identify(str(root / name), reference), np.arange(200))


def test_audio_moved_by_200_ms_comes_out_3200_samples_later(prepared):
  _, _, clips = prepared
  original, shifted = clips["original"]["audio"], clips["shifted"]["audio"]
  lag = round(SHIFT * 16000)
  corr = signal.correlate(shifted, original, mode="full", method="fft")
  assert int(np.argmax(corr)) - (len(original) - 1) == lag
  np.testing.assert_array_equal(shifted[lag:], original[:-lag])
  assert np.abs(shifted[:lag - 1024]).max() < 1e-3  # silence before the audio starts
