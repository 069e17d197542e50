"""`model.init.*`: config validation, apply_pretrained, a sharded fresh state, inspection."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import transformers

from configs import demo
from synclipmae_jax import config_validation, experiment, sharding, train_state, weights
from synclipmae_jax.weights import param_tree, pretrained, wav2vec2_checkpoint

torch = pytest.importorskip("torch")

WAV2VEC2 = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 4),
                num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2)
SAPIENS_GRID = 3  # checkpoint grid; the tiny config trains at 16 px / patch 8 = 2 x 2


def tiny_config():
  """configs/demo.py:tiny with a tiny wav2vec2 front end (encoder 32 wide, decoder 16 wide)."""
  c = demo.get_config("tiny")
  c.model.audio.frontend = "wav2vec2"
  c.model.audio.wav2vec2.update(WAV2VEC2)
  return c


def sapiens_state(rng, width=32, depth=2, mlp=64, patch=8) -> dict:
  """Random weights under Sapiens / mmpretrain ViT names."""
  r = lambda *shape: torch.from_numpy(rng.normal(0.0, 0.1, shape).astype(np.float32))
  state = {"cls_token": r(1, 1, width), "pos_embed": r(1, 1 + SAPIENS_GRID ** 2, width),
           "patch_embed.projection.weight": r(width, 3, patch, patch),
           "patch_embed.projection.bias": r(width), "ln1.weight": r(width), "ln1.bias": r(width)}
  for i in range(depth):
    for name, shape in (("ln1", (width,)), ("ln2", (width,)), ("attn.qkv", (3 * width, width)),
                        ("attn.proj", (width, width)), ("ffn.layers.0.0", (mlp, width)),
                        ("ffn.layers.1", (width, mlp))):
      state[f"layers.{i}.{name}.weight"] = r(*shape)
      state[f"layers.{i}.{name}.bias"] = r(shape[0])
  return state


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  """model.init paths for the tiny config: wav2vec2 and ViTMAE directories, a Sapiens .pth."""
  root = tmp_path_factory.mktemp("pretrained")
  torch.manual_seed(0)
  transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**WAV2VEC2)).save_pretrained(root / "w2v")
  transformers.ViTMAEForPreTraining(transformers.ViTMAEConfig(
      hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
      decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
      decoder_intermediate_size=32, patch_size=8, image_size=8 * SAPIENS_GRID)).save_pretrained(
          root / "mae")
  torch.save(sapiens_state(np.random.default_rng(0)), root / "sapiens.pth")
  broken = sapiens_state(np.random.default_rng(0))
  broken["layers.0.attn.gamma1.weight"] = torch.ones(32)
  torch.save({"state_dict": broken}, root / "broken.pth")
  return {"wav2vec2": str(root / "w2v"), "vitmae": str(root / "mae"),
          "sapiens": str(root / "sapiens.pth"), "broken": str(root / "broken.pth")}


def with_init(checkpoints, **overrides):
  c = tiny_config()
  c.model.init.update(wav2vec2=checkpoints["wav2vec2"], sapiens=checkpoints["sapiens"],
                      vitmae=checkpoints["vitmae"])
  c.model.init.update(overrides)
  return c


def test_missing_checkpoint_files_are_listed_before_compiling(checkpoints, tmp_path):
  c = with_init(checkpoints)
  config_validation.validate(c, num_devices=1)
  os.makedirs(tmp_path / "empty")
  c = with_init(checkpoints, sapiens=str(tmp_path / "nope.pth"), vitmae=str(tmp_path / "empty"))
  c.model.audio.frontend = "mel"
  with pytest.raises(ValueError) as e:
    config_validation.validate(c, num_devices=1)
  message = str(e.value)
  assert f"model.init.sapiens: file {tmp_path / 'nope.pth'} does not exist" in message
  assert f"model.init.vitmae: {tmp_path / 'empty' / 'config.json'} does not exist" in message
  assert "model.init.vitmae: " in message and "model.safetensors" in message
  assert "model.init.wav2vec2 needs model.audio.frontend='wav2vec2', got 'mel'" in message


def test_loaded_frozen_wav2vec2_stays_bit_identical_over_sharded_training_steps(checkpoints):
  config = with_init(checkpoints)
  config.mesh.update(data=1, fsdp=2, tensor=2)
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:4])
  exp = experiment.build(config, mesh)
  abstract, step = exp.abstract_state, exp.train_step
  with exp.scope():
    random_state = exp.init(jax.random.PRNGKey(0))
    random_encoder = param_tree.flatten(jax.device_get(random_state.params)["encoder"])
    state, reports = weights.load_into_state(config, random_state, abstract)
    loaded_frozen = jax.device_get(state.frozen)
    loaded_params = jax.device_get(state.params)
    for s in range(2):
      batch = train_state.random_batch(config, s, clips_per_identity=2)
      state, _ = step(state, sharding.global_batch(batch, mesh))
  assert [r.kind for r in reports] == ["wav2vec2", "sapiens", "vitmae"]
  expected = param_tree.flatten(wav2vec2_checkpoint.load(checkpoints["wav2vec2"])[1])
  frozen_after = param_tree.flatten(jax.device_get(state.frozen)["wav2vec2"])
  for path, value in param_tree.flatten(loaded_frozen["wav2vec2"]).items():
    np.testing.assert_array_equal(value, expected[path], err_msg=path)
    np.testing.assert_array_equal(frozen_after[path], value, err_msg=path)
  for leaf, target in zip(jax.tree.leaves(state.params), jax.tree.leaves(abstract.params)):
    assert leaf.sharding == target.sharding
  cross = loaded_params["decoder"]["blocks"]["layers_0"]["cross_attn"]
  assert not cross["out_kernel"].any() and not cross["out_bias"].any()
  encoder_before = param_tree.flatten(loaded_params["encoder"])
  encoder_after = param_tree.flatten(jax.device_get(state.params)["encoder"])
  assert any(not np.array_equal(encoder_before[p], encoder_after[p]) for p in encoder_before)
  assert all(not np.array_equal(random_encoder[p], encoder_before[p]) for p in encoder_before)


def test_apply_pretrained_keeps_unconverted_leaves_and_rejects_unknown_keys(checkpoints):
  config = with_init(checkpoints)
  with pytest.raises(ValueError, match=r"has no frozen\['wav2vec2'\]"):
    weights.apply_pretrained(config, {}, {})
  mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])
  abstract = experiment.build(config, mesh).abstract_state
  for kind, (field, subtree) in pretrained.SUBTREES.items():  # what the inspect command maps to
    assert pretrained.target_shapes(config, kind) == param_tree.shapes(
        getattr(abstract, field)[subtree])
  sentinel = lambda a: np.full(a.shape, 7.0, a.dtype)
  params, frozen = jax.tree.map(sentinel, abstract.params), jax.tree.map(sentinel, abstract.frozen)
  new_params, new_frozen, reports = weights.apply_pretrained(config, params, frozen)
  kept = {f"{r.kind}:{k.target}" for r in reports for k in r.kept}
  assert {"vitmae:prompt_embed/kernel", "vitmae:blocks/layers_0/cross_attn/query_kernel"} <= kept
  flat_new, flat_old = param_tree.flatten(new_params), param_tree.flatten(params)
  untouched = [p for p in flat_old if p.startswith(("audio_adapter/", "decoder/prompt_embed/"))]
  assert untouched and all(flat_new[p] is flat_old[p] for p in untouched)
  assert not (flat_new["encoder/pos_embed"] == 7.0).all()
  assert all(not (v == 7.0).all() for v in param_tree.flatten(new_frozen).values())
  broken = with_init(checkpoints, sapiens=checkpoints["broken"])
  with pytest.raises(ValueError, match=r"unknown key layers.0.attn.gamma1.weight \(32,\)"):
    weights.apply_pretrained(broken, params, frozen)


def test_inspect_command_prints_the_mapping_and_fails_on_problems(checkpoints):
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  command = [sys.executable, "-m", "synclipmae_jax.weights.inspect",
             "--config=configs/demo.py:tiny", "sapiens", checkpoints["broken"]]
  result = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode == 1, result.stderr
  out = result.stdout
  assert "PROBLEM: unknown key layers.0.attn.gamma1.weight (32,)" in out
  assert ("patch_embed.projection.weight (32, 3, 8, 8) -> patch_embed/kernel (192, 32): Conv2d "
          "weight (D, c, p, q) -> kernel on (p q c) patches") in out
  assert ("pos_embed (1, 10, 32) -> pos_embed (4, 32): drop the cls slot, bicubic antialiased "
          "resize to 2 x 2") in out
  assert "blocks/layers_1/self_attn/value_kernel (32, 2, 16)" in out
