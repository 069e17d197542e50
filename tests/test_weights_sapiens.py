"""Sapiens (mmpretrain ViT) checkpoints -> VitEncoder: parity with a PyTorch ViT peer.

The peer is transformers' `Dinov2WithRegistersModel` with layer scale 1 (a plain pre-LN ViT): its
sequence is [cls, register 1, register 2, patches], where only the cls token and the patches get
position embeddings. VitEncoder's sequence is [3 prompts, patches] with position embeddings on the
patches only. Setting the peer's registers to prompts 1, 2 and its cls token to
prompts 0 - pos_embed[cls slot] makes the two models compute the same function, so all tokens
(patches and prompts) must agree. When the training grid differs from the checkpoint's, the peer
resizes its position grid itself (bicubic, antialiased) on the larger images.
"""

from __future__ import annotations

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers

from synclipmae_jax import masking
from synclipmae_jax.models import vit
from synclipmae_jax.weights import checkpoint_files, param_tree, sapiens_checkpoint
from torch_peers import random_eval_model

torch = pytest.importorskip("torch")

SIZE = vit.VitSize(width=32, depth=2, num_heads=2, mlp_dim=64)
PATCH = 4
CHECKPOINT_GRID = 4



def random_peer():
  config = transformers.Dinov2WithRegistersConfig(
      hidden_size=SIZE.width, num_hidden_layers=SIZE.depth, num_attention_heads=SIZE.num_heads,
      mlp_ratio=SIZE.mlp_dim // SIZE.width, patch_size=PATCH, image_size=CHECKPOINT_GRID * PATCH,
      num_register_tokens=2, layerscale_value=1.0, layer_norm_eps=1e-6,
      hidden_act="gelu", qkv_bias=True, attn_implementation="eager")
  # mmpretrain's ViT has no layer scale: keep it at 1
  return random_eval_model(transformers.Dinov2WithRegistersModel, config,
                           keep=lambda name: "layer_scale" in name)


def to_mmpretrain(peer) -> dict:
  """The peer's weights under Sapiens / mmpretrain VisionTransformer key names."""
  s = {k: v.detach().clone() for k, v in peer.state_dict().items()}
  out = {"cls_token": s["embeddings.cls_token"], "pos_embed": s["embeddings.position_embeddings"],
         "patch_embed.projection.weight": s["embeddings.patch_embeddings.projection.weight"],
         "patch_embed.projection.bias": s["embeddings.patch_embeddings.projection.bias"],
         "ln1.weight": s["layernorm.weight"], "ln1.bias": s["layernorm.bias"]}
  for i in range(SIZE.depth):
    src, dst = f"encoder.layer.{i}.", f"layers.{i}."
    for part in ("weight", "bias"):
      out[f"{dst}ln1.{part}"] = s[f"{src}norm1.{part}"]
      out[f"{dst}ln2.{part}"] = s[f"{src}norm2.{part}"]
      out[f"{dst}attn.qkv.{part}"] = torch.cat(
          [s[f"{src}attention.{p}_proj.{part}"] for p in "qkv"])
      out[f"{dst}attn.proj.{part}"] = s[f"{src}attention.o_proj.{part}"]
      out[f"{dst}ffn.layers.0.0.{part}"] = s[f"{src}mlp.fc1.{part}"]
      out[f"{dst}ffn.layers.1.{part}"] = s[f"{src}mlp.fc2.{part}"]
  return out


class _Holder(torch.nn.Module):
  """A module tree whose state-dict keys are given, for writing a TorchScript archive."""

  def __init__(self, state: dict):
    super().__init__()
    for key, value in state.items():
      *parents, name = key.split(".")
      module = self
      for parent in parents:
        if not hasattr(module, parent):
          module.add_module(parent, torch.nn.Module())
        module = getattr(module, parent)
      module.register_parameter(name, torch.nn.Parameter(value.clone()))

  def forward(self, x):
    return 2 * x


@pytest.fixture(scope="module")
def peer():
  return random_peer()


