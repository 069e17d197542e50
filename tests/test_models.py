"""SyncLipMAE model: shapes, visible-patch-only encoding, scan == loop, ablation switches."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synclipmae_jax import masking
from synclipmae_jax.models import synclipmae, vit

F, N, K, P = 6, 16, 4, 4 * 4 * 3


def _model(**kw):
  args = dict(encoder_size=vit.SIZES["tiny"], image_size=16, patch_size=4, decoder_width=16,
              decoder_depth=2, decoder_heads=2, decoder_mlp_dim=32)
  args.update(kw)
  return synclipmae.SyncLipMAE(**args)


@pytest.fixture(scope="module")
def inputs():
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  patches = jax.random.normal(keys[0], (F, N, P))
  keep1 = masking.uniform_keep(keys[1], F, N, K)
  keep2 = masking.uniform_keep(keys[2], F, N, K)
  audio = jax.random.normal(keys[3], (2, 3, 2, 5))  # B=2, T=3, L=2 layers, C=5
  return patches, keep1, patches + 0.1, keep2, audio, jnp.arange(F)


@pytest.fixture(scope="module")
def model_and_params(inputs):
  model = _model()
  params = nn.unbox(model.init(jax.random.PRNGKey(1), *inputs)["params"])
  return model, params


def test_output_shapes(model_and_params, inputs):
  model, params = model_and_params
  out = model.apply({"params": params}, *inputs)
  assert out["pred_video"].shape == out["pred_audio"].shape == (F, N, P)
  for name in ("identity", "vocal", "ambient", "audio"):
    assert out[name].shape == (F, 32)


def test_encoder_sees_only_visible_patches(model_and_params, inputs):
  model, params = model_and_params
  patches, keep = inputs[0], inputs[1]
  hidden = ~np.asarray(masking.keep_to_mask(keep, N))
  perturbed = jnp.where(hidden[..., None], 100.0, patches)
  a = model.apply({"params": params}, patches, keep, method=model.encode)
  b = model.apply({"params": params}, perturbed, keep, method=model.encode)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def test_audio_pass_depends_on_audio_only_through_condition(model_and_params, inputs):
  model, params = model_and_params
  out = model.apply({"params": params}, *inputs)
  changed = list(inputs)
  changed[4] = inputs[4] + 1.0
  out2 = model.apply({"params": params}, *changed)
  np.testing.assert_array_equal(out["pred_video"], out2["pred_video"])
  assert not np.allclose(out["pred_audio"], out2["pred_audio"])


def test_identity_permutation_is_applied(model_and_params, inputs):
  model, params = model_and_params
  out = model.apply({"params": params}, *inputs)
  perm = jnp.array([1, 0, 2, 3, 5, 4])
  out2 = model.apply({"params": params}, *inputs[:5], perm)
  np.testing.assert_array_equal(out["identity"], out2["identity"])  # tokens themselves unchanged
  assert not np.allclose(out["pred_video"], out2["pred_video"])  # the decoder saw them swapped


@pytest.mark.parametrize("kw", [dict(cross_attention=False), dict(adapter="last_layer"),
                                dict(encoder_remat="full", decoder_remat="qkv_proj")])
def test_ablation_switches_run(kw, inputs):
  model = _model(**kw)
  variables = model.init(jax.random.PRNGKey(1), *inputs)
  out = model.apply(variables, *inputs)
  assert out["pred_video"].shape == (F, N, P)


def test_single_view_mode(model_and_params, inputs):
  model, params = model_and_params
  out = model.apply({"params": params}, inputs[0], inputs[1], None, None, *inputs[4:])
  _, prompts = model.apply({"params": params}, inputs[0], inputs[1], method=model.encode)
  np.testing.assert_allclose(out["vocal"], prompts[:, 1], atol=1e-6)
  np.testing.assert_allclose(out["identity"], prompts[:, 0], atol=1e-6)


def test_scan_equals_loop(model_and_params, inputs):
  model, params = model_and_params
  scanned = _model(scan=True)
  sparams = nn.unbox(scanned.init(jax.random.PRNGKey(1), *inputs)["params"])

  def stack_layers(tree, depth):
    layers = [tree.pop(f"layers_{i}") for i in range(depth)]
    tree["layers"] = jax.tree.map(lambda *x: jnp.stack(x), *layers)

  p = jax.tree.map(lambda x: x, params)
  p = jax.tree_util.tree_map(np.asarray, p)
  p = {k: dict(v) for k, v in p.items()}
  p["encoder"] = dict(p["encoder"]); p["encoder"]["blocks"] = dict(p["encoder"]["blocks"])
  p["decoder"] = dict(p["decoder"]); p["decoder"]["blocks"] = dict(p["decoder"]["blocks"])
  stack_layers(p["encoder"]["blocks"], 2)
  stack_layers(p["decoder"]["blocks"], 2)
  assert jax.tree.structure(p) == jax.tree.structure(jax.tree.map(np.asarray, sparams))
  a = model.apply({"params": params}, *inputs)
  b = scanned.apply({"params": p}, *inputs)
  np.testing.assert_allclose(a["pred_audio"], b["pred_audio"], atol=1e-5)


def test_unknown_size_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown encoder size"):
    vit.vit_size("XXL")


def test_named_sizes():
  s = vit.vit_size("sapiens_0.3b")
  assert (s.width, s.depth, s.num_heads, s.mlp_dim) == (1024, 24, 16, 4096)


def test_without_the_audio_pass_the_decoder_runs_once_and_the_video_pass_is_unchanged(
    model_and_params, inputs):
  model, params = model_and_params
  full = model.apply({"params": params}, *inputs)
  video_only = model.apply({"params": params}, *inputs, audio_pass=False)
  assert video_only["pred_audio"] is None
  np.testing.assert_allclose(video_only["pred_video"], full["pred_video"], rtol=1e-5, atol=1e-6)
  for name in ("identity", "vocal", "ambient", "audio"):
    np.testing.assert_array_equal(video_only[name], full[name])
