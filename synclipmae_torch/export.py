"""JAX side of the PyTorch bridge: SyncLipMAE parameters -> an exported folder, and back.

`export(config, params, out_dir)` writes
- `model.safetensors`: the trainable parameters (visual encoder with its three prompt tokens,
  audio adapter, MAE decoder with its prompt cross-attention; paper 3.2) under PyTorch names and
  layouts (`layout.LEAF_RULES`), in float32, bfloat16 or float16, and for the mel front end its
  float32 constants (Hann window, mel filter bank);
- `config.json`: the architecture the PyTorch modules are built from (`architecture`), the
  evaluation view, the step and the training config;
- `README.md`: what the tensors are and how to load them.
The frozen wav2vec2 encoder is not exported: the PyTorch side loads the user's local copy of the
checkpoint the run started from (`model.init.wav2vec2`, recorded in the training config) with
transformers. `import_params(folder, config)` reads a folder back into the JAX parameter tree
(bit-exact for float32). This module imports jax but never torch; nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

from synclipmae_jax import config_defaults, masking, objective
from synclipmae_jax.models import audio_encoder, audio_signal, layers, synclipmae, vit
from synclipmae_jax.weights import param_tree, wav2vec2_checkpoint
from synclipmae_torch import layout

NUMPY_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


def _json(tree):
  """`tree` as JSON reads it back (tuples become lists)."""
  return json.loads(json.dumps(tree))


def _audio_feature_shape(config) -> tuple[int, int]:
  """(L, C) of the frozen front end's per-frame features [B, T, L, C]."""
  return _feature_shape(config.model.audio.to_json())


@functools.lru_cache(maxsize=16)
def _feature_shape(audio_json: str) -> tuple[int, int]:
  encoder = audio_encoder.build(ml_collections.ConfigDict(json.loads(audio_json)))
  wave = jax.ShapeDtypeStruct((1, encoder.window_samples(2)), jnp.float32)
  frozen = jax.eval_shape(lambda w: encoder.init(jax.random.key(0), w, 2), wave).get("params", {})
  features = jax.eval_shape(lambda f, w: encoder.apply({"params": f}, w, 2), frozen, wave)
  return features.shape[2], features.shape[3]


def architecture(config) -> dict:
  """The `model` section of config.json: everything the PyTorch modules are built from."""
  m = config.model
  grid = m.image_size // m.patch_size
  num_layers, feature_dim = _audio_feature_shape(config)
  audio = audio_encoder.build(m.audio)
  wav2vec2 = None
  if m.audio.frontend == "wav2vec2":
    wav2vec2 = {name: getattr(audio.wav2vec2_config, name)
                for name in wav2vec2_checkpoint.ARCHITECTURE_FIELDS}
  return _json({
      "image_size": m.image_size, "patch_size": m.patch_size, "num_patches": grid * grid,
      "patch_dim": m.patch_size ** 2 * 3, "layer_norm_eps": layers.LAYER_NORM_EPS,
      "prompt_names": list(vit.PROMPT_NAMES),
      "encoder": dataclasses.asdict(vit.vit_size(m.encoder_size)),
      "decoder": {k: m.decoder[k] for k in ("width", "depth", "num_heads", "mlp_dim",
                                             "cross_attention")},
      "audio": {"frontend": m.audio.frontend, "alignment": m.audio.alignment,
                "adapter": m.audio.adapter, "n_mels": m.audio.n_mels,
                "context_frames": m.audio.context_frames,
                # Audio tokens are computed in windows of the training window's frames, each read
                # with this many frames of audio on each side (data_pipelines/audio_windows.py).
                "window_frames": config.data.window_frames,
                "input_context_frames": m.audio.input_context_frames,
                "normalize_waveform": audio.normalize_waveform,
                "feature_layers": num_layers, "feature_dim": feature_dim, "wav2vec2": wav2vec2},
      # The sync evaluator's deterministic view (evaluators.sync): all patches ("full") or
      # the k highest-weight patches of the face-preserving weights ("face").
      "view": {"kind": config.evals.get("sync", config_defaults.sync_eval_config()).view,
               "num_visible": masking.num_visible(grid * grid, config.masking.mask_ratio),
               "face_weights": dict(config.masking.face_weights),
               "pixel_mean": objective.PIXEL_MEAN.tolist(),
               "pixel_std": objective.PIXEL_STD.tolist()},
  })


def model_shapes(config) -> dict[str, tuple[int, ...]]:
  """Flax parameter paths and shapes of `synclipmae.build(config.model)`, scanned when
  `model.scan_layers` (nothing is computed)."""
  return dict(_model_shapes(config.model.to_json(), config.masking.mask_ratio))