@pytest.fixture(scope="module")
def files(peer, tmp_path_factory):
  """The same weights as a plain .pth, an mmengine checkpoint and a TorchScript archive."""
  root = tmp_path_factory.mktemp("sapiens")
  state = to_mmpretrain(peer)
  paths = {"plain": str(root / "plain.pth"), "wrapped": str(root / "wrapped.pth"),
           "torchscript": str(root / "torchscript.pt2")}
  torch.save(state, paths["plain"])
  wrapped = {f"backbone.{k}": v for k, v in state.items()}
  wrapped["neck.mask_token"] = torch.zeros(1, 1, 16)
  torch.save({"meta": {"epoch": 1600}, "state_dict": wrapped}, paths["wrapped"])
  with warnings.catch_warnings():  # torch.jit.trace is deprecated, but Sapiens ships such files
    warnings.simplefilter("ignore", DeprecationWarning)
    traced = torch.jit.trace(_Holder({k: v.half() if k.endswith("cls_token") else v
                                      for k, v in wrapped.items()}), torch.ones(1))
  traced.save(paths["torchscript"])
  return paths


def init_args(grid: int) -> tuple:
  return (jax.random.key(1), jnp.zeros((1, grid * grid, PATCH ** 2 * 3)),
          jnp.zeros((1, 1), jnp.int32))


def encoder_shapes(grid: int, scan: bool = False) -> dict:
  """Flat parameter shapes of the VitEncoder at `grid` (nothing is computed)."""
  abstract = jax.eval_shape(vit.VitEncoder(SIZE, grid, scan=scan).init, *init_args(grid))
  return param_tree.shapes(nn.unbox(abstract["params"]))


@pytest.fixture(scope="module")
def encoders():
  """(grid, scan) -> (jitted VitEncoder.apply, initial parameters), each built once."""
  cache = {}

  def get(grid: int, scan: bool = False):
    if (grid, scan) not in cache:
      module = vit.VitEncoder(SIZE, grid, scan=scan)
      cache[grid, scan] = jax.jit(module.apply), nn.unbox(module.init(*init_args(grid))["params"])
    return cache[grid, scan]

  return get


def run_both(peer, apply, params, images):
  """(our patch tokens, our prompt outputs, the peer's patch tokens, the peer's prefix outputs)."""
  grid = images.shape[1] // PATCH
  patches = masking.patchify(jnp.asarray(images), PATCH)
  keep = jnp.broadcast_to(jnp.arange(grid * grid), (images.shape[0], grid * grid))
  tokens, prompts = apply({"params": params}, patches, keep)
  prompt_values = torch.from_numpy(np.array(params["prompts"]))
  with torch.no_grad():
    cls_position = peer.embeddings.position_embeddings[:, :1]
    peer.embeddings.cls_token.copy_(prompt_values[None, :1] - cls_position)
    peer.embeddings.register_tokens.copy_(prompt_values[None, 1:])
    out = peer(torch.from_numpy(images).permute(0, 3, 1, 2)).last_hidden_state.numpy()
  return np.asarray(tokens), np.asarray(prompts), out[:, 3:], out[:, :3]


@pytest.fixture(scope="module")
def images():
  return np.random.default_rng(0).normal(size=(2, 24, 24, 3)).astype(np.float32)


@pytest.mark.parametrize("variant,grid", [
    ("plain", CHECKPOINT_GRID), ("wrapped", CHECKPOINT_GRID), ("torchscript", CHECKPOINT_GRID),
    ("plain", 6), ("plain", 3)])  # resized position grids: up- and (antialiased) downsampling
def test_patch_tokens_match_pytorch_vit(peer, files, images, encoders, variant, grid):
  apply, params = encoders(grid)
  updates, report = sapiens_checkpoint.load(files[variant], param_tree.shapes(params), seed=3)
  params = param_tree.replace(params, updates)
  assert not report.kept and set(updates) == set(param_tree.flatten(params))
  assert [u.key for u in report.unused] == ([] if variant == "plain" else ["neck.mask_token"])
  size = grid * PATCH
  tokens, prompts, peer_tokens, peer_prompts = run_both(
      peer, apply, params, images[:, :size, :size])
  error = float(np.abs(tokens - peer_tokens).max())
  print(f"{variant}, grid {CHECKPOINT_GRID} -> {grid}: max abs error of patch tokens {error}, "
        f"prompts {float(np.abs(prompts - peer_prompts).max())}")
  assert tokens.shape == (2, grid * grid, SIZE.width)
  assert error < 1e-4
  np.testing.assert_allclose(prompts, peer_prompts, rtol=0, atol=1e-4)


