"""ViTMAE checkpoints (transformers `ViTMAEForPreTraining`) -> the MAE decoder (`models.decoder`).

Paper 5: the decoder follows the ViTMAE-B design (512 wide, 8 layers, 16 heads, MLP 2048, patch
16). From a Hugging Face `ViTMAEForPreTraining` directory (config.json + model.safetensors or
pytorch_model.bin) it takes:

- `decoder.decoder_embed` -> `embed` (only when the checkpoint's encoder width equals ours; the
  paper's Sapiens-0.3B encoder is 1024 wide, ViTMAE-B's 768, so it usually keeps its
  initialisation and is reported unused);
- `decoder.mask_token` (1, 1, Dd) -> `mask_token` (Dd,);
- `decoder.decoder_pos_embed` (1, 1 + n * n, Dd) -> `pos_embed`: the cls slot dropped, resized to
  the training grid (`grid_resize`) if n differs;
- per layer `decoder.decoder_layers.{i}.`: `layernorm_before` -> `ln_self`;
  `attention.{q,k,v}_proj` -> `self_attn/{query,key,value}_kernel` (Dd, H, hd) and biases (H, hd);
  `attention.o_proj` -> `self_attn/out_kernel` (H, hd, Dd); `layernorm_after` -> `ln_mlp`;
  `mlp.fc1` / `mlp.fc2` -> `mlp/fc1` / `mlp/fc2` (the current module names, as in
  `model.state_dict()`). Files use older names, renamed here as transformers' own conversion
  mapping does on loading: the Hub's facebook/vit-mae-* have `attention.attention.{query,key,
  value}`, `attention.output.dense`, `intermediate.dense`, `output.dense`; transformers 5's
  `save_pretrained` writes those too, and the layers as `decoder.decoder_encoder.layer.{i}` (its
  inverse of the ViT renaming `encoder.layer.` -> `layers.`);
- `decoder.decoder_norm` -> `ln_out`; `decoder.decoder_pred` -> `head` (pixels of a patch in
  (p, q, c) order in both, like `masking.patchify`).

The prompt cross-attention of each block is new (paper 3.2): its output projection `out_kernel` /
`out_bias` is set to zero, so before training `x + cross_attn(...) = x` and the decoder computes
exactly ViTMAE's decoder on the visible tokens and mask tokens (without ViTMAE's cls token, which
SyncLipMAE does not have); `prompt_embed` and the cross-attention's other parameters keep their
initialisation. The encoder weights (`vit.*`) are reported unused: SyncLipMAE's encoder comes from
Sapiens.
"""

from __future__ import annotations

import re

import numpy as np
import transformers

from synclipmae_jax.models import layers
from synclipmae_jax.weights import checkpoint_files, grid_resize, param_tree, report as report_lib

DECODER = "decoder."
ENCODER = "vit."
# transformers' conversion mapping for ViTMAEForPreTraining (old name -> current), in order.
_RENAMES = (("encoder.layer.", "layers."), ("attention.query", "q_proj"),
            ("attention.key", "k_proj"),
            ("attention.value", "v_proj"), ("attention.output.dense", "attention.o_proj"),
            ("intermediate.dense", "mlp.fc1"), ("output.dense", "mlp.fc2"))
_LAYER = re.compile(r"^blocks/layers_(\d+)/ln_self/scale$")


def canonical_key(key: str) -> str:
  """The current transformers name of a ViTMAEForPreTraining key."""
  for old, new in _RENAMES:
    key = key.replace(old, new)
  return key


def _pos_grid(pos_embed: np.ndarray) -> np.ndarray:
  """(1, 1 + n * n, Dd) -> (n * n, Dd): drops the cls slot."""
  table = pos_embed.reshape(-1, pos_embed.shape[-1])
  if grid_resize.grid_size(table.shape[0] - 1) is None:
    raise ValueError(f"decoder_pos_embed has {table.shape[0]} positions, not 1 + n * n")
  return table[1:]


