"""Pretrained initialisation of a fresh train state from `config.model.init` (paper 5).

The paper initialises the encoder from Sapiens-0.3B, the decoder from the ViTMAE-B design and the
frozen audio branch from wav2vec 2.0 base. `config.model.init.{wav2vec2, sapiens, vitmae}` name
local checkpoints ("" = keep the random initialisation):

- wav2vec2: a Hugging Face wav2vec2 directory -> `frozen["wav2vec2"]` (`wav2vec2_checkpoint`);
- sapiens: a Sapiens / mmpretrain ViT file -> `params["encoder"]` (`sapiens_checkpoint`);
- vitmae: a Hugging Face ViTMAEForPreTraining directory -> `params["decoder"]`
  (`vitmae_checkpoint`).

`apply_pretrained` replaces the converted leaves with host (numpy) arrays and leaves every other
leaf untouched; `load_into_state` then places the new leaves with the train state's shardings
(`jax.make_array_from_callback`, multi-host safe). Only a fresh state is initialised this way:
a resumed run restores its checkpoint instead.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import transformers

from synclipmae_jax.models import audio_encoder, synclipmae
from synclipmae_jax.weights import (checkpoint_files, param_tree, report as report_lib,
                                    sapiens_checkpoint, vitmae_checkpoint, wav2vec2_checkpoint)

KINDS = ("wav2vec2", "sapiens", "vitmae")
# kind -> (train-state field, subtree) it initialises.
SUBTREES = {"wav2vec2": ("frozen", "wav2vec2"), "sapiens": ("params", "encoder"),
            "vitmae": ("params", "decoder")}


def _check_kind(kind: str) -> None:
  if kind not in KINDS:
    raise ValueError(f"unknown checkpoint kind {kind!r}; expected one of {KINDS}")


def convert(kind: str, path: str, config, shapes: dict[str, tuple[int, ...]]
            ) -> tuple[dict[str, np.ndarray], report_lib.LoadReport]:
  """Reads and converts one checkpoint for the subtree with flat `shapes`; does not raise on
  conversion problems (they are in the report; `report.check()` raises)."""
  _check_kind(kind)
  if kind == "wav2vec2":
    expected = transformers.Wav2Vec2Config(**config.model.audio.wav2vec2.to_dict())
    # audio_encoder.build keeps AudioEncoder's default per-utterance normalisation.
    _, updates, report = wav2vec2_checkpoint.convert_directory(
        path, expected, audio_encoder.AudioEncoder.normalize_waveform)
    return updates, report
  if kind == "sapiens":
    return sapiens_checkpoint.convert(checkpoint_files.read_state_dict(path), shapes, config.seed,
                                      path)
  return vitmae_checkpoint.convert_directory(path, shapes, config.loss.norm_pix)


def target_shapes(config, kind: str) -> dict[str, tuple[int, ...]]:
  """Flat parameter shapes of the subtree `kind` initialises, for the model of `config`."""
  _check_kind(kind)
  if kind == "wav2vec2":
    return wav2vec2_checkpoint.target_shapes(
        transformers.Wav2Vec2Config(**config.model.audio.wav2vec2.to_dict()))
  model = synclipmae.build(config.model)
  grid, width = model.grid, model.encoder_size.width
  keep = jnp.zeros((1, 1), jnp.int32)
  if kind == "sapiens":
    patches = jnp.zeros((1, grid * grid, model.patch_size ** 2 * 3), jnp.float32)
    init = functools.partial(model.init, method=synclipmae.SyncLipMAE.encode)
    abstract = jax.eval_shape(init, jax.random.key(0), patches, keep)
    return param_tree.shapes(nn.unbox(abstract["params"]["encoder"]))
  init = functools.partial(model.init, method=lambda m, *args: m.decoder(*args))
  abstract = jax.eval_shape(init, jax.random.key(0), jnp.zeros((1, 1, width)), keep,
                            jnp.zeros((1, 3, width)))
  return param_tree.shapes(nn.unbox(abstract["params"]["decoder"]))


def apply_pretrained(config, params: dict, frozen: dict
                     ) -> tuple[dict, dict, list[report_lib.LoadReport]]:
  """Initialises `params` / `frozen` from the checkpoints named by `config.model.init`.

  Args:
    config: the run's config; `model.init.*` paths ("" = not used).
    params: the trainable parameters (leaves: arrays of any kind; only shapes and dtypes are read).
    frozen: the frozen audio encoder's parameters ({"wav2vec2": ...} for that front end).

  Returns:
    (params, frozen, one report per loaded checkpoint): converted leaves are numpy arrays in the
    leaf's dtype, all other leaves are the given objects.

  Raises:
    ValueError: a checkpoint has unknown keys, misses keys, has mismatching shapes or an
      incompatible config (all listed), or the model has no subtree for it.
  """
  trees = {"params": params, "frozen": frozen}
  reports = []
  for kind in KINDS:
    path = config.model.init[kind]
    if not path:
      continue
    field, subtree = SUBTREES[kind]
    if subtree not in trees[field]:
      raise ValueError(f"model.init.{kind}={path!r} but the model has no {field}[{subtree!r}] "
                       f"(model.audio.frontend={config.model.audio.frontend!r})")
    updates, report = convert(kind, path, config, param_tree.shapes(trees[field][subtree]))
    report.check()
    converted = param_tree.replace(trees[field][subtree], updates)
    trees[field] = dict(trees[field], **{subtree: converted})
    reports.append(report)
  return trees["params"], trees["frozen"], reports


def load_into_state(config, state, abstract_state):
  """`apply_pretrained` on a fresh `TrainState`, re-sharded like `abstract_state`.

  Args:
    config: the run's config.
    state: the freshly initialised (sharded) train state.
    abstract_state: the state's ShapeDtypeStructs with their shardings (`train_state.jit_all`).

  Returns:
    (state with the converted leaves placed on the mesh, the reports).
  """
  params, frozen, reports = apply_pretrained(config, state.params, state.frozen)

  def place(leaf, abstract):
    if not isinstance(leaf, np.ndarray):
      return leaf
    return jax.make_array_from_callback(abstract.shape, abstract.sharding,
                                        lambda index: leaf[index])

  return state.replace(params=jax.tree.map(place, params, abstract_state.params),
                       frozen=jax.tree.map(place, frozen, abstract_state.frozen)), reports
