"""Tests for the frozen audio front ends (log-mel and wav2vec2, both alignments)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from transformers import Wav2Vec2Config
from transformers.audio_utils import mel_filter_bank

from synclipmae_jax.models import audio_encoder, wav2vec2
from synclipmae_jax.models.audio_encoder import AudioEncoder

# wav2vec2-base conv geometry (kernels 10,3,3,3,3,2,2, strides 5,2,...) with tiny widths.
CONFIG = Wav2Vec2Config(
    hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
    conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)


def speech_like(num_frames: int, batch: int = 2, seed: int = 0) -> np.ndarray:
  """Noise plus tones in [-1, 1], [batch, 640 T] float32."""
  rng = np.random.default_rng(seed)
  n = np.arange(640 * num_frames) / 16_000
  tones = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 3000, size=(batch, 1)) * n)
  return np.clip(tones + 0.1 * rng.normal(size=(batch, n.size)), -1, 1).astype(np.float32)


@pytest.fixture(scope="module")
def w2v_params():
  """Random frozen parameters (nonzero biases and norms), without compiling the initialiser."""
  module = AudioEncoder("wav2vec2", wav2vec2_config=CONFIG)
  shapes = jax.eval_shape(lambda: audio_encoder.init_frozen_params(module, jax.random.key(0), 1))
  rng = np.random.default_rng(0)
  return jax.tree_util.tree_map(
      lambda s: jnp.asarray(0.3 * rng.normal(size=s.shape).astype(np.float32)), shapes)


def run(module: AudioEncoder, params: dict, waveform: np.ndarray, num_frames: int) -> np.ndarray:
  apply = jax.jit(module.apply, static_argnums=2)
  return np.asarray(apply({"params": params}, jnp.asarray(waveform), num_frames))


def naive_log_mel(x: np.ndarray, n_mels: int) -> np.ndarray:
  """Frame-by-frame float64 numpy reference: frame k = samples [160 k - 120, 160 k + 280)."""
  filters = mel_filter_bank(
      num_frequency_bins=201, num_mel_filters=n_mels, min_frequency=0.0, max_frequency=8000.0,
      sampling_rate=16_000, norm=None, mel_scale="htk")
  window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
  padded = np.concatenate([np.zeros(120), x.astype(np.float64), np.zeros(120)])
  frames = []
  for k in range(x.size // 160):
    spectrum = np.fft.rfft(padded[160 * k:160 * k + 400] * window)
    frames.append(np.log(np.abs(spectrum) ** 2 @ filters + 1e-6))
  return np.stack(frames)


# ---------------------------------------------------------------------------------------------
# mel front end


@pytest.mark.parametrize("context_frames,n_mels", [(0, 40), (1, 40), (2, 16)])
def test_mel_shapes(context_frames, n_mels):
  module = AudioEncoder("mel", n_mels=n_mels, context_frames=context_frames)
  features = run(module, {}, speech_like(5), 5)
  assert features.shape == (2, 5, 1, 4 * (2 * context_frames + 1) * n_mels)
  assert np.isfinite(features).all()


def test_log_mel_matches_naive_numpy():
  x = speech_like(3)
  ours = np.asarray(audio_encoder.log_mel_spectrogram(jnp.asarray(x), 40))
  assert ours.shape == (2, 12, 40)
  for b in range(2):
    np.testing.assert_allclose(ours[b], naive_log_mel(x[b], 40), rtol=0, atol=1e-4)


def test_mel_features_match_naive_numpy():
  """Normalisation, 4 mel frames per video frame and edge-padded context, against numpy."""
  num_frames, context, n_mels = 4, 1, 40
  x = speech_like(num_frames, seed=1)
  module = AudioEncoder("mel", n_mels=n_mels, context_frames=context)
  features = run(module, {}, x, num_frames)
  for b in range(2):
    normalised = (x[b] - x[b].mean()) / np.sqrt(x[b].var() + 1e-7)
    mel = naive_log_mel(normalised, n_mels)
    for t in range(num_frames):
      blocks = [mel[4 * s:4 * s + 4].ravel()
                for s in np.clip(np.arange(t - context, t + context + 1), 0, num_frames - 1)]
      np.testing.assert_allclose(features[b, t, 0], np.concatenate(blocks), rtol=0, atol=1e-4)


@pytest.mark.parametrize("frame", [0, 3, 5])
def test_mel_tone_burst_lands_in_its_frame(frame):
  """A 1 kHz burst filling exactly video frame `frame` of 6: mel frames 4t..4t+3 hold it, the
  half-overlapping 4t-1 and 4t+4 see equal tails, everything else is silent."""
  num_frames, n_mels = 6, 40
  x = np.zeros((1, 640 * num_frames), np.float32)
  x[0, 640 * frame:640 * (frame + 1)] = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(640) / 16_000)
  mel = np.asarray(audio_encoder.log_mel_spectrogram(jnp.asarray(x), n_mels))[0]
  loudness = mel.max(axis=1)
  silent = np.log(1e-6)
  inside = list(range(4 * frame, 4 * frame + 4))
  tails = [k for k in (4 * frame - 1, 4 * frame + 4) if 0 <= k < 4 * num_frames]
  for k in range(4 * num_frames):
    if k not in inside + tails:
      np.testing.assert_allclose(mel[k], silent, rtol=0, atol=1e-6)
  assert loudness[inside].min() > loudness[tails].max() + 1.0
  assert all(loudness[k] > silent + 5.0 for k in tails)
  if len(tails) == 2:
    np.testing.assert_allclose(mel[tails[0]], mel[tails[1]], rtol=0, atol=1e-3)

  module = AudioEncoder("mel", n_mels=n_mels, context_frames=1, normalize_waveform=False)
  blocks = run(module, {}, x, num_frames).reshape(num_frames, 3, 4, n_mels)
  centre_loudness = blocks[:, 1].max(axis=(1, 2))
  assert np.argmax(centre_loudness) == frame
  assert blocks[frame, 1].max() == blocks.max()
  if frame > 0:  # the previous frame's right context is this frame; its own block is quieter
    assert blocks[frame, 0].max() < blocks[frame, 1].max()
    np.testing.assert_array_equal(blocks[frame - 1, 2], blocks[frame, 1])
  else:  # edge padding: the missing left context repeats the frame
    np.testing.assert_array_equal(blocks[frame, 0], blocks[frame, 1])
  if frame < num_frames - 1:
    assert blocks[frame, 2].max() < blocks[frame, 1].max()
    np.testing.assert_array_equal(blocks[frame + 1, 0], blocks[frame, 1])
  else:
    np.testing.assert_array_equal(blocks[frame, 2], blocks[frame, 1])


# ---------------------------------------------------------------------------------------------
# resampler


RESAMPLE_SIZES = [(3200, 1680), (640, 400), (1000, 999), (100, 250)]


@pytest.mark.parametrize("in_length,out_length", RESAMPLE_SIZES + [(48000, 24080)])
def test_resample_matches_float64_triangle_filter(in_length, out_length):
  """Against the filter written out densely in float64, on a subset of output samples."""
  x = np.random.default_rng(in_length).normal(size=(2, in_length)).astype(np.float32)
  ours = np.asarray(audio_encoder.resample(jnp.asarray(x), out_length))
  scale = in_length / out_length
  for i in np.linspace(0, out_length - 1, 50).astype(int):
    centre = scale * (i + 0.5)
    weights = np.maximum(0.0, 1.0 - np.abs(np.arange(in_length) + 0.5 - centre) / max(scale, 1.0))
    expected = x.astype(np.float64) @ (weights / weights.sum())
    np.testing.assert_allclose(ours[:, i], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("in_length,out_length", RESAMPLE_SIZES)
def test_resample_matches_jax_image_resize(in_length, out_length):
  """Same filter; jax.image.resize computes positions in float32, hence the tolerance."""
  x = np.random.default_rng(in_length).normal(size=(2, in_length)).astype(np.float32)
  expected = jax.image.resize(jnp.asarray(x), (2, out_length), "linear", antialias=True)
  ours = audio_encoder.resample(jnp.asarray(x), out_length)
  np.testing.assert_allclose(np.asarray(ours), np.asarray(expected), rtol=0, atol=3e-4)


@pytest.mark.parametrize("in_length,out_length", RESAMPLE_SIZES)
def test_resample_matches_torch_antialiased_interpolate(in_length, out_length):
  """Same filter; PyTorch computes positions in float32, hence the tolerance."""
  torch = pytest.importorskip("torch")
  x = np.random.default_rng(in_length).normal(size=(2, in_length)).astype(np.float32)
  expected = torch.nn.functional.interpolate(
      torch.from_numpy(x)[:, None, None, :], size=(1, out_length), mode="bilinear",
      align_corners=False, antialias=True)[:, 0, 0].numpy()
  ours = np.asarray(audio_encoder.resample(jnp.asarray(x), out_length))
  np.testing.assert_allclose(ours, expected, rtol=0, atol=3e-4)
  index, weights = audio_encoder.antialiased_resample_weights(in_length, out_length)
  reproduced = (torch.from_numpy(x)[:, torch.from_numpy(index).long()]
                * torch.from_numpy(weights)).sum(-1).numpy()
  np.testing.assert_allclose(ours, reproduced, rtol=0, atol=1e-6)


def test_resample_keeps_constants_and_low_frequencies():
  n_in, n_out = 3200, 1680
  np.testing.assert_allclose(
      np.asarray(audio_encoder.resample(jnp.full((1, n_in), 0.7), n_out)), 0.7, rtol=0, atol=1e-6)
  frequency = 100.0 / 16_000  # cycles per input sample
  x = np.sin(2 * np.pi * frequency * (np.arange(n_in) + 0.5))[None].astype(np.float32)
  centres = n_in / n_out * (np.arange(n_out) + 0.5)
  expected = np.sin(2 * np.pi * frequency * centres)
  ours = np.asarray(audio_encoder.resample(jnp.asarray(x), n_out))[0]
  # The discrete taps' centroid sits within ~0.04 samples of c_i: a 1e-3-level error at 100 Hz.
  np.testing.assert_allclose(ours[2:-2], expected[2:-2], rtol=0, atol=2e-3)


# ---------------------------------------------------------------------------------------------
# wav2vec2 front end


@pytest.mark.parametrize("alignment", ["resample", "interpolate"])
def test_wav2vec2_features_are_aligned_hidden_states(w2v_params, alignment):
  """[B, T, L + 1, hidden]: the encoder's hidden states for the normalised, aligned input."""
  num_frames = 3
  x = speech_like(num_frames)
  module = AudioEncoder("wav2vec2", alignment=alignment, wav2vec2_config=CONFIG)
  features = run(module, w2v_params, x, num_frames)
  assert features.shape == (2, num_frames, CONFIG.num_hidden_layers + 1, CONFIG.hidden_size)

  model = wav2vec2.Wav2Vec2Model(CONFIG)
  apply = jax.jit(model.apply, static_argnames=("num_frames", "alignment"))
  variables = {"params": w2v_params["wav2vec2"]}
  if alignment == "resample":
    # Ratio 320 / 640 whatever T, then 40 + 40 samples of padding: one token centred on each frame.
    resampled = np.asarray(jax.image.resize(jnp.asarray(x), (2, 320 * num_frames), "linear",
                                            antialias=True))
    normalised = (resampled - resampled.mean(1, keepdims=True)) / np.sqrt(
        resampled.var(1, keepdims=True) + 1e-7)
    hidden_states = apply(variables, jnp.asarray(np.pad(normalised, ((0, 0), (40, 40)))))
  else:
    normalised = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-7)
    hidden_states = apply(
        variables, jnp.asarray(normalised), num_frames=num_frames, alignment="interpolate")
  for layer, expected in enumerate(hidden_states):
    np.testing.assert_allclose(features[:, :, layer], np.asarray(expected), rtol=0, atol=1e-4)


