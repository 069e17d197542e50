"""Lip reading (paper 4.3) as a task of `train.py` (see `tasks/__init__.py`): the lip-reading
head (`models/vsr.py`) trained with the hybrid CTC/attention loss (`losses.py`) on the
vocal-motion tokens of a frozen pretrained SyncLipMAE.

Input: the labelled clips (`input_pipeline.labelled_clips`: prepared shards with transcripts,
or the labelled synthetic set of unseen speakers) go once through the frozen encoder
(`frame_features`, all patches visible) when the run starts; each clip becomes one utterance,
its per-frame vocal-motion tokens [T, D] (padded to `data.max_frames`) and its transcript as
SentencePiece units (`text_units.py`, trained on the training transcripts and saved in the
workdir as `units.model` so that a resumed run keeps the same ids). Batches of whole
utterances come from a shuffled, repeated Grain MapDataset: checkpointable, each process
taking its block of every global batch, sharded over data x fsdp like pretraining.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from absl import logging
import grain
import jax
import jax.numpy as jnp
import ml_collections
import optax

from synclipmae_jax import checkpointing, input_pipeline, optimizer, sharding, storage, train_state
from synclipmae_jax.tasks.vsr import data as vsr_data
from synclipmae_jax.tasks.vsr import losses as vsr_losses
from synclipmae_jax.tasks.vsr import text_units
from synclipmae_jax.evaluators import common as evaluators
from synclipmae_jax.models import synclipmae, vit
from synclipmae_jax.models import vsr as vsr_model

UNITS_FILE = "units.model"
PERIODS = ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints")


@dataclasses.dataclass(frozen=True)
class VsrExperiment:
  """The lip-reading model, the optimizer and the jitted step functions on a mesh."""

  config: Any
  mesh: Any
  rules: tuple
  model: vsr_model.VsrModel
  tx: Any
  schedule: Callable
  abstract_state: train_state.TrainState
  init: Callable
  train_step: Callable
  abstract_batch: dict
  step_flops: float  # XLA's count for the lowered step

  def scope(self):
    """The mesh and logical-axis rules under which the jitted functions run."""
    return sharding.scope(self.mesh, self.rules)

  @property
  def num_params(self) -> int:
    return sum(x.size for x in jax.tree.leaves(self.abstract_state.params))


def validate(config, *, num_devices: int, process_count: int) -> None:
  """Raises ValueError naming every invalid value of the VSR config."""
  c, errors = config, []

  def check(ok, message):
    if not ok:
      errors.append(message)

  check(c.num_train_steps > 0, f"num_train_steps={c.num_train_steps} must be > 0")
  for name in PERIODS:
    check(c[name] > 0, f"{name}={c[name]} must be > 0")
  if not c.encoder.workdir:
    errors.append("encoder.workdir is required: the pretraining run whose frozen encoder the head reads")
  elif not (storage.path(c.encoder.workdir) / checkpointing.CONFIG_FILE).is_file():
    errors.append(f"encoder.workdir={c.encoder.workdir!r} is not a training workdir (no config.json)")
  m = c.model
  check(m.width % m.num_heads == 0 and m.width % 2 == 0,
        f"model.width={m.width} must be even and divisible by model.num_heads={m.num_heads}")
  check(min(m.encoder_depth, m.decoder_depth, m.conv_kernel, m.mlp_dim) >= 1,
        "model.encoder_depth, decoder_depth, conv_kernel and mlp_dim must be >= 1")
  check(m.dtype in synclipmae.DTYPES, f"model.dtype={m.dtype!r} must be one of {tuple(synclipmae.DTYPES)}")
  check(c.units.model_type in text_units.MODEL_TYPES,
        f"units.model_type={c.units.model_type!r} must be one of {text_units.MODEL_TYPES}")
  check(c.units.vocab_size > text_units.END + 1,
        f"units.vocab_size={c.units.vocab_size} must exceed the {text_units.END + 1} reserved ids")
  check(0.0 <= c.loss.ctc_weight <= 1.0, f"loss.ctc_weight={c.loss.ctc_weight} must be in [0, 1]")
  check(0.0 <= c.loss.label_smoothing < 1.0,
        f"loss.label_smoothing={c.loss.label_smoothing} must be in [0, 1)")
  check(c.optim.learning_rate > 0 and c.optim.warmup_steps >= 0 and c.optim.grad_clip_norm > 0,
        "optim.learning_rate and optim.grad_clip_norm must be > 0, optim.warmup_steps >= 0")
  d = c.data
  check(d.max_units >= 1 and d.max_frames >= 1 and d.frames_per_call >= 1,
        "data.max_units, data.max_frames and data.frames_per_call must be >= 1")
  if not d.pattern:
    check(d.synthetic.clip_frames <= d.max_frames,
          f"data.synthetic.clip_frames={d.synthetic.clip_frames} > data.max_frames={d.max_frames}")
  b = d.global_batch_size
  try:
    shape = dict(zip(sharding.MESH_AXES, sharding.mesh_shape(c.mesh, num_devices)))
    shards = shape["data"] * shape["fsdp"]
    check(b % shards == 0, f"data.global_batch_size={b} must be divisible by data*fsdp={shards}")
    check(b % process_count == 0,
          f"data.global_batch_size={b} must be divisible by the process count {process_count}")
  except ValueError as e:
    errors.append(str(e))
  errors.extend(evaluators.validate(c))
  if errors:
    raise ValueError("invalid config:\n  " + "\n  ".join(errors))


def init_warnings(config) -> list[str]:
  if config.encoder.random_init:
    return ["encoder.random_init: the head reads a randomly initialised, untrained encoder "
            "(the random-encoder baseline)"]
  return []


def frozen_encoder(config) -> checkpointing.Restored:
  """The frozen SyncLipMAE whose vocal-motion tokens the head reads."""
  e = config.encoder
  if e.random_init:
    return checkpointing.initial(e.workdir)
  return checkpointing.load(e.workdir, e.step or None)


def _units(config, workdir: str, train_clips: list[dict]) -> text_units.Units:
  """The workdir's units (a resumed run keeps its ids), or new ones from the training transcripts."""
  path = storage.path(workdir) / UNITS_FILE
  if path.is_file():
    return text_units.Units(path.read_bytes())
  units = text_units.train([c["transcript"] for c in train_clips], vocab_size=config.units.vocab_size,
                           model_type=config.units.model_type)
  if jax.process_index() == 0:
    path.write_bytes(units.model_bytes)
  return units


