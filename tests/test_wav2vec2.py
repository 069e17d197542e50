"""Tests for the Flax wav2vec2 port: parity with transformers' PyTorch Wav2Vec2Model."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from transformers import Wav2Vec2Config

from synclipmae_jax.models import wav2vec2
from synclipmae_jax.weights import param_tree, wav2vec2_checkpoint
from wav2vec2_tiny import TINY, VARIANTS, tiny_config
from torch_peers import random_eval_model

NUM_SAMPLES = 1999



def torch_to_flax(state_dict, config: Wav2Vec2Config) -> dict:
  """The Flax parameter tree of a PyTorch Wav2Vec2Model state dict, through the real loader."""
  state = {key: tensor.detach().numpy() for key, tensor in state_dict.items()}
  updates, report = wav2vec2_checkpoint.convert(state, config)
  report.check()
  return param_tree.unflatten(updates)


@pytest.fixture(scope="module")
def torch():
  return pytest.importorskip("torch")


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def models(request, torch):
  """(config, torch model in eval mode with randomised weights, converted Flax params)."""
  from transformers import Wav2Vec2Model as TorchWav2Vec2Model
  config = tiny_config(request.param)
  model = random_eval_model(TorchWav2Vec2Model, config)
  return config, model, torch_to_flax(model.state_dict(), config)


@pytest.fixture(scope="module")
def waveform():
  """A loud and a near-silent utterance (where the norms' eps matter)."""
  x = np.random.default_rng(0).normal(size=(2, NUM_SAMPLES))
  return (x * np.array([[1.0], [1e-3]])).astype(np.float32)


def param_shapes(config: Wav2Vec2Config) -> dict:
  """The parameter tree of `init_params` as ShapeDtypeStructs (nothing is computed)."""
  return jax.eval_shape(lambda: wav2vec2.init_params(config, jax.random.key(0)))


def test_parameter_tree_matches_converted_state_dict(models):
  config, _, params = models
  shapes = lambda tree: jax.tree_util.tree_map(jnp.shape, tree)
  assert shapes(param_shapes(config)) == shapes(params)


def test_hidden_states_match_pytorch(models, waveform, torch):
  config, model, params = models
  with torch.no_grad():
    expected = model(torch.from_numpy(waveform), output_hidden_states=True)
  apply = jax.jit(wav2vec2.Wav2Vec2Model(config).apply)
  hidden_states = apply({"params": params}, jnp.asarray(waveform))
  assert len(hidden_states) == config.num_hidden_layers + 1
  # transformers 5 returns the pre-final-LayerNorm state as hidden_states[-1] of a pre-LN model;
  # the port returns last_hidden_state there (4.x convention), so compare the last one to that.
  reference = list(expected.hidden_states[:-1]) + [expected.last_hidden_state]
  errors = [np.abs(np.asarray(h) - r.numpy()).max() for h, r in zip(hidden_states, reference)]
  print(f"max abs error per hidden state: {errors}")
  assert hidden_states[0].shape == (2, wav2vec2.conv_output_length(config, NUM_SAMPLES), 32)
  assert max(errors) < 1e-4


def test_interpolate_alignment_matches_pytorch(models, waveform, torch):
  config, model, params = models
  num_frames = 40
  hook = model.feature_extractor.register_forward_hook(
      lambda module, inputs, output: torch.nn.functional.interpolate(
          output, size=num_frames, mode="linear", align_corners=False))
  try:
    with torch.no_grad():
      expected = model(torch.from_numpy(waveform), output_hidden_states=True)
  finally:
    hook.remove()
  apply = jax.jit(wav2vec2.Wav2Vec2Model(config).apply, static_argnames=("num_frames", "alignment"))
  hidden_states = apply(
      {"params": params}, jnp.asarray(waveform), num_frames=num_frames, alignment="interpolate")
  reference = list(expected.hidden_states[:-1]) + [expected.last_hidden_state]
  assert all(h.shape == (2, num_frames, 32) for h in hidden_states)
  errors = [np.abs(np.asarray(h) - r.numpy()).max() for h, r in zip(hidden_states, reference)]
  print(f"max abs error per hidden state (interpolate): {errors}")
  assert max(errors) < 1e-4


@pytest.mark.parametrize(
    "in_length,out_length", [(99, 40), (2999, 1500), (49, 16), (7, 25), (1, 3), (12, 12), (5, 1)])
def test_interpolate_linear_matches_torch(torch, in_length, out_length):
  x = np.random.default_rng(in_length).normal(size=(2, in_length, 8)).astype(np.float32)
  expected = torch.nn.functional.interpolate(
      torch.from_numpy(x).transpose(1, 2), size=out_length, mode="linear", align_corners=False)
  expected = expected.transpose(1, 2).numpy()
  interpolate = jax.jit(wav2vec2.interpolate_linear, static_argnums=1)
  ours = np.asarray(interpolate(jnp.asarray(x), out_length))
  # Each output is a + w (b - a) of two inputs (|x| < 6 here) with w in [0, 1]: a few float32
  # roundings of values of that size (unit 6e-8), whether or not a back end fuses the multiply-add.
  np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)