@pytest.mark.parametrize("num_frames", [1, 5, 16, 75])
def test_resample_emits_exactly_one_token_per_frame(w2v_params, num_frames):
  assert wav2vec2.num_samples_for_tokens(CONFIG, num_frames) == 320 * num_frames + 80
  assert wav2vec2.conv_output_length(CONFIG, 320 * num_frames + 80) == num_frames
  assert audio_encoder.resample_geometry(CONFIG) == (320, 40, 40)
  module = AudioEncoder("wav2vec2", alignment="resample", wav2vec2_config=CONFIG)
  assert module.wav2vec2_input_samples(num_frames) == 320 * num_frames + 80
  features = run(module, w2v_params, speech_like(num_frames, batch=1), num_frames)
  assert features.shape == (1, num_frames, 3, 16)
  assert np.isfinite(features).all()


def test_normalisation_makes_mel_features_gain_and_offset_invariant():
  num_frames = 2
  x = speech_like(num_frames)
  for normalize in (True, False):
    module = AudioEncoder("mel", normalize_waveform=normalize)
    original = run(module, {}, x, num_frames)
    louder = run(module, {}, 3.0 * x + 0.1, num_frames)
    assert np.allclose(original, louder, rtol=0, atol=1e-3) == normalize


def test_init_frozen_params():
  assert audio_encoder.init_frozen_params(AudioEncoder("mel"), jax.random.key(0), 2) == {}
  module = AudioEncoder("wav2vec2", alignment="interpolate", wav2vec2_config=CONFIG)
  shapes = jax.eval_shape(lambda: audio_encoder.init_frozen_params(module, jax.random.key(0), 2))
  expected = jax.eval_shape(lambda: wav2vec2.init_params(CONFIG, jax.random.key(0)))
  assert jax.tree_util.tree_map(jnp.shape, shapes) == {
      "wav2vec2": jax.tree_util.tree_map(jnp.shape, expected)}