def load_utterances(config, workdir: str) -> tuple[text_units.Units, dict[str, list[dict]]]:
  """(the run's units, {split: utterances}): the labelled clips through the frozen encoder."""
  encoder = frozen_encoder(config)
  data_config = ml_collections.ConfigDict(encoder.config.to_dict())
  if config.data.directory:
    data_config.data.directory = config.data.directory
  clips = input_pipeline.labelled_clips(data_config, pattern=config.data.pattern,
                                        synthetic=config.data.synthetic.to_dict())
  units = _units(config, workdir, clips["train"])
  by_split = {split: vsr_data.utterances(encoder, c, units, max_units=config.data.max_units,
                                         max_frames=config.data.max_frames,
                                         frames_per_call=config.data.frames_per_call)
              for split, c in clips.items()}
  logging.info("lip reading: %s utterances, %d units",
               {s: len(u) for s, u in by_split.items()}, units.vocab_size)
  return units, by_split


def make_input(config, workdir: str):
  """(this process's Grain iterator of training batches, the evaluators' inputs: the units and
  the utterances of every split)."""
  units, by_split = load_utterances(config, workdir)
  train = [vsr_data.pad(u, config.data.max_frames, config.data.max_units) for u in by_split["train"]]
  per_process = config.data.global_batch_size // jax.process_count()
  ds = grain.MapDataset.source(train).shuffle(config.seed).repeat()
  ds = ds.batch(per_process, drop_remainder=True)[jax.process_index()::jax.process_count()]
  train_iter = iter(ds.to_iter_dataset())
  return train_iter, {"units": units, "utterances": by_split}