@functools.lru_cache(maxsize=16)
def _model_shapes(model_json: str, mask_ratio: float) -> tuple[tuple[str, tuple[int, ...]], ...]:
  config = ml_collections.ConfigDict({"model": json.loads(model_json),
                                      "masking": {"mask_ratio": mask_ratio}})
  model = synclipmae.build(config.model)
  grid = config.model.image_size // config.model.patch_size
  n, p = grid * grid, config.model.patch_size ** 2 * 3
  k = masking.num_visible(n, config.masking.mask_ratio)
  num_layers, feature_dim = _audio_feature_shape(config)
  spec = jax.ShapeDtypeStruct
  abstract = jax.eval_shape(
      lambda patches, keep, features, perm: model.init(
          jax.random.key(0), patches, keep, None, None, features, perm),
      spec((2, n, p), jnp.float32), spec((2, k), jnp.int32),
      spec((1, 2, num_layers, feature_dim), jnp.float32), spec((2,), jnp.int32))
  return tuple(param_tree.shapes(nn.unbox(abstract["params"])).items())


def param_shapes(config) -> dict[str, tuple[int, ...]]:
  """`model_shapes` with per-layer paths (`.../blocks/layers_{i}/...`), the ones `layout` names."""
  return param_tree.per_layer_shapes(model_shapes(config))


def _torch_shape(layout_name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  return tuple(layout.LAYOUTS[layout_name].to_torch(np.empty(shape, np.uint8)).shape)


def _mel_tensors(config) -> dict[str, np.ndarray]:
  if config.model.audio.frontend != "mel":
    return {}
  window, filters = audio_signal.mel_constants(config.model.audio.n_mels)
  return {layout.MEL_WINDOW_TENSOR: window, layout.MEL_FILTERS_TENSOR: filters}


def _write(path: str, write) -> None:
  """Writes through a temporary file renamed into place, so a crash leaves no partial file;
  permissions follow the umask."""
  tmp = f"{path}.tmp-{os.getpid()}"
  write(tmp)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o666 & ~umask)
  os.replace(tmp, path)


def export(config, params, out_dir: str, dtype: str = "float32", step: int | None = None) -> dict:
  """Writes `params` (the trainable SyncLipMAE tree of `config`) as a folder PyTorch loads.

  Args:
    config: the training config (`config.model` names the architecture).
    params: the parameter tree, per-layer or scanned (`model.scan_layers`), boxed (as `init`
      returns it) or not, arrays of any float dtype.
    out_dir: the folder to write (created; the three files are replaced).
    dtype: "float32", "bfloat16" or "float16" for the parameters (the mel constants stay float32).
    step: the training step, recorded in config.json.

  Returns:
    the config.json contents.

  Raises:
    ValueError: the tree does not match the config's model (listing every offending parameter),
      or an unknown dtype.
  """
  if dtype not in layout.DTYPES:
    raise ValueError(f"dtype must be one of {layout.DTYPES}, got {dtype!r}")
  expected = param_shapes(config)
  flat = param_tree.unstack_layers(param_tree.flatten(jax.device_get(nn.unbox(params))))
  layout.check_tensors(expected, {path: tuple(np.shape(v)) for path, v in flat.items()},
                       "the parameter tree")
  tensors = {}
  for name, (path, layout_name) in layout.naming(expected).items():
    value = np.asarray(flat[path], np.float32).astype(NUMPY_DTYPES[dtype])
    tensors[name] = np.ascontiguousarray(layout.LAYOUTS[layout_name].to_torch(value))
  tensors.update(_mel_tensors(config))
  saved = {"format": layout.FORMAT, "format_version": layout.FORMAT_VERSION, "dtype": dtype,
           "step": step, "model": architecture(config),
           "training_config": json.loads(config.to_json_best_effort())}
  os.makedirs(out_dir, exist_ok=True)
  _write(os.path.join(out_dir, layout.WEIGHTS_FILE),
         lambda p: save_file(tensors, p, metadata={"format": "pt"}))
  _write(os.path.join(out_dir, layout.CONFIG_FILE),
         lambda p: open(p, "w").write(json.dumps(saved, indent=1) + "\n"))
  _write(os.path.join(out_dir, layout.README_FILE),
         lambda p: open(p, "w").write(readme(saved, tensors)))
  return saved


