"""The probes score per video as the paper does (4.2 and appendix): a video's frames sampled
uniformly over it (frame-averaging, or clips for clip-based baselines), its logits the mean over
the samples, one figure per video; against per-window scoring on features built so the two
differ."""

from fractions import Fraction

import numpy as np
import pytest

from configs import demo
from data_pipelines import schema
from synclipmae_jax.evaluators import common as evaluators
from synclipmae_jax.evaluators import probe as probe_evaluator
from synclipmae_jax.models import synclipmae


@pytest.mark.parametrize("num_frames,count", [(80, 16), (80, 80), (300, 16), (301, 80), (17, 16),
                                              (5, 2), (7, 1)])
def test_frames_are_the_centres_of_equal_segments(num_frames, count):
  idx = probe_evaluator.sample_indices(num_frames, count, "frames", 16)
  assert idx.shape == (count, 1)
  idx = idx[:, 0]
  # Naive reference in exact rationals: the floor of each segment's centre (i + 1/2) n / k.
  step = Fraction(num_frames, count)
  assert idx.tolist() == [int((i + Fraction(1, 2)) * step) for i in range(count)]
  # Spread over the whole video: increasing, evenly spaced, the ends within half a segment.
  gaps = np.diff(idx)
  assert set(gaps.tolist()) <= {num_frames // count, -(-num_frames // count)}
  assert idx[0] <= step / 2 and num_frames - 1 - idx[-1] <= step / 2
  assert idx.min() >= 0 and idx.max() < num_frames


@pytest.mark.parametrize("num_frames,count", [(5, 16), (3, 80), (16, 80), (1, 16)])
def test_a_short_video_is_sampled_with_repetition(num_frames, count):
  idx = probe_evaluator.sample_indices(num_frames, count, "frames", 16)[:, 0]
  assert np.all(np.diff(idx) >= 0)
  times = np.bincount(idx, minlength=num_frames)
  # Every frame, each floor or ceil of count / num_frames times: as even as whole draws allow.
  assert len(times) == num_frames and set(times.tolist()) <= {count // num_frames,
                                                              -(-count // num_frames)}


@pytest.mark.parametrize("num_frames,count,clip", [(80, 80, 16), (300, 80, 16), (100, 16, 16),
                                                   (20, 48, 16), (10, 32, 16)])
def test_clips_are_contiguous_and_spread_from_first_to_last_frame(num_frames, count, clip):
  idx = probe_evaluator.sample_indices(num_frames, count, "clips", clip)
  assert idx.shape == (count // clip, clip)
  if num_frames < clip:  # each clip reads the whole video, frames repeated
    for row in idx:
      assert set(np.bincount(row, minlength=num_frames).tolist()) <= {clip // num_frames,
                                                                      -(-clip // num_frames)}
    return
  assert np.all(np.diff(idx, axis=1) == 1)
  starts = idx[:, 0]
  if len(starts) == 1:  # one clip: centred
    assert starts[0] == (num_frames - clip) // 2
  else:
    assert starts[0] == 0 and idx[-1, -1] == num_frames - 1
    exact = [Fraction(j * (num_frames - clip), len(starts) - 1) for j in range(len(starts))]
    assert all(abs(s - e) <= Fraction(1, 2) for s, e in zip(starts.tolist(), exact))
  if num_frames == count:  # 80 frames as 5 clips of 16: every frame once
    assert sorted(idx.reshape(-1).tolist()) == list(range(num_frames))


def _evaluator(clips, **options):
  config = demo.get_config("tiny")
  entry = probe_evaluator.entry_of(config)
  evaluators.override(entry, dict(dict(feature="vocal", frames=[16], tasks=["emotion"], steps=200,
                                       learning_rates=[0.05], weight_decays=[0.0]), **options),
                      config)
  return probe_evaluator.Evaluator(entry, config, model=synclipmae.build(config.model), clips=clips)


def test_the_probe_scores_videos_not_windows():
  """Test videos of 48 frames show another class's feature on their first 16 frames and their
  own class's on the last 32. Per window of 16 frames a third of the windows look like the other
  class (66.7 % by the clean classifier trained below); per video the 16 uniformly sampled
  frames hold 5 of the first third and 11 of the rest, their mean points to the video's class,
  and every test video is right."""
  num_classes, n = len(schema.EMOTION_NAMES), 48
  dim = num_classes  # no coordinate of noise alone for the probe to fit
  rng = np.random.default_rng(0)
  basis = np.eye(num_classes, dim, dtype=np.float32)

  def parts(rows):  # frame_features.PARTS [N, 4, D] with `rows` as the vocal-motion token
    out = np.zeros((len(rows), 4, dim), np.float32)
    out[:, 1] = rows
    return out

  def clean(label):
    return parts(basis[label] + rng.normal(0, 0.1, (n, dim)).astype(np.float32))

  def mixed(label):
    rows = np.repeat(basis[[(label + 1) % num_classes, label]], [16, 32], axis=0)
    return parts(rows + rng.normal(0, 0.1, (n, dim)).astype(np.float32))

  labels = {"train": np.arange(40) % num_classes, "validation": np.arange(10) % num_classes,
            "test": np.arange(10) % num_classes}
  make = {"train": clean, "validation": clean, "test": mixed}
  features = {s: [make[s](int(e)) for e in labels[s]] for s in schema.SPLITS}
  clips = {s: [{"emotion": int(e), "actions": None, "frames": np.zeros((n, 1, 1, 3), np.uint8)}
               for e in labels[s]] for s in schema.SPLITS}
  metrics, details = _evaluator(clips).fit(features)
  assert details["emotion@16"]["num_videos"] == {"train": 40, "validation": 10, "test": 10}
  assert metrics["probe/emotion_acc@16"] == 100.0
  # The per-window answer would differ: the windows' mean features, classified by their largest
  # coordinate (what the clean training data teaches), get a third of the test windows wrong.
  windows = [f[s:s + 16, 1].mean(0) for f in features["test"] for s in range(0, n, 16)]
  truth = np.repeat(labels["test"], 3)
  assert np.mean(np.argmax(windows, 1) == truth) == pytest.approx(2 / 3)
  # And the clip-based protocol on the same videos: one centred clip of 16 frames, [16, 32),
  # shows the video's own class only: right as well; 3 clips of 16 cover the whole video.
  assert probe_evaluator.sample_indices(n, 16, "clips", 16)[0, 0] == 16
  metrics, _ = _evaluator(clips, protocol="clips").fit(features)
  assert metrics["probe/emotion_acc@16"] == 100.0


def test_clip_protocol_averages_clip_features():
  """protocol=clips: the video's feature is the mean over its clips of each clip's mean frame
  feature (a naive loop), here 2 clips of 4 frames of a 13-frame video: frames 0-3 and 9-12."""
  rng = np.random.default_rng(1)
  parts = rng.normal(size=(13, 4, 3)).astype(np.float32)
  clip = {"emotion": 1, "actions": None, "frames": np.zeros((13, 1, 1, 3), np.uint8)}
  evaluator = _evaluator({s: [clip] for s in schema.SPLITS}, protocol="clips", clip_length=4,
                         frames=[8], feature="ambient")
  got = evaluator.videos({s: [parts] for s in schema.SPLITS}, "emotion", 8)["test"].features[0]
  expected = np.mean([parts[s:s + 4, 2].mean(0) for s in (0, 9)], axis=0)
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