def feature_dim(config) -> int:
  """Width of the frozen encoder's tokens (from the encoder run's config)."""
  return vit.vit_size(checkpointing.read_config(config.encoder.workdir).model.encoder_size).width


def build_model(config) -> vsr_model.VsrModel:
  m = config.model
  return vsr_model.VsrModel(
      vocab_size=config.units.vocab_size, width=m.width, encoder_depth=m.encoder_depth,
      decoder_depth=m.decoder_depth, num_heads=m.num_heads, mlp_dim=m.mlp_dim,
      conv_kernel=m.conv_kernel, causal_conv=m.causal_conv, dtype=synclipmae.DTYPES[m.dtype])


def step_functions(config, model, tx, schedule, dim: int) -> train_state.StepFunctions:
  """The pure init and train step of the head on batches of `dummy_batch` shapes."""
  d = config.data
  b, t, l = d.global_batch_size, d.max_frames, d.max_units
  spec = {"features": jax.ShapeDtypeStruct((b, t, dim), jnp.float32),
          "frame_mask": jax.ShapeDtypeStruct((b, t), jnp.bool_),
          "units": jax.ShapeDtypeStruct((b, l), jnp.int32),
          "unit_mask": jax.ShapeDtypeStruct((b, l), jnp.bool_)}

  def init(rng):
    params = model.init(rng, jnp.zeros((1, t, dim)), jnp.ones((1, t), bool),
                        jnp.zeros((1, l + 1), jnp.int32))["params"]
    return train_state.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                  opt_state=tx.init(params), frozen={})

  def loss_fn(params, batch):
    inputs, targets, target_mask = vsr_losses.decoder_io(batch["units"], batch["unit_mask"])
    ctc_logits, att_logits = model.apply({"params": params}, batch["features"], batch["frame_mask"], inputs)
    losses = vsr_losses.hybrid_loss(
        ctc_logits, batch["frame_mask"], att_logits, targets, target_mask, batch["units"],
        batch["unit_mask"], ctc_weight=config.loss.ctc_weight, label_smoothing=config.loss.label_smoothing)
    return losses["total"], losses

  def train_step(state, batch):
    (_, losses), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {f"loss/{k}": v for k, v in losses.items()}
    metrics.update(grad_norm=optax.tree.norm(grads), learning_rate=schedule(state.step))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_state.StepFunctions(init, train_step, None, spec)


def build(config, mesh) -> VsrExperiment:
  rules = sharding.rules(config)
  model = build_model(config)
  tx, schedule = optimizer.make(config.optim, config.num_train_steps)
  fns = step_functions(config, model, tx, schedule, feature_dim(config))
  abstract, init, step, _ = train_state.jit_all(fns, mesh, rules, jax.random.PRNGKey(config.seed))
  batch = train_state.abstract_batch(fns, mesh)
  return VsrExperiment(config=config, mesh=mesh, rules=rules, model=model, tx=tx,
                       schedule=schedule, abstract_state=abstract, init=init, train_step=step,
                       abstract_batch=batch,
                       step_flops=train_state.lowered_flops(step, abstract, batch, mesh, rules))


def summary(config, exp, log_path: str) -> str:
  m = config.model
  return (f"lip reading: Conformer {m.width}x{m.encoder_depth} (kernel {m.conv_kernel}), decoder "
          f"{m.width}x{m.decoder_depth}, {config.units.vocab_size} units, {exp.num_params / 1e6:.2f}M "
          f"trainable, CTC weight {config.loss.ctc_weight}; encoder {config.encoder.workdir}"
          f"{' (random init)' if config.encoder.random_init else ''}\n"
          f"{config.data.global_batch_size} utterances x {config.data.max_frames} frames per step, "
          f"{config.num_train_steps} steps, mesh {dict(exp.mesh.shape)}; log: {log_path}")


def evaluator_kwargs(exp, eval_inputs: dict) -> dict:
  return {"model": exp.model, **eval_inputs}


def initialize(exp, state):
  del exp
  return state


write_images = None
