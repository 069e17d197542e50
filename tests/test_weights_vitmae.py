"""ViTMAEForPreTraining checkpoints -> MaeDecoder: parity with transformers' ViTMAE decoder.

transformers' decoder runs on [cls, patches]: the cls token (the encoder's, projected) takes part
in every self-attention, and its output row is dropped at the end. SyncLipMAE's decoder has no
cls token, so an unmodified comparison cannot be exact. Two exact comparisons instead:

1. The default decoder (prompt cross-attention, zero output projection after loading) against
   transformers' decoder whose layers get an attention mask hiding the cls key (a forward
   pre-hook adds it to each `ViTMAELayer` call): the patches then never see the cls token, so
   both compute ViTMAE's decoder on the visible and mask tokens alone.
2. The concatenation variant (`cross_attention=False`, ablation C1), which appends projected prompt
   tokens to the self-attention sequence, against the unmodified transformers decoder: the cls
   token is passed as the one prompt, `prompt_embed` set to `decoder_embed` plus the cls slot's
   position embedding. Attention has no positional bias, so appending instead of prepending does
   not change the patches' outputs.
"""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers

from synclipmae_jax.models import decoder
from synclipmae_jax.weights import checkpoint_files, param_tree, vitmae_checkpoint
from torch_peers import random_eval_model

torch = pytest.importorskip("torch")

ENCODER_WIDTH, WIDTH, DEPTH, HEADS, MLP = 32, 16, 2, 2, 32
PATCH, GRID, FRAMES, VISIBLE = 4, 4, 3, 5
# current key -> the name in the Hub's facebook/vit-mae-* files.
HUB_NAMES = (("attention.q_proj", "attention.attention.query"),
             ("attention.k_proj", "attention.attention.key"),
             ("attention.v_proj", "attention.attention.value"),
             ("attention.o_proj", "attention.output.dense"),
             ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense"),
             ("vit.layers.", "vit.encoder.layer."))



def random_peer(encoder_width: int = ENCODER_WIDTH):
  config = transformers.ViTMAEConfig(
      hidden_size=encoder_width, num_hidden_layers=1, num_attention_heads=2,
      intermediate_size=2 * encoder_width, decoder_hidden_size=WIDTH,
      decoder_num_hidden_layers=DEPTH, decoder_num_attention_heads=HEADS,
      decoder_intermediate_size=MLP, patch_size=PATCH, image_size=GRID * PATCH,
      hidden_act="gelu", layer_norm_eps=1e-6, attn_implementation="eager")
  return random_eval_model(transformers.ViTMAEForPreTraining, config)


def hub_state_dict(peer) -> dict:
  state = {}
  for key, tensor in peer.state_dict().items():
    for current, hub in HUB_NAMES:
      key = key.replace(current, hub)
    state[key] = tensor.clone()
  return state


@pytest.fixture(scope="module")
def peer():
  return random_peer()


@pytest.fixture(scope="module")
def directories(peer, tmp_path_factory):
  """The peer in three key generations: written by `save_pretrained` (transformers 5), with the
  Hub's names, and as `model.state_dict()` (current names), the last two as pytorch_model.bin."""
  root = tmp_path_factory.mktemp("vitmae")
  peer.save_pretrained(root / "saved")
  for name, state in (("hub", hub_state_dict(peer)), ("current", peer.state_dict())):
    os.makedirs(root / name)
    peer.config.save_pretrained(root / name)
    torch.save(state, root / name / "pytorch_model.bin")
  return {name: str(root / name) for name in ("saved", "hub", "current")}


@pytest.fixture(scope="module")
def inputs():
  """Encoder outputs [cls, visible tokens in shuffled order] and the shuffles (HF's convention)."""
  rng = np.random.default_rng(0)
  shuffle = np.stack([rng.permutation(GRID * GRID) for _ in range(FRAMES)])
  hidden = rng.normal(size=(FRAMES, 1 + VISIBLE, ENCODER_WIDTH)).astype(np.float32)
  return hidden, shuffle[:, :VISIBLE], np.argsort(shuffle, axis=1)


def make_decoder(cross_attention: bool = True, scan: bool = False, heads: int = HEADS):
  return decoder.MaeDecoder(WIDTH, DEPTH, heads, MLP, GRID, PATCH ** 2 * 3,
                            cross_attention=cross_attention, scan=scan)


def init_args(encoder_width: int = ENCODER_WIDTH) -> tuple:
  return (jax.random.key(0), jnp.zeros((1, VISIBLE, encoder_width)),
          jnp.zeros((1, VISIBLE), jnp.int32), jnp.zeros((1, 3, encoder_width)))


def decoder_shapes(**kwargs) -> dict:
  """Flat parameter shapes of `make_decoder(**kwargs)` (nothing is computed)."""
  abstract = jax.eval_shape(make_decoder(**kwargs).init, *init_args())
  return param_tree.shapes(nn.unbox(abstract["params"]))


def init_decoder(cross_attention: bool = True):
  """(decoder, its jitted apply, randomly initialised parameters)."""
  module = make_decoder(cross_attention)
  return module, jax.jit(module.apply), nn.unbox(jax.jit(module.init)(*init_args())["params"])