def import_params(folder: str, config) -> dict:
  """The exported folder as the JAX parameter tree of `config.model` (float32 numpy arrays,
  scanned when `model.scan_layers`): `model.apply({"params": tree}, ...)`.

  Raises:
    ValueError: one error listing every architecture difference between the folder's config.json
      and `config`; or every missing, unexpected or misshapen tensor; or a truncated file; or mel
      constants that differ from the ones the JAX front end computes.
  """
  saved = layout.read_config(folder)
  problems = layout.differences(saved["model"], architecture(config))
  if problems:
    raise ValueError(f"{folder} was exported from another architecture than the config's: "
                     f"{len(problems)} difference(s)\n  " + "\n  ".join(problems))
  tensors = layout.read_tensors(folder, "numpy")
  shapes = param_shapes(config)
  table = layout.naming(shapes)
  mel = _mel_tensors(config)
  expected = {name: _torch_shape(layout_name, shapes[path])
              for name, (path, layout_name) in table.items()}
  expected.update({name: value.shape for name, value in mel.items()})
  layout.check_tensors(expected, {name: tuple(t.shape) for name, t in tensors.items()},
                       os.path.join(folder, layout.WEIGHTS_FILE))
  changed = [name for name, value in mel.items() if not np.array_equal(tensors[name], value)]
  if changed:
    raise ValueError(f"{folder}: the mel front end's constants {changed} differ from the ones "
                     "synclipmae_jax computes")
  flat = {path: layout.LAYOUTS[layout_name].to_jax(
              np.asarray(tensors[name]), shapes[path]).astype(np.float32)
          for name, (path, layout_name) in table.items()}
  if config.model.scan_layers:
    flat = param_tree.stack_layers(flat, model_shapes(config))
  return param_tree.unflatten(flat)


_PARTS = {
    "encoder.": "ViT encoder (paper 3.2): patch_embed (Linear over normalised patch pixels), "
                "pos_embed [N, D], prompts [3, D] (identity, vocal motion, ambient motion), "
                "pre-LN blocks, ln_out",
    "audio_adapter.": "audio adapter: ln_in, proj_in, GELU, proj_out; frozen per-frame features "
                      "[T, L * C] -> audio tokens [T, D]",
    "decoder.": "MAE decoder: embed, mask_token, pos_embed, prompt_embed, blocks with prompt "
                "cross-attention (or prompts concatenated, if cross_attention is false), ln_out, "
                "head -> normalised patch pixels",
    "audio_frontend.": "mel front end constants (float32): periodic Hann window [400], HTK mel "
                       "filter bank [201, n_mels]",
}


def readme(saved: dict, tensors: dict[str, np.ndarray]) -> str:
  """The folder's README.md: what was exported and how to load it."""
  m = saved["model"]
  frontend = m["audio"]["frontend"]
  wav2vec2_hint = (", wav2vec2=\"/path/to/the/run's/wav2vec2\"" if frontend == "wav2vec2" else "")
  lines = [
      "# SyncLipMAE weights for PyTorch", "",
      f"Written by `synclipmae-export`"
      + (f" from training step {saved['step']}" if saved["step"] is not None else "")
      + f", parameters in {saved['dtype']}. Encoder {m['encoder']}, decoder {m['decoder']}, "
      f"{m['image_size']} px frames in {m['patch_size']} px patches, audio front end {frontend!r}.",
      "", "```python",
      "from synclipmae_torch import SyncLipMAE, SyncTokenizer",
      "model = SyncLipMAE.from_pretrained(\"this/folder\")  # encoder, audio adapter, decoder",
      f"tokenizer = SyncTokenizer.from_pretrained(\"this/folder\"{wav2vec2_hint})",
      "tokens = tokenizer(frames, face_boxes, mouth_boxes, audio)  # 25 fps audio and vocal tokens",
      "```", "",
      "Or read the tensors with `safetensors.torch.load_file(\"model.safetensors\")` (no pickle).",
      "Linear weights are (out, in); attention has separate q/k/v/out Linear projections "
      f"(heads x head_dim flattened); every LayerNorm has eps {m['layer_norm_eps']}; GELU is exact.",
  ]
  if frontend == "wav2vec2":
    lines.append("The frozen wav2vec2 encoder is not in this folder: pass the local Hugging Face "
                 "directory of the checkpoint the run was trained with (`model.init.wav2vec2` in "
                 "config.json's training_config); its architecture is checked against "
                 "`model.audio.wav2vec2`.")
  lines += ["", "| prefix | tensors | values | what |", "| --- | --- | --- | --- |"]
  for prefix, what in _PARTS.items():
    names = [n for n in tensors if n.startswith(prefix)]
    if names:
      count = sum(int(np.prod(tensors[n].shape)) for n in names)
      lines.append(f"| `{prefix}` | {len(names)} | {count:,} | {what} |")
  lines += ["", "Every tensor:", "", "```"]
  lines += [f"{n} {list(t.shape)} {t.dtype}" for n, t in tensors.items()]
  return "\n".join(lines + ["```", ""])