def _rules(state: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]],
           report: report_lib.LoadReport) -> list[param_tree.Rule]:
  grid = grid_resize.grid_size(shapes["pos_embed"][0])
  num_heads = shapes["blocks/layers_0/self_attn/query_kernel"][1]
  depth = sum(bool(_LAYER.match(p)) for p in shapes)
  linear = lambda w: w.T
  rules = [
      param_tree.Rule("mask_token", ("decoder.mask_token",), lambda t: t.reshape(-1),
                      "reshape (1, 1, Dd) -> (Dd,)"),
      param_tree.Rule("pos_embed", ("decoder.decoder_pos_embed",),
                      lambda pe: grid_resize.resize(_pos_grid(pe), grid),
                      f"drop the cls slot, bicubic antialiased resize to {grid} x {grid} "
                      "if needed"),
      *param_tree.layer_norm_rules("ln_out", "decoder.decoder_norm"),
      param_tree.Rule("head/kernel", ("decoder.decoder_pred.weight",), linear,
                      "Linear weight (out, in) -> kernel (in, out): transpose"),
      param_tree.Rule("head/bias", ("decoder.decoder_pred.bias",), np.asarray, "copy"),
  ]
  embed = state.get("decoder.decoder_embed.weight")
  if embed is None or embed.shape[::-1] == shapes["embed/kernel"]:
    rules += [param_tree.Rule("embed/kernel", ("decoder.decoder_embed.weight",), linear,
                              "Linear weight (out, in) -> kernel (in, out): transpose"),
              param_tree.Rule("embed/bias", ("decoder.decoder_embed.bias",), np.asarray, "copy")]
  else:
    reason = (f"ViTMAE's encoder is {embed.shape[1]} wide, SyncLipMAE's "
              f"{shapes['embed/kernel'][0]}: the decoder's input projection is not transferable")
    for key in ("decoder.decoder_embed.weight", "decoder.decoder_embed.bias"):
      if key in state:
        report.unused.append(report_lib.Unused(key, state[key].shape, reason))
        state.pop(key)
    for target in ("embed/kernel", "embed/bias"):
      report.kept.append(report_lib.Kept(target, shapes[target], reason))
  for i in range(depth):
    src, dst = f"decoder.decoder_layers.{i}.", f"blocks/layers_{i}/"
    for norm, name in (("layernorm_before", "ln_self"), ("layernorm_after", "ln_mlp")):
      rules += param_tree.layer_norm_rules(f"{dst}{name}", f"{src}{norm}")
    for proj, name in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
      rules += [
          param_tree.Rule(f"{dst}self_attn/{name}_kernel", (f"{src}attention.{proj}.weight",),
                          lambda w: w.T.reshape(w.shape[1], num_heads, -1),
                          "Linear weight (Dd, Dd) -> transpose, reshape (Dd, H, hd)"),
          param_tree.Rule(f"{dst}self_attn/{name}_bias", (f"{src}attention.{proj}.bias",),
                          lambda b: b.reshape(num_heads, -1), "reshape (H, hd)")]
    rules += [
        param_tree.Rule(f"{dst}self_attn/out_kernel", (f"{src}attention.o_proj.weight",),
                        lambda w: w.T.reshape(num_heads, -1, w.shape[0]),
                        "Linear weight (Dd, Dd) -> transpose, reshape (H, hd, Dd)"),
        param_tree.Rule(f"{dst}self_attn/out_bias", (f"{src}attention.o_proj.bias",), np.asarray,
                        "copy")]
    for fc in ("fc1", "fc2"):
      rules += [param_tree.Rule(f"{dst}mlp/{fc}/kernel", (f"{src}mlp.{fc}.weight",), linear,
                                "Linear weight (out, in) -> kernel (in, out): transpose"),
                param_tree.Rule(f"{dst}mlp/{fc}/bias", (f"{src}mlp.{fc}.bias",), np.asarray,
                                "copy")]
    if f"{dst}cross_attn/out_kernel" in shapes:
      for name in ("out_kernel", "out_bias"):
        shape = shapes[f"{dst}cross_attn/{name}"]
        rules.append(param_tree.Rule(f"{dst}cross_attn/{name}", (),
                                     lambda shape=shape: np.zeros(shape, np.float32),
                                     "zeros: the new prompt cross-attention starts as a no-op"))
  return rules


