"""The dubbing model's inputs (synclipmae_torch/dub_samples.py): the lower-face mask by hand,
and samples cut from prepared synthetic shards (target window, its speech, a reference frame
outside it, the continuity frame dropped about one time in ten)."""

import numpy as np
import pytest

from configs import demo
from data_pipelines import clip_records, grain_pipeline
from synclipmae_jax import input_pipeline
from synclipmae_torch import dub_samples


def test_lower_face_mask_by_hand():
  # A face box over x in [0.25, 0.75], y in [0.2, 0.6]; the mouth lower than the box's centre.
  face = np.array([[0.25, 0.2, 0.75, 0.6]])
  mouth = np.array([[0.4, 0.45, 0.6, 0.55]])
  mask = dub_samples.lower_face_mask(face, mouth, 20, 20, chin_extension=0.25)
  # Rows whose centre lies in [0.4, 0.6 + 0.25 * 0.4 = 0.7]: rows 8..13; columns in [0.25, 0.75]: 5..14.
  expected = np.zeros((1, 20, 20), np.float32)
  expected[0, 8:14, 5:15] = 1
  np.testing.assert_array_equal(mask, expected)
  # A mouth above the centre pulls the top up; a box at the bottom is clipped to the frame.
  high_mouth = dub_samples.lower_face_mask(face, np.array([[0.4, 0.3, 0.6, 0.35]]), 20, 20, 0.25)
  assert high_mouth[0, :, 10].nonzero()[0].tolist() == list(range(6, 14))
  low = dub_samples.lower_face_mask(np.array([[0.0, 0.6, 1.0, 1.0]]), np.array([[0.4, 0.9, 0.6, 0.95]]),
                                    10, 10, 0.5)
  assert low[0, 8:].all() and not low[0, :8].any()
  with pytest.raises(ValueError, match="must both be"):
    dub_samples.lower_face_mask(face, mouth[:, :3], 4, 4)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
  config = demo.get_config("tiny")
  config.data.directory = str(tmp_path_factory.mktemp("dub_data"))
  return grain_pipeline.load_eval_clips(input_pipeline.dataset_paths(config)[1])


def test_samples_of_prepared_clips(clips):
  clip = clips[0]
  n = len(clip["frames"])
  rng = np.random.default_rng(0)
  dropped, starts = 0, set()
  for _ in range(1000):
    s = dub_samples.training_sample(clip, rng)
    start = s["start"]
    starts.add(start)
    np.testing.assert_array_equal(s["target"], clip["frames"][start:start + 17])
    np.testing.assert_array_equal(s["audio"], clip["audio"][640 * start:640 * (start + 17)])
    assert s["mask"].shape == s["target"].shape[:3]
    assert s["mask"].any(axis=(1, 2)).all()  # every frame has something to generate
    assert not start - 1 <= s["reference_index"] < start + 17
    np.testing.assert_array_equal(s["reference"], clip["frames"][s["reference_index"]])
    if s["continuity"] is None:
      dropped += 1
    else:
      np.testing.assert_array_equal(s["continuity"], clip["frames"][start - 1])
  assert starts == set(range(1, n - 17 + 1))
  assert 70 <= dropped <= 130  # Binomial(1000, 0.1): mean 100, sd 9.5
  with pytest.raises(ValueError, match="a sample needs 17 target frames"):
    dub_samples.training_sample({**clip, "frames": clip["frames"][:18]}, rng)


def test_a_sample_streamed_from_the_shards_is_the_whole_clips_sample(tmp_path):
  """dub_samples.shard_sample reads only what the sample needs and gives what training_sample
  gives on the whole clip for the same draws; its part holds the clip's audio and boxes around the
  target (the context the audio tokens read, clipped at the clip's ends as the whole clip is)."""
  config = demo.get_config("tiny")
  config.data.directory = str(tmp_path)
  paths = input_pipeline.dataset_paths(config)[1]
  clips = grain_pipeline.load_eval_clips(paths)
  source = clip_records.ClipSource(paths)
  context = 5
  for seed in range(6):
    rng = np.random.default_rng(seed)
    clip = clips[int(rng.integers(len(clips)))]
    whole = dub_samples.training_sample(clip, rng, drop_continuity=0.5)
    part, streamed = dub_samples.shard_sample(source, np.random.default_rng(seed),
                                              drop_continuity=0.5, context_frames=context)
    assert part["clip_id"] == clip["clip_id"]
    assert streamed["start"] + part["offset"] == whole["start"]
    for key in ("target", "mask", "audio", "reference"):
      np.testing.assert_array_equal(streamed[key], whole[key], err_msg=key)
    assert streamed["reference_index"] == whole["reference_index"]
    assert (streamed["continuity"] is None) == (whole["continuity"] is None)
    if whole["continuity"] is not None:
      np.testing.assert_array_equal(streamed["continuity"], whole["continuity"])
    # The part's audio holds the target's context as far as the clip has it.
    s, n = whole["start"], len(clip["frames"])
    lo, hi = max(0, s - context), min(n, s + 17 + context)
    np.testing.assert_array_equal(part["audio"], clip["audio"][640 * lo:640 * hi])
    np.testing.assert_array_equal(part["face_boxes"], clip["face_boxes"][lo:hi])