def test_bad_input_raises():
  with pytest.raises(ValueError, match="'spectrogram'"):
    AudioEncoder("spectrogram")
  with pytest.raises(ValueError, match="'nearest'"):
    AudioEncoder("wav2vec2", alignment="nearest", wav2vec2_config=CONFIG)
  with pytest.raises(ValueError, match="wav2vec2_config"):
    AudioEncoder("wav2vec2")
  with pytest.raises(ValueError, match="context_frames"):
    AudioEncoder("mel", context_frames=-1)
  with pytest.raises(ValueError, match="n_mels"):
    AudioEncoder("mel", n_mels=0)
  module = AudioEncoder("mel")
  with pytest.raises(ValueError, match=r"\(2, 1000\)"):
    module.apply({}, jnp.zeros((2, 1000)), 2)
  with pytest.raises(ValueError, match=r"\(1280,\)"):
    module.apply({}, jnp.zeros((1280,)), 2)
  with pytest.raises(ValueError, match="num_frames"):
    module.apply({}, jnp.zeros((1, 0)), 0)
  with pytest.raises(ValueError, match="lengths"):
    audio_encoder.antialiased_resample_weights(640, 0)


@pytest.mark.parametrize("frontend", ["mel", "wav2vec2"])
def test_input_context_gives_the_middle_frames_their_window_tokens(w2v_params, frontend):
  """With C frames of context, the features are those of the whole window's middle T frames."""
  num_frames, context = 3, 2
  x = speech_like(num_frames + 2 * context)
  kwargs = dict(wav2vec2_config=CONFIG) if frontend == "wav2vec2" else {}
  params = w2v_params if frontend == "wav2vec2" else {}
  whole = run(AudioEncoder(frontend, **kwargs), params, x, num_frames + 2 * context)
  middle = run(AudioEncoder(frontend, input_context_frames=context, **kwargs), params, x, num_frames)
  np.testing.assert_allclose(middle, whole[:, context:context + num_frames], rtol=0, atol=1e-5)
  with pytest.raises(ValueError, match="context"):
    run(AudioEncoder(frontend, input_context_frames=context, **kwargs), params, x[:, :-640], num_frames)
