"""wav2vec2 checkpoints written by transformers -> the Flax port: parity, key names, alignment."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers

from synclipmae_jax.models import audio_encoder, wav2vec2
from synclipmae_jax.weights import param_tree, wav2vec2_checkpoint
from wav2vec2_tiny import TINY, VARIANTS, tiny_config
from torch_peers import random_eval_model

torch = pytest.importorskip("torch")

# Heads of Wav2Vec2ForPreTraining / ForCTC that an old-style checkpoint carries next to the model.
HEAD_KEYS = {"quantizer.codevectors": (1, 640, 128), "project_q.weight": (256, 128),
             "project_hid.weight": (256, 32), "lm_head.weight": (32, 32)}


def write_old_generation(model, config, directory) -> None:
  """The model as an old Hub checkpoint: `wav2vec2.` prefix, weight_g / weight_v, extra heads,
  pytorch_model.bin (torch.save of the renamed state dict of a `save_pretrained` model)."""
  renamed = {}
  for key, tensor in model.state_dict().items():
    key = key.replace("parametrizations.weight.original0", "weight_g")
    key = key.replace("parametrizations.weight.original1", "weight_v")
    renamed[f"wav2vec2.{key}"] = tensor.clone()
  for key, shape in HEAD_KEYS.items():
    renamed[key] = torch.randn(shape)
  os.makedirs(directory)
  config.save_pretrained(directory)
  torch.save(renamed, os.path.join(directory, "pytorch_model.bin"))


def reference_states(model, config, waveform):
  """transformers' hidden states, with the port's convention for the last one (see below)."""
  with torch.no_grad():
    out = model(torch.from_numpy(waveform), output_hidden_states=True)
  states = [h.numpy() for h in out.hidden_states]
  if config.do_stable_layer_norm:
    # transformers 5 returns the last layer's output before the encoder's final LayerNorm as
    # hidden_states[-1] of a pre-LN model; last_hidden_state is that after the LayerNorm. The port
    # returns last_hidden_state there (transformers 4's hidden_states[-1]).
    with torch.no_grad():
      normed = model.encoder.layer_norm(out.hidden_states[-1]).numpy()
    np.testing.assert_array_equal(normed, out.last_hidden_state.numpy())
    states[-1] = out.last_hidden_state.numpy()
  else:
    np.testing.assert_array_equal(states[-1], out.last_hidden_state.numpy())
  return states


def max_errors(ours, reference):
  assert len(ours) == len(reference)
  return [float(np.abs(np.asarray(a) - b).max()) for a, b in zip(ours, reference)]


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def tiny(request, tmp_path_factory):
  """(config, torch model, new-generation dir, old-generation dir) for a tiny variant."""
  config = tiny_config(request.param)
  model = random_eval_model(transformers.Wav2Vec2Model, config)
  root = tmp_path_factory.mktemp(f"w2v_{request.param}")
  model.save_pretrained(root / "new")
  write_old_generation(model, config, root / "old")
  return config, model, str(root / "new"), str(root / "old")


@pytest.fixture(scope="module")
def waveform():
  """A loud and a near-silent utterance, normalised as the feature extractor would."""
  x = np.random.default_rng(0).normal(size=(2, 1999)) * np.array([[1.0], [1e-3]])
  return np.array(audio_encoder.zero_mean_unit_variance(jnp.asarray(x, jnp.float32)))


def test_tiny_checkpoint_hidden_states_match_pytorch(tiny, waveform):
  config, model, new, _ = tiny
  loaded_config, params, report = wav2vec2_checkpoint.load(new, expected_config=config)
  assert [u.key for u in report.unused] == ["masked_spec_embed"]
  assert not report.kept and len(report.mappings) == len(param_tree.flatten(params))
  assert loaded_config.do_stable_layer_norm == config.do_stable_layer_norm
  ours = jax.jit(wav2vec2.Wav2Vec2Model(config).apply)({"params": params}, waveform)
  errors = max_errors(ours, reference_states(model, config, waveform))
  print(f"tiny {config.feat_extract_norm}: max abs error per hidden state {errors}")
  assert max(errors) < 1e-4


def test_old_key_generation_gives_identical_parameters(tiny):
  config, _, new, old = tiny
  _, new_params, _ = wav2vec2_checkpoint.load(new)
  _, old_params, report = wav2vec2_checkpoint.load(old, expected_config=config)
  flat_new, flat_old = param_tree.flatten(new_params), param_tree.flatten(old_params)
  assert flat_new.keys() == flat_old.keys()
  for path in flat_new:
    np.testing.assert_array_equal(flat_old[path], flat_new[path], err_msg=path)
  assert sorted(u.key for u in report.unused) == sorted([*HEAD_KEYS, "wav2vec2.masked_spec_embed"])
  sources = {s for m in report.mappings for s in m.sources}
  assert "wav2vec2.encoder.pos_conv_embed.conv.weight_g" in sources


def test_alignment_modes_match_the_same_operation_around_pytorch(tiny):
  """JAX AudioEncoder tokens == the same resampling / interpolation around the PyTorch model,
  including transformers' per-utterance normalisation (Wav2Vec2FeatureExtractor)."""
  config, model, new, _ = tiny
  _, params, _ = wav2vec2_checkpoint.load(new)
  num_frames = 8
  x = np.random.default_rng(1).uniform(-0.5, 0.5, (2, 640 * num_frames)).astype(np.float32)
  extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False)
  normalise = lambda w: extractor(list(w), sampling_rate=16000, return_tensors="pt").input_values

  # "resample": the fixed ratio J / 640, normalised, then the receptive field's overhang as zeros.
  jump, left, right = audio_encoder.resample_geometry(config)
  index, weights = audio_encoder.antialiased_resample_weights(x.shape[1], jump * num_frames)
  resampled = (torch.from_numpy(x)[:, index] * torch.from_numpy(weights)).sum(-1).numpy()
  padded = np.pad(normalise(resampled).numpy(), ((0, 0), (left, right)))
  expected = {"resample": reference_states(model, config, padded)}
  hook = model.feature_extractor.register_forward_hook(
      lambda module, inputs, output: torch.nn.functional.interpolate(
          output, size=num_frames, mode="linear", align_corners=False))
  try:
    expected["interpolate"] = reference_states(model, config, normalise(x).numpy())
  finally:
    hook.remove()

  for alignment, reference in expected.items():
    encoder = audio_encoder.AudioEncoder("wav2vec2", alignment, config)
    apply = jax.jit(encoder.apply, static_argnums=2)
    tokens = apply({"params": {"wav2vec2": params}}, x, num_frames)
    assert tokens.shape == (2, num_frames, config.num_hidden_layers + 1, config.hidden_size)
    errors = max_errors(jnp.moveaxis(tokens, 2, 0), reference)
    print(f"{config.feat_extract_norm} {alignment}: max abs error per layer {errors}")
    assert max(errors) < 1e-4


