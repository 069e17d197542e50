"""One audio context in training and evaluation (paper 3.2; issue 16): the audio tokens of frames
t..t+T-1 of a training batch are the ones the sync evaluator computes for the same frames of the
same clip, for the log-mel front end and a tiny wav2vec2."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from configs import demo
from data_pipelines import audio_windows, grain_pipeline
from synclipmae_jax import experiment, input_pipeline, sharding
from synclipmae_jax.evaluators import sync
from tests import wav2vec2_tiny

FRONTENDS = {"mel": {}, "wav2vec2_resample": dict(frontend="wav2vec2", alignment="resample")}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("synthetic"))


@pytest.mark.parametrize("frontend", sorted(FRONTENDS))
def test_training_and_evaluator_audio_tokens_agree(frontend, data_dir):
  config = demo.get_config("tiny")
  config.data.directory = data_dir
  config.data.window_frames = 5  # does not divide the clip: windows overlap at the end
  config.model.audio.update(FRONTENDS[frontend])
  if config.model.audio.frontend == "wav2vec2":
    config.model.audio.wav2vec2.update(wav2vec2_tiny.TINY, **wav2vec2_tiny.VARIANTS["base"])
  context, t = config.model.audio.input_context_frames, config.data.window_frames
  train_paths, eval_paths = input_pipeline.dataset_paths(config)
  batch = next(grain_pipeline.make_train_iterator(grain_pipeline.make_train_dataset(
      train_paths, global_batch_size=8, window_frames=t, seed=3, audio_context_frames=context)))
  mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])
  exp = experiment.build(config, mesh)
  with exp.scope():
    state = exp.init(jax.random.PRNGKey(0))
  # Training: the train step's frozen encoder on the batch's audio, then the adapter.
  features = exp.audio_encoder.apply({"params": state.frozen}, batch["audio"], t)
  train_tokens = np.asarray(exp.model.apply({"params": state.params}, features,
                                            method=exp.model.encode_audio))
  # Evaluation: the sync evaluator on the same clips, read whole from the shards.
  clips = {c["clip_id"]: c for c in grain_pipeline.load_eval_clips(train_paths)}
  evaluator = sync.Evaluator(config.evals.sync, config, model=exp.model,
                             audio_encoder=exp.audio_encoder, eval_paths=eval_paths)
  starts = batch["start_frame"]
  assert min(starts) < context, "some window must read past the clip start (silence padding)"
  for i, (clip_id, start) in enumerate(zip(batch["clip_id"], starts)):
    clip = clips[int(clip_id)]
    stop = min(start + t + 3, len(clip["frames"]))  # a longer span: the first window is the same
    ours = evaluator.audio_tokens(state.params, state.frozen, clip, int(start), int(stop))
    np.testing.assert_allclose(ours[:t], train_tokens[i], rtol=0, atol=1e-5,
                               err_msg=f"clip {clip_id} frames {start}..{start + t - 1}")
    assert np.abs(train_tokens[i]).max() > 1e-2


def test_sliding_windows_cover_every_frame_once():
  starts, window, offset = audio_windows.sliding_windows(3, 15, 5)
  assert starts == [3, 8, 10]
  frames = np.asarray(starts)[window] + offset
  np.testing.assert_array_equal(frames, np.arange(3, 15))
  assert (offset >= 0).all() and (offset < 5).all()
  assert audio_windows.sliding_windows(0, 10, 5)[0] == [0, 5]
  with pytest.raises(ValueError, match="fewer than one window"):
    audio_windows.sliding_windows(0, 4, 5)


def test_audio_window_pads_with_silence_beyond_the_clip():
  audio = (np.arange(3 * 640) % 1000 - 500).astype(np.int16)
  w = audio_windows.audio_window(audio, 0, 2, 1)
  assert w.shape == (4 * 640,) and w.dtype == np.float32
  np.testing.assert_array_equal(w[:640], 0)
  np.testing.assert_array_equal(w[640:], audio / 32768.0)
  np.testing.assert_array_equal(audio_windows.audio_window(audio / 32768.0, 1, 2, 0), audio[640:1280] / 32768.0)
