"""wav2vec 2.0 checkpoints (Hugging Face directories) -> the frozen Flax `Wav2Vec2Model`.

The frozen speech encoder of paper 3.1 / 3.2 ("a pretrained speech encoder ... kept frozen"):
the paper uses wav2vec 2.0 base. A checkpoint directory holds `config.json` and
`model.safetensors` or `pytorch_model.bin` (read with `torch.load(weights_only=True)`), as
`save_pretrained` writes them; `preprocessor_config.json` is read if present.

Both layouts of `synclipmae_jax.models.wav2vec2` load: group-norm feature extractor with post-LN
encoder (base) and layer-norm extractor with pre-LN encoder ("stable", large). Key generations:
- current transformers: `feature_extractor.conv_layers.0.conv.weight`, ...,
  `encoder.pos_conv_embed.conv.parametrizations.weight.original0` / `original1` (weight-norm g
  and v);
- older checkpoints (e.g. facebook/wav2vec2-base on the Hub): the same under a `wav2vec2.`
  prefix (a `Wav2Vec2ForPreTraining` / `ForCTC` state dict), with `weight_g` / `weight_v`.
Keys outside the base model (`quantizer.*`, `project_q.*`, `project_hid.*`, `lm_head.*`, ...) and
`masked_spec_embed` (the SpecAugment mask vector, training only) are reported as unused.

Layouts: Linear weight (out, in) -> Dense kernel (in, out); Conv1d weight (out, in / groups, k)
-> Conv kernel (k, in / groups, out); LayerNorm / GroupNorm weight -> scale; the positional
convolution's weight_g (1, 1, K) and weight_v (hidden, hidden / groups, K) stay in PyTorch's layout
(the port recomputes weight = g * v / ||v|| as `torch.nn.utils.weight_norm(dim=2)` does).
"""

from __future__ import annotations

import re

import jax
import numpy as np
import transformers

from synclipmae_jax.models import wav2vec2
from synclipmae_jax.weights import checkpoint_files, param_tree, report as report_lib

PREFIX = "wav2vec2."
# Config fields that change the parameters or the numerics of the forward pass.
ARCHITECTURE_FIELDS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
    "feat_extract_norm", "feat_extract_activation", "conv_dim", "conv_stride", "conv_kernel",
    "conv_bias", "num_conv_pos_embeddings", "num_conv_pos_embedding_groups",
    "do_stable_layer_norm", "layer_norm_eps")
_WEIGHT_NORM_NAMES = {"parametrizations.weight.original0": "weight_g",
                      "parametrizations.weight.original1": "weight_v"}
_UNUSED_IN_MODEL = {"masked_spec_embed": "SpecAugment mask embedding, used only when training "
                                         "wav2vec2 with time masking"}


def canonical_key(key: str) -> str:
  """The current key name (no `wav2vec2.` prefix, weight-norm tensors as weight_g / weight_v)."""
  key = key.removeprefix(PREFIX)
  for new, canonical in _WEIGHT_NORM_NAMES.items():
    if key.endswith(new):
      return key[:-len(new)] + canonical
  return key


def _rule(path: str, shape: tuple[int, ...]) -> param_tree.Rule:
  """The checkpoint key and layout change for the Flax parameter at `path`."""
  *modules, leaf = path.split("/")
  prefix = ".".join(re.sub(r"_(\d+)$", r".\1", m) for m in modules)
  if leaf == "kernel" and len(shape) == 3:
    return param_tree.Rule(path, (f"{prefix}.weight",), lambda w: w.transpose(2, 1, 0),
                           "Conv1d weight (out, in, k) -> kernel (k, in, out): transpose(2, 1, 0)")
  if leaf == "kernel":
    return param_tree.Rule(path, (f"{prefix}.weight",), lambda w: w.T,
                           "Linear weight (out, in) -> kernel (in, out): transpose")
  if leaf == "scale":
    return param_tree.Rule(path, (f"{prefix}.weight",), np.asarray, "norm weight -> scale")
  if leaf in ("weight_g", "weight_v"):
    return param_tree.Rule(path, (f"{prefix}.{leaf}",), np.asarray,
                           f"weight-norm {leaf[-1]}, PyTorch layout (weight = g * v / ||v||)")
  return param_tree.Rule(path, (f"{prefix}.{leaf}",), np.asarray, "copy")