def hf_decoder(peer, hidden, ids_restore, hide_cls: bool) -> np.ndarray:
  """transformers' decoder logits [F, N, p*p*3]; with `hide_cls` no query attends to the cls."""
  length = 1 + GRID * GRID
  mask = torch.zeros(1, 1, length, length)
  mask[..., 0] = float("-inf")
  hook = lambda module, args, kwargs: (args, dict(kwargs, attention_mask=mask))
  handles = [layer.register_forward_pre_hook(hook, with_kwargs=True)
             for layer in peer.decoder.decoder_layers] if hide_cls else []
  try:
    with torch.no_grad():
      return peer.decoder(torch.from_numpy(hidden), torch.from_numpy(ids_restore)).logits.numpy()
  finally:
    for handle in handles:
      handle.remove()


def test_loaded_decoder_equals_vitmae_decoder_before_training(peer, directories, inputs):
  hidden, keep, ids_restore = inputs
  _, apply, params = init_decoder()
  updates, report = vitmae_checkpoint.load(directories["saved"], param_tree.shapes(params))
  params = param_tree.replace(params, updates)
  prompts = np.random.default_rng(1).normal(size=(FRAMES, 3, ENCODER_WIDTH)).astype(np.float32)
  ours = np.asarray(apply({"params": params}, hidden[:, 1:], keep, prompts))
  expected = hf_decoder(peer, hidden, ids_restore, hide_cls=True)
  error = float(np.abs(ours - expected).max())
  print(f"cross-attention decoder vs ViTMAE decoder without the cls key: max abs error {error}")
  assert ours.shape == (FRAMES, GRID * GRID, PATCH ** 2 * 3)
  assert error < 1e-4
  assert np.abs(ours - hf_decoder(peer, hidden, ids_restore, hide_cls=False)).max() > 1e-3
  other_prompts = np.asarray(apply({"params": params}, hidden[:, 1:], keep, 5 * prompts))
  np.testing.assert_array_equal(ours, other_prompts)  # the cross-attention is a no-op
  kept = {k.target.split("/", 2)[-1] for k in report.kept if "/cross_attn/" in k.target}
  assert kept == {"cross_attn/query_kernel", "cross_attn/query_bias", "cross_attn/key_kernel",
                  "cross_attn/key_bias", "cross_attn/value_kernel", "cross_attn/value_bias"}
  assert {m.target.rsplit("/", 1)[-1] for m in report.mappings if "cross_attn" in m.target} == {
      "out_kernel", "out_bias"}


def test_concatenation_decoder_with_cls_as_prompt_equals_vitmae_decoder(peer, directories, inputs):
  hidden, keep, ids_restore = inputs
  _, apply, params = init_decoder(cross_attention=False)
  updates, _ = vitmae_checkpoint.load(directories["saved"], param_tree.shapes(params))
  cls_pos = peer.decoder.decoder_pos_embed[0, 0].detach().numpy()
  updates["prompt_embed/kernel"] = updates["embed/kernel"]
  updates["prompt_embed/bias"] = updates["embed/bias"] + cls_pos
  params = param_tree.replace(params, updates)
  ours = np.asarray(apply({"params": params}, hidden[:, 1:], keep, hidden[:, :1]))
  error = float(np.abs(ours - hf_decoder(peer, hidden, ids_restore, hide_cls=False)).max())
  print(f"concatenation decoder, cls token as prompt, vs ViTMAE decoder: max abs error {error}")
  assert error < 1e-4


def test_key_generations_and_scanned_layers_load_the_same(directories):
  loaded = {name: vitmae_checkpoint.load(path, decoder_shapes())
            for name, path in directories.items()}
  reference, _ = loaded["current"]
  for name, (updates, report) in loaded.items():
    assert updates.keys() == reference.keys()
    for path in updates:
      np.testing.assert_array_equal(updates[path], reference[path], err_msg=f"{name} {path}")
    assert all(u.key.startswith("vit.") for u in report.unused) and len(report.unused) == 22
  sources = lambda name: {s for m in loaded[name][1].mappings for s in m.sources}
  assert "decoder.decoder_layers.0.attention.attention.query.weight" in sources("hub")
  assert "decoder.decoder_encoder.layer.0.attention.attention.query.weight" in sources("saved")
  assert "decoder.decoder_layers.0.attention.q_proj.weight" in sources("current")
  stacked, _ = vitmae_checkpoint.load(directories["saved"], decoder_shapes(scan=True))
  np.testing.assert_array_equal(stacked["blocks/layers/self_attn/out_kernel"][1],
                                reference["blocks/layers_1/self_attn/out_kernel"])


def test_embed_of_another_encoder_width_is_reported_and_kept(tmp_path):
  random_peer(encoder_width=24).save_pretrained(tmp_path)
  updates, report = vitmae_checkpoint.load(str(tmp_path), decoder_shapes())
  assert "embed/kernel" not in updates and "mask_token" in updates
  unused = {u.key: u.reason for u in report.unused}
  assert "24 wide" in unused["decoder.decoder_embed.weight"]
  assert {"embed/kernel", "embed/bias"} <= {k.target for k in report.kept}


def test_config_and_shape_problems_are_listed(directories):
  with pytest.raises(ValueError, match="decoder_num_attention_heads=2 != the decoder's 4"):
    vitmae_checkpoint.load(directories["saved"], decoder_shapes(heads=4))
  state = checkpoint_files.read_hf_directory(directories["saved"])
  state["decoder.decoder_pred.weight"] = np.zeros((12, WIDTH), np.float32)
  state["decoder.extra.weight"] = np.zeros((2,), np.float32)
  with pytest.raises(ValueError) as e:
    vitmae_checkpoint.convert(state, decoder_shapes(), "ckpt")[1].check()
  assert "decoder.decoder_pred.weight (12, 16) -> head/kernel (16, 48)" in str(e.value)
  assert "unknown key decoder.extra.weight (2,)" in str(e.value)
