"""Sapiens checkpoints (mmpretrain VisionTransformer) -> the ViT encoder (`models.vit.VitEncoder`).

Paper 5: the visual encoder is initialised from Sapiens-0.3B (ViT-L/16, 1024 wide, 24 layers,
16 heads, pre-LN, qkv bias, LayerNorm eps 1e-6), pretrained as an MAE on 1024 x 1024 human images.
The release is an mmpretrain state dict (`sapiens_0.3b_epoch_1600_clean.pth`), with or without a
`backbone.` prefix and a `state_dict` wrapper, or a TorchScript archive (read without running it,
see `torchscript_archive`). Keys -> parameters:

- `patch_embed.projection.weight` Conv2d (D, c, p, q) -> `patch_embed/kernel` (p q c, D):
  `masking.patchify` flattens a patch as (row p, column q, channel c), so the kernel is
  weight.transpose(2, 3, 1, 0).reshape(p * q * c, D); `.bias` -> `patch_embed/bias`;
- `pos_embed` (1, 1 + n * n, D): the cls slot is dropped and the n x n grid resized bicubically
  to the training grid (`grid_resize`) -> `pos_embed` (grid * grid, D);
- `layers.{i}.ln1` / `ln2` -> `blocks/layers_{i}/ln_self` / `ln_mlp`;
- `layers.{i}.attn.qkv` (3 D, D), rows ordered (q|k|v, head, head_dim) -> `self_attn/query_*`,
  `key_*`, `value_*` kernels (D, H, hd) and biases (H, hd); `attn.proj` -> `out_kernel`
  (H, hd, D), `out_bias`;
- `layers.{i}.ffn.layers.0.0` / `ffn.layers.1` -> `mlp/fc1` / `mlp/fc2`;
- the final norm `ln1` -> `ln_out` (kept at its identity initialisation if absent).

The three prompt tokens (identity, vocal, ambient; paper 3.2) have no counterpart: each starts as
the token Sapiens' cls slot feeds its first layer (`cls_token + pos_embed[cls slot]`) plus
N(0, 0.02^2) noise (numpy, seeded by `seed`) that tells them apart. The pretrained network already
routes that token (it attends over all patches and is read out by the MAE decoder), so the prompts
start as image summaries instead of unknown inputs. The encoder adds no position embedding to the
prompts, so the cls slot's position embedding is folded into their initial value.

Pixels: Sapiens normalises 0-255 RGB with mean (123.675, 116.28, 103.53) and std
(58.395, 57.12, 57.375): the ImageNet statistics x 255 that `objective.images_to_patches` applies to
[0, 1] images, so the patch embedding loads unchanged (`convert` checks this).
"""

from __future__ import annotations

import re

import numpy as np

from synclipmae_jax import objective
from synclipmae_jax.weights import checkpoint_files, grid_resize, param_tree, report as report_lib

PREFIX = "backbone."
PIXEL_MEAN_255 = np.array([123.675, 116.28, 103.53], np.float32)
PIXEL_STD_255 = np.array([58.395, 57.12, 57.375], np.float32)
PROMPT_NOISE_STD = 0.02
_LAYER = re.compile(r"^blocks/layers_(\d+)/ln_self/scale$")


def _has_cls_slot(num_positions: int) -> bool:
  """True for 1 + n * n positions; False for n * n; ValueError otherwise."""
  if grid_resize.grid_size(num_positions - 1) is not None and num_positions > 1:
    return grid_resize.grid_size(num_positions) is None
  if grid_resize.grid_size(num_positions) is not None:
    return False
  raise ValueError(
      f"pos_embed has {num_positions} positions: not n * n, with or without a cls slot")


def _pos_grid(pos_embed: np.ndarray) -> np.ndarray:
  """(1, [1 +] n * n, D) -> (n * n, D) without the cls slot."""
  table = pos_embed.reshape(-1, pos_embed.shape[-1])
  return table[1:] if _has_cls_slot(table.shape[0]) else table


def _split_qkv(index: int, num_heads: int):
  """Part `index` (0 q, 1 k, 2 v) of a fused qkv Linear weight (3 D, D) or bias (3 D,)."""

  def fn(array):
    part = np.split(array, 3)[index]
    if part.ndim == 2:
      return part.T.reshape(part.shape[1], num_heads, -1)
    return part.reshape(num_heads, -1)

  return fn