def target_shapes(config: transformers.Wav2Vec2Config) -> dict[str, tuple[int, ...]]:
  """Flat parameter shapes of `Wav2Vec2Model(config)` (nothing is computed)."""
  abstract = jax.eval_shape(lambda: wav2vec2.init_params(config, jax.random.key(0)))
  return param_tree.shapes(abstract)


def convert(state_dict: dict[str, np.ndarray], config: transformers.Wav2Vec2Config,
            path: str = "") -> tuple[dict[str, np.ndarray], report_lib.LoadReport]:
  """Converts a wav2vec2 state dict (any key generation) for `Wav2Vec2Model(config)`.

  Returns:
    (flat Flax parameter path -> array, the report; `report.check()` raises on problems).
  """
  report = report_lib.LoadReport("wav2vec2", path)
  prefixed = any(k.startswith(PREFIX) for k in state_dict)
  canonical, key_names = {}, {}
  for key, value in state_dict.items():
    if prefixed and not key.startswith(PREFIX):
      report.unused.append(report_lib.Unused(
          key, value.shape, "not part of Wav2Vec2Model (a head of the checkpoint's architecture)"))
    elif canonical_key(key) in _UNUSED_IN_MODEL:
      reason = _UNUSED_IN_MODEL[canonical_key(key)]
      report.unused.append(report_lib.Unused(key, value.shape, reason))
    else:
      canonical[canonical_key(key)], key_names[canonical_key(key)] = value, key
  shapes = target_shapes(config)
  rules = [_rule(p, s) for p, s in shapes.items()]
  updates = param_tree.run_rules(rules, canonical, shapes, report, key_names)
  return updates, report


def _normalise(value):
  return list(value) if isinstance(value, (list, tuple)) else value


def config_differences(checkpoint: transformers.Wav2Vec2Config,
                       expected: transformers.Wav2Vec2Config) -> list[str]:
  """'field: checkpoint value != expected value' for every differing `ARCHITECTURE_FIELDS`."""
  return [f"{name}: checkpoint {getattr(checkpoint, name)!r} != model.audio.wav2vec2 "
          f"{getattr(expected, name)!r}" for name in ARCHITECTURE_FIELDS
          if _normalise(getattr(checkpoint, name)) != _normalise(getattr(expected, name))]


def convert_directory(directory: str, expected_config: transformers.Wav2Vec2Config | None = None,
                      normalize_waveform: bool = True
                      ) -> tuple[transformers.Wav2Vec2Config, dict[str, np.ndarray],
                                 report_lib.LoadReport]:
  """Reads and converts a checkpoint directory without raising on problems (see `load`).

  Args:
    directory: a Hugging Face wav2vec2 model directory.
    expected_config: the model's configuration (`model.audio.wav2vec2`); architecture fields
      that differ from the checkpoint's config.json are problems.
    normalize_waveform: whether the audio front end normalises each utterance; a
      preprocessor_config.json saying otherwise (`do_normalize`) is a problem.
  """
  config = transformers.Wav2Vec2Config.from_pretrained(directory)
  wav2vec2.check_config(config)
  updates, report = convert(checkpoint_files.read_hf_directory(directory), config, directory)
  if expected_config is not None:
    report.problems.extend(config_differences(config, expected_config))
  layout = "layer norm, pre-LN (stable)" if config.do_stable_layer_norm else "group norm, post-LN"
  report.notes.append(f"{config.num_hidden_layers} layers x {config.hidden_size}, {layout}")
  preprocessor = checkpoint_files.read_json(directory, "preprocessor_config.json")
  if preprocessor is not None and "do_normalize" in preprocessor:
    if bool(preprocessor["do_normalize"]) != normalize_waveform:
      report.problems.append(
          f"preprocessor_config.json has do_normalize={preprocessor['do_normalize']} but the audio "
          f"front end {'does' if normalize_waveform else 'does not'} normalise each utterance")
    else:
      report.notes.append(f"do_normalize={preprocessor['do_normalize']} matches the front end")
  return config, updates, report


def load(directory: str, expected_config: transformers.Wav2Vec2Config | None = None,
         normalize_waveform: bool = True
         ) -> tuple[transformers.Wav2Vec2Config, dict, report_lib.LoadReport]:
  """(checkpoint config, nested Flax params of `Wav2Vec2Model`, report).

  Raises:
    ValueError: listing unknown keys, missing keys, shape mismatches and config differences.
  """
  config, updates, report = convert_directory(directory, expected_config, normalize_waveform)
  report.check()
  return config, param_tree.unflatten(updates), report