def test_conv_output_length_matches_transformers(models, torch):
  config, model, _ = models
  lengths = torch.tensor([40, 41, 59, 60, 1999, 16000])
  expected = model._get_feat_extract_output_lengths(lengths).tolist()
  assert [wav2vec2.conv_output_length(config, n) for n in lengths.tolist()] == expected


def test_base_geometry_output_length():
  """floor((N - 400) / 320) + 1 frames; 320 T + 80 samples give exactly T."""
  config = Wav2Vec2Config(
      hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
      conv_dim=(4,) * 7, num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)
  for n in (400, 719, 720, 16000, 16399):
    assert wav2vec2.conv_output_length(config, n) == (n - 400) // 320 + 1
  for t in (1, 5, 16):
    assert wav2vec2.num_samples_for_tokens(config, t) == 320 * t + 80
    assert wav2vec2.conv_output_length(config, 320 * t + 79) == t - 1
  hidden_states = jax.eval_shape(
      wav2vec2.Wav2Vec2Model(config).apply, {"params": param_shapes(config)}, jnp.zeros((1, 1040)))
  assert [h.shape for h in hidden_states] == [(1, 3, 8)] * 2


def test_bad_input_raises():
  config = tiny_config("base")
  variables = {"params": param_shapes(config)}
  model = wav2vec2.Wav2Vec2Model(config)
  apply = lambda x, **kwargs: jax.eval_shape(lambda v, x: model.apply(v, x, **kwargs), variables, x)
  x = jnp.zeros((1, 400))
  with pytest.raises(ValueError, match="alignment"):
    apply(x, alignment="nearest")
  with pytest.raises(ValueError, match="num_frames"):
    apply(x, alignment="interpolate")
  with pytest.raises(ValueError, match="num_frames"):
    apply(x, num_frames=3)
  with pytest.raises(ValueError, match="receptive field"):
    apply(jnp.zeros((1, 39)))
  with pytest.raises(ValueError, match=r"\[B, N\]"):
    apply(jnp.zeros((400,)))
  with pytest.raises(ValueError, match="feat_extract_norm"):
    param_shapes(Wav2Vec2Config(**TINY, feat_extract_norm="batch"))
  with pytest.raises(ValueError, match="mish"):
    wav2vec2.check_config(Wav2Vec2Config(**TINY, hidden_act="mish"))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_parameter_has_logical_axis_names(variant):
  """The boxed init names each axis (so a mesh shards the frozen weights); init_params unboxes."""
  config = tiny_config(variant)
  boxed = jax.eval_shape(wav2vec2.Wav2Vec2Model(config).init, jax.random.key(0), jnp.zeros((1, 400)))
  leaves = jax.tree.leaves(boxed["params"], is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
  for leaf in leaves:
    assert len(leaf.names) == leaf.value.ndim and set(leaf.names) <= set(wav2vec2.AXES) | {None}
  kernel = boxed["params"]["encoder"]["layers_0"]["feed_forward"]["intermediate_dense"]["kernel"]
  assert kernel.names == ("audio_embed", "audio_mlp")
  assert jax.tree.structure(param_shapes(config)) == jax.tree.structure(nn.unbox(boxed["params"]))