@pytest.fixture(scope="module")
def base_size(tmp_path_factory):
  """A randomly initialised wav2vec 2.0 base (Wav2Vec2Config() defaults) in both generations."""
  config = transformers.Wav2Vec2Config()
  model = random_eval_model(transformers.Wav2Vec2Model, config)
  root = tmp_path_factory.mktemp("w2v_base")
  model.save_pretrained(root / "new")
  write_old_generation(model, config, root / "old")
  return config, model, str(root / "new"), str(root / "old")


def test_base_size_checkpoints_of_both_generations_match_pytorch(base_size):
  config, model, new, old = base_size
  _, new_params, new_report = wav2vec2_checkpoint.load(new, expected_config=config)
  _, old_params, _ = wav2vec2_checkpoint.load(old, expected_config=config)
  assert len(new_report.mappings) == 211 - 1  # 211 keys, masked_spec_embed unused
  waveform = np.array(audio_encoder.zero_mean_unit_variance(
      jnp.asarray(np.random.default_rng(2).normal(size=(1, 4000)), jnp.float32)))
  apply = jax.jit(wav2vec2.Wav2Vec2Model(config).apply)
  ours_new = apply({"params": new_params}, waveform)
  ours_old = apply({"params": old_params}, waveform)
  for a, b in zip(ours_new, ours_old):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  errors = max_errors(ours_new, reference_states(model, config, waveform))
  print(f"base size: max abs error per hidden state {errors}")
  assert len(errors) == 13 and ours_new[0].shape == (1, 12, 768)
  assert max(errors) < 1e-4


def test_problems_are_listed(tiny):
  config, model, _, _ = tiny
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  state["encoder.layers.0.attention.rotary.weight"] = np.zeros((4, 4), np.float32)
  state["encoder.layers.1.attention.q_proj.weight"] = np.zeros((32, 16), np.float32)
  del state["encoder.layers.1.final_layer_norm.bias"]
  _, report = wav2vec2_checkpoint.convert(state, config, "ckpt")
  with pytest.raises(ValueError) as e:
    report.check()
  message = str(e.value)
  assert "3 problem(s)" in message
  assert "unknown key encoder.layers.0.attention.rotary.weight (4, 4)" in message
  assert ("encoder.layers.1.attention.q_proj.weight (32, 16) -> "
          "encoder/layers_1/attention/q_proj/kernel (32, 32)") in message
  assert "missing key encoder.layers.1.final_layer_norm.bias" in message
  other = transformers.Wav2Vec2Config(**dict(TINY, hidden_act="relu"), **VARIANTS["base"])
  differences = wav2vec2_checkpoint.config_differences(config, other)
  assert any(d.startswith("hidden_act") for d in differences)
  if config.do_stable_layer_norm:
    assert any(d.startswith("do_stable_layer_norm") for d in differences)