def _rules(keys: set[str], shapes: dict[str, tuple[int, ...]], seed: int) -> list[param_tree.Rule]:
  width = shapes["pos_embed"][1]
  grid = grid_resize.grid_size(shapes["pos_embed"][0])
  num_heads = shapes["blocks/layers_0/self_attn/query_kernel"][1]
  depth = sum(bool(_LAYER.match(p)) for p in shapes)
  rules = [
      param_tree.Rule("patch_embed/kernel", ("patch_embed.projection.weight",),
                      lambda w: w.transpose(2, 3, 1, 0).reshape(-1, w.shape[0]),
                      "Conv2d weight (D, c, p, q) -> kernel on (p q c) patches: "
                      "transpose(2, 3, 1, 0), reshape (p*q*c, D)"),
      param_tree.Rule("patch_embed/bias", ("patch_embed.projection.bias",), np.asarray, "copy"),
      param_tree.Rule("pos_embed", ("pos_embed",),
                      lambda pe: grid_resize.resize(_pos_grid(pe), grid),
                      f"drop the cls slot, bicubic antialiased resize to {grid} x {grid}"),
  ]
  if "cls_token" in keys:
    noise = np.random.default_rng(seed).normal(0.0, PROMPT_NOISE_STD, (3, width))

    def prompts(cls_token, pos_embed):
      table = pos_embed.reshape(-1, pos_embed.shape[-1])
      cls_pos = table[0] if _has_cls_slot(table.shape[0]) else 0.0
      return (cls_token.reshape(-1) + cls_pos)[None, :] + noise

    rules.append(param_tree.Rule(
        "prompts", ("cls_token", "pos_embed"), prompts,
        f"cls_token + pos_embed[cls slot], + N(0, {PROMPT_NOISE_STD}^2) noise (seed {seed}) "
        "per prompt"))
  if "ln1.weight" in keys:
    rules += param_tree.layer_norm_rules("ln_out", "ln1")  # the final norm
  for i in range(depth):
    src, dst = f"layers.{i}.", f"blocks/layers_{i}/"
    for norm, name in (("ln1", "ln_self"), ("ln2", "ln_mlp")):
      rules += param_tree.layer_norm_rules(f"{dst}{name}", f"{src}{norm}")
    for index, name in enumerate(("query", "key", "value")):
      rules += [
          param_tree.Rule(f"{dst}self_attn/{name}_kernel", (f"{src}attn.qkv.weight",),
                          _split_qkv(index, num_heads),
                          f"rows {index}D:{index + 1}D of qkv, transpose, reshape (D, H, hd)"),
          param_tree.Rule(f"{dst}self_attn/{name}_bias", (f"{src}attn.qkv.bias",),
                          _split_qkv(index, num_heads),
                          f"entries {index}D:{index + 1}D of qkv, reshape (H, hd)")]
    rules += [
        param_tree.Rule(f"{dst}self_attn/out_kernel", (f"{src}attn.proj.weight",),
                        lambda w: w.T.reshape(num_heads, -1, w.shape[0]),
                        "Linear weight (D, D) -> transpose, reshape (H, hd, D)"),
        param_tree.Rule(f"{dst}self_attn/out_bias", (f"{src}attn.proj.bias",), np.asarray, "copy")]
    for fc, key in (("fc1", "ffn.layers.0.0"), ("fc2", "ffn.layers.1")):
      rules += [param_tree.Rule(f"{dst}mlp/{fc}/kernel", (f"{src}{key}.weight",), lambda w: w.T,
                                "Linear weight (out, in) -> kernel (in, out): transpose"),
                param_tree.Rule(f"{dst}mlp/{fc}/bias", (f"{src}{key}.bias",), np.asarray, "copy")]
  return rules


def convert(state_dict: dict[str, np.ndarray], encoder_shapes: dict[str, tuple[int, ...]],
            seed: int = 0, path: str = "") -> tuple[dict[str, np.ndarray], report_lib.LoadReport]:
  """Converts a Sapiens / mmpretrain ViT state dict for the encoder with `encoder_shapes`.

  Args:
    state_dict: checkpoint key -> array.
    encoder_shapes: flat parameter shapes of the `VitEncoder` (the `encoder` subtree; per-layer
      `blocks/layers_{i}` or scanned `blocks/layers`).
    seed: seeds the prompt tokens' noise.
    path: the checkpoint's path, for the report.

  Returns:
    (flat encoder parameter path -> array, report; `report.check()` raises on problems).
  """
  report = report_lib.LoadReport("sapiens", path)
  prefixed = any(k.startswith(PREFIX) for k in state_dict)
  backbone, key_names = {}, {}
  for key, value in state_dict.items():
    if prefixed and not key.startswith(PREFIX):
      report.unused.append(report_lib.Unused(
          key, value.shape, "not part of the backbone (MAE decoder neck, head or preprocessor)"))
    else:
      backbone[key.removeprefix(PREFIX)], key_names[key.removeprefix(PREFIX)] = value, key
  if not (np.allclose(objective.PIXEL_MEAN * 255, PIXEL_MEAN_255)
          and np.allclose(objective.PIXEL_STD * 255, PIXEL_STD_255)):
    report.problems.append(
        f"objective.images_to_patches uses mean {objective.PIXEL_MEAN} / std {objective.PIXEL_STD} "
        f"on [0, 1], Sapiens {PIXEL_MEAN_255 / 255} / {PIXEL_STD_255 / 255}")
  shapes = param_tree.per_layer_shapes(encoder_shapes)
  rules = _rules(set(backbone), shapes, seed)
  updates = param_tree.run_rules(rules, backbone, shapes, report, key_names)
  converted = {rule.target for rule in rules}
  for target in ("prompts", "ln_out/scale", "ln_out/bias"):
    if target not in converted:
      report.kept.append(report_lib.Kept(
          target, shapes[target], "the checkpoint has no cls_token" if target == "prompts"
          else "the checkpoint has no final norm (ln1): identity LayerNorm"))
  if "pos_embed" in updates:
    n, grid = (grid_resize.grid_size(_pos_grid(backbone["pos_embed"]).shape[0]),
               grid_resize.grid_size(shapes["pos_embed"][0]))
    report.notes.append(f"position grid {n} x {n} -> {grid} x {grid}")
  return param_tree.stack_layers(updates, encoder_shapes), report


def load(path: str, encoder_shapes: dict[str, tuple[int, ...]], seed: int = 0
         ) -> tuple[dict[str, np.ndarray], report_lib.LoadReport]:
  """Reads and converts a checkpoint file; raises ValueError listing every problem."""
  updates, report = convert(checkpoint_files.read_state_dict(path), encoder_shapes, seed, path)
  report.check()
  return updates, report