def test_scanned_layers_load_and_compute_the_same(files, images, encoders):
  apply, params = encoders(CHECKPOINT_GRID)
  scanned_apply, scanned = encoders(CHECKPOINT_GRID, scan=True)
  updates, _ = sapiens_checkpoint.load(files["plain"], param_tree.shapes(params))
  scanned_updates, _ = sapiens_checkpoint.load(files["plain"], param_tree.shapes(scanned))
  assert scanned_updates["blocks/layers/self_attn/query_kernel"].shape == (SIZE.depth, 32, 2, 16)
  np.testing.assert_array_equal(scanned_updates["blocks/layers/mlp/fc1/kernel"][1],
                                updates["blocks/layers_1/mlp/fc1/kernel"])
  params = param_tree.replace(params, updates)
  scanned = param_tree.replace(scanned, scanned_updates)
  patches = masking.patchify(jnp.asarray(images[:, :16, :16]), PATCH)
  keep = jnp.tile(jnp.arange(16), (2, 1))[:, ::2]  # half of the patches visible
  ours = apply({"params": params}, patches, keep)
  theirs = scanned_apply({"params": scanned}, patches, keep)
  for a, b in zip(ours, theirs):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_prompts_start_from_the_cls_token_plus_seeded_noise(peer, files):
  state = checkpoint_files.read_state_dict(files["plain"])
  shapes = encoder_shapes(CHECKPOINT_GRID)
  first, _ = sapiens_checkpoint.load(files["plain"], shapes, seed=0)
  again, _ = sapiens_checkpoint.load(files["plain"], shapes, seed=0)
  other, _ = sapiens_checkpoint.load(files["plain"], shapes, seed=1)
  cls_in = state["cls_token"].reshape(-1) + state["pos_embed"][0, 0]
  noise = first["prompts"] - cls_in
  np.testing.assert_array_equal(first["prompts"], again["prompts"])
  assert not np.array_equal(first["prompts"], other["prompts"])
  assert 0.01 < noise.std() < 0.03 and np.abs(noise).max() < 0.15
  assert not np.allclose(noise[0], noise[1]) and not np.allclose(noise[1], noise[2])


def test_torchscript_archive_reads_like_the_state_dict(files):
  plain = checkpoint_files.read_state_dict(files["plain"])
  archive = checkpoint_files.read_state_dict(files["torchscript"])
  assert set(archive) == {f"backbone.{k}" for k in plain} | {"neck.mask_token"}
  for key, value in plain.items():
    expected = value.astype(np.float16).astype(np.float32) if key == "cls_token" else value
    np.testing.assert_array_equal(archive[f"backbone.{key}"], expected, err_msg=key)
    assert archive[f"backbone.{key}"].dtype == np.float32


def test_problems_and_kept_parameters_are_reported(files):
  state = checkpoint_files.read_state_dict(files["plain"])
  shapes = encoder_shapes(CHECKPOINT_GRID)
  broken = dict(state)
  broken["layers.0.attn.gamma1.weight"] = np.ones(32, np.float32)
  broken["layers.1.attn.qkv.weight"] = np.zeros((96, 48), np.float32)
  del broken["layers.1.ffn.layers.1.bias"]
  _, report = sapiens_checkpoint.convert(broken, shapes, path="broken.pth")
  with pytest.raises(ValueError) as e:
    report.check()
  message = str(e.value)
  assert "cannot load the sapiens checkpoint broken.pth: 5 problem(s)" in message
  assert "unknown key layers.0.attn.gamma1.weight (32,)" in message
  assert ("shape mismatch: layers.1.attn.qkv.weight (96, 48) -> "
          "blocks/layers_1/self_attn/query_kernel (32, 2, 16)") in message
  assert "missing key layers.1.ffn.layers.1.bias for blocks/layers_1/mlp/fc2/bias (32,)" in message
  stripped = {k: v for k, v in state.items() if k not in ("cls_token", "ln1.weight", "ln1.bias")}
  updates, report = sapiens_checkpoint.convert(stripped, shapes)
  report.check()
  assert sorted(k.target for k in report.kept) == ["ln_out/bias", "ln_out/scale", "prompts"]
  assert "prompts" not in updates
  bad = dict(state, pos_embed=np.zeros((1, 15, 32), np.float32))
  with pytest.raises(ValueError, match=r"pos_embed \(1, 15, 32\) -> pos_embed \(16, 32\)"):
    sapiens_checkpoint.convert(bad, shapes)[1].check()