def _new_parameter_reason(target: str) -> str:
  if target.startswith("prompt_embed/"):
    return "new in SyncLipMAE: projects the encoder's prompt tokens"
  if re.search(r"/(cross_attn|ln_cross|ln_context)/", target):
    return "new in SyncLipMAE: prompt cross-attention (a no-op while its output projection is zero)"
  return "no counterpart in ViTMAE's decoder"


def convert(state_dict: dict[str, np.ndarray], decoder_shapes: dict[str, tuple[int, ...]],
            path: str = "") -> tuple[dict[str, np.ndarray], report_lib.LoadReport]:
  """Converts a ViTMAEForPreTraining state dict (either key generation) for the decoder.

  Args:
    state_dict: checkpoint key -> array.
    decoder_shapes: flat parameter shapes of the `MaeDecoder` (the `decoder` subtree; per-layer
      or scanned).
    path: the checkpoint's path, for the report.

  Returns:
    (flat decoder parameter path -> array, report; `report.check()` raises on problems).
  """
  report = report_lib.LoadReport("vitmae", path)
  state, key_names = {}, {}
  for key, value in state_dict.items():
    if key.startswith(ENCODER):
      report.unused.append(report_lib.Unused(
          key, value.shape, "ViTMAE encoder: SyncLipMAE's encoder is initialised from Sapiens"))
    else:
      state[canonical_key(key)], key_names[canonical_key(key)] = value, key
  shapes = param_tree.per_layer_shapes(decoder_shapes)
  rules = _rules(state, shapes, report)
  updates = param_tree.run_rules(rules, state, shapes, report, key_names)
  converted = {rule.target for rule in rules} | {k.target for k in report.kept}
  for target in sorted(set(shapes) - converted):
    report.kept.append(report_lib.Kept(target, shapes[target], _new_parameter_reason(target)))
  return param_tree.stack_layers(updates, decoder_shapes), report


def convert_directory(directory: str, decoder_shapes: dict[str, tuple[int, ...]],
                      norm_pix: bool | None = None
                      ) -> tuple[dict[str, np.ndarray], report_lib.LoadReport]:
  """Reads and converts a ViTMAEForPreTraining directory without raising on problems.

  The config's decoder heads, width, MLP width and depth must equal the decoder's (the head count
  is not visible in the weights' shapes); LayerNorm eps and `norm_pix_loss` differences are noted.
  """
  config = transformers.ViTMAEConfig.from_pretrained(directory)
  updates, report = convert(checkpoint_files.read_hf_directory(directory), decoder_shapes,
                            directory)
  shapes = param_tree.per_layer_shapes(decoder_shapes)
  ours = dict(decoder_num_attention_heads=shapes["blocks/layers_0/self_attn/query_kernel"][1],
              decoder_hidden_size=shapes["mask_token"][0],
              decoder_intermediate_size=shapes["blocks/layers_0/mlp/fc1/kernel"][1],
              decoder_num_hidden_layers=sum(bool(_LAYER.match(p)) for p in shapes))
  report.problems += [f"config.json {name}={getattr(config, name)} != the decoder's {value}"
                      for name, value in ours.items() if getattr(config, name) != value]
  epsilon = layers.layer_norm().epsilon
  if config.layer_norm_eps != epsilon:
    report.notes.append(
        f"ViTMAE's LayerNorm eps is {config.layer_norm_eps}, the decoder's {epsilon}")
  if norm_pix is not None and config.norm_pix_loss != norm_pix:
    report.notes.append(
        f"the prediction head was trained with norm_pix_loss={config.norm_pix_loss}, "
        f"SyncLipMAE uses loss.norm_pix={norm_pix}")
  return updates, report


def load(directory: str, decoder_shapes: dict[str, tuple[int, ...]], norm_pix: bool | None = None
         ) -> tuple[dict[str, np.ndarray], report_lib.LoadReport]:
  """Reads and converts a checkpoint directory; raises ValueError listing every problem."""
  updates, report = convert_directory(directory, decoder_shapes, norm_pix)
  report.check()
  return updates, report
