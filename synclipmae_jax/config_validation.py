"""Validation of a config before anything compiles: one ValueError listing every problem.

The allowed values are not repeated here: each is checked against the tuple or table of
the module that uses it (masking modes in `objective`, front ends in `audio_encoder`, ...),
and each evaluator of `config.evals` checks its own options (`evaluators.common`).
"""

from __future__ import annotations

from synclipmae_jax import input_pipeline, objective, photometric, sharding, storage, train_state
from synclipmae_jax.evaluators import common as evaluators
from synclipmae_jax.models import audio_adapter, audio_encoder, remat, synclipmae, vit
from synclipmae_jax.weights import checkpoint_files

PERIODS = ("log_every_steps", "image_every_steps", "checkpoint_every_steps", "keep_checkpoints")


PAPER_ENCODER = "sapiens_0.3b"  # paper 5: initialised from Sapiens-0.3B's pretrained weights


def validate(c, *, num_devices: int, process_count: int = 1, num_slices: int | None = None,
             training: bool = True) -> None:
  """Raises ValueError naming every invalid value of config `c` for a run on `num_devices`.

  `num_slices`: the slices the devices form, which the mesh's DCN sizes must multiply to (the
  AOT tool knows it from the topology); None = checked later against the devices themselves
  (`sharding.make_mesh`, before anything compiles).

  `training`: the config starts a training run (train.py); False for tools that only compile or
  read shapes (the AOT tool), which skip the check that the frozen wav2vec2 has pretrained weights.
  """
  errors = []

  def check(ok, message):
    if not ok:
      errors.append(message)

  def one_of(value, allowed, name):
    check(value in allowed, f"{name}={value!r} must be one of {tuple(allowed)}")

  check(c.num_train_steps > 0, f"num_train_steps={c.num_train_steps} must be > 0")
  for name in PERIODS:
    check(c[name] > 0, f"{name}={c[name]} must be > 0")
  one_of(c.data.source, input_pipeline.DATA_SOURCES, "data.source")
  if c.data.source == "array_record":
    check(bool(c.data.train_pattern) and bool(c.data.eval_pattern),
          "data.train_pattern and data.eval_pattern are required for data.source='array_record'")
  if c.data.source == "tfds":
    check(bool(c.data.tfds_name) and bool(c.data.tfds_data_dir)
          and storage.path(c.data.tfds_data_dir).is_dir(),
          f"data.source='tfds' needs data.tfds_name (got {c.data.tfds_name!r}) and data.tfds_data_dir, "
          f"a folder (got {c.data.tfds_data_dir!r})")
  m = c.model
  one_of(m.encoder_size, vit.SIZES, "model.encoder_size")
  check(m.patch_size > 0 and m.image_size % m.patch_size == 0,
        f"model.image_size={m.image_size} must be a multiple of model.patch_size={m.patch_size}")
  if m.encoder_size in vit.SIZES:
    s = vit.SIZES[m.encoder_size]
    check(s.width % 4 == 0, f"encoder width {s.width} must be divisible by 4")
  check(m.decoder.width % m.decoder.num_heads == 0 and m.decoder.width % 4 == 0,
        f"model.decoder.width={m.decoder.width} must be divisible by 4 and by num_heads={m.decoder.num_heads}")
  one_of(m.dtype, synclipmae.DTYPES, "model.dtype")
  check(set(m.remat_policy) == set(remat.STACKS),
        f"model.remat_policy keys {sorted(m.remat_policy)} must be {sorted(remat.STACKS)}")
  for stack, policy in m.remat_policy.items():
    one_of(policy, remat.REMAT_POLICIES, f"model.remat_policy.{stack}")
  one_of(m.audio.frontend, audio_encoder.FRONTENDS, "model.audio.frontend")
  one_of(m.audio.alignment, audio_encoder.ALIGNMENTS, "model.audio.alignment")
  one_of(m.audio.adapter, audio_adapter.ADAPTER_MODES, "model.audio.adapter")
  check(m.audio.input_context_frames >= 0,
        f"model.audio.input_context_frames={m.audio.input_context_frames} must be >= 0")
  for kind, path in m.init.items():
    errors.extend(f"model.init.{kind}: {problem}" for problem in
                  (checkpoint_files.missing_files(kind, path) if path else []))
  check(not m.init.wav2vec2 or m.audio.frontend == "wav2vec2",
        f"model.init.wav2vec2 needs model.audio.frontend='wav2vec2', got {m.audio.frontend!r}")
  if training:
    check(m.audio.frontend != "wav2vec2" or m.init.wav2vec2 or m.audio.allow_random_wav2vec2,
          "model.init.wav2vec2 is empty: the run would train against a randomly initialised frozen "
          "wav2vec 2.0, which carries no speech knowledge and is never updated (paper 5 uses the "
          "pretrained base model). Give a local copy (--config.model.init.wav2vec2=/path/to/wav2vec2-base) "
          "or, knowingly, set --config.model.audio.allow_random_wav2vec2=True")
  one_of(c.masking.mode, objective.MASKING_MODES, "masking.mode")
  check(0.0 < c.masking.mask_ratio < 1.0, f"masking.mask_ratio={c.masking.mask_ratio} must be in (0, 1)")
  j = c.masking.jitter
  check(0.0 <= j.hue <= photometric.MAX_HUE,
        f"masking.jitter.hue={j.hue} must be in [0, {photometric.MAX_HUE}] (a fraction of a full turn)")
  for name in ("brightness", "contrast", "saturation"):
    check(0.0 <= j[name] <= 1.0, f"masking.jitter.{name}={j[name]} must be in [0, 1]")
  for name, value in c.masking.face_weights.items():
    check(value > 0, f"masking.face_weights.{name}={value} must be > 0")
  one_of(c.loss.recon_on, objective.RECON_TARGETS, "loss.recon_on")
  check(set(c.loss.weights) == set(objective.LOSS_TERMS),
        f"loss.weights keys {sorted(c.loss.weights)} must be {sorted(objective.LOSS_TERMS)}")
  check(all(w >= 0 for w in c.loss.weights.values()), "loss.weights must be >= 0")
  check(c.loss.contrastive.temperature > 0, f"loss.contrastive.temperature={c.loss.contrastive.temperature} must be > 0")
  check(c.loss.contrastive.neighbor_delta >= 0, "loss.contrastive.neighbor_delta must be >= 0")
  one_of(c.loss.contrastive.negatives, objective.NEGATIVES, "loss.contrastive.negatives")
  check(c.optim.learning_rate > 0 and c.optim.warmup_steps >= 0 and c.optim.grad_clip_norm > 0,
        "optim.learning_rate and optim.grad_clip_norm must be > 0, optim.warmup_steps >= 0")
  check(c.data.window_frames >= 2, f"data.window_frames={c.data.window_frames} must be >= 2")
  check(c.data.read_threads >= 0 and c.data.worker_count >= 0,
        f"data.read_threads={c.data.read_threads} and data.worker_count={c.data.worker_count} "
        "must be >= 0")
  b = c.data.global_batch_size
  try:
    sizes = sharding.mesh_shape(c.mesh, num_devices)
    try:
      sharding.dcn_shape(c.mesh, sizes, num_slices)
    except ValueError as e:
      errors.append(str(e))
    shape = dict(zip(sharding.MESH_AXES, sizes))
    shards = shape["data"] * shape["fsdp"]
    check(b % shards == 0, f"data.global_batch_size={b} must be divisible by data*fsdp={shards}")
    check(b % process_count == 0, f"data.global_batch_size={b} must be divisible by the process count {process_count}")
    g = train_state.group_size(c, max(shards, 1))
    check(g >= 1 and b % g == 0 and (b // g) % shards == 0,
          f"loss.contrastive.group_size={g}: the {b} clips must split into groups that each sit on one batch shard "
          f"(number of groups a multiple of data*fsdp={shards})")
    k = c.data.clips_per_identity
    # Runs of k clips of one speaker must not straddle processes; a run across two contrastive
    # groups (groups smaller than k, e.g. one clip per device) only loses its cross-clip swaps.
    check(k >= 0 and (k == 0 or (b // process_count) % k == 0),
          f"data.clips_per_identity={k} must be >= 0 and divide each process's batch "
          f"({b // process_count} clips)")
  except ValueError as e:
    errors.append(str(e))
  if c.data.source == "synthetic":
    check(c.data.synthetic.clip_frames >= c.data.window_frames,
          f"data.synthetic.clip_frames={c.data.synthetic.clip_frames} < data.window_frames={c.data.window_frames}")
  errors.extend(evaluators.validate(c))
  if errors:
    raise ValueError("invalid config:\n  " + "\n  ".join(errors))


def init_warnings(c) -> list[str]:
  """What a run should shout about at start: training against random weights where the paper's
  setup uses pretrained ones (allowed by the config, but rarely what a pod run wants)."""
  m, warnings = c.model, []
  if m.audio.frontend == "wav2vec2" and not m.init.wav2vec2:
    warnings.append("model.audio.allow_random_wav2vec2=True: training against a RANDOMLY "
                    "INITIALISED frozen wav2vec 2.0 (no speech knowledge); set model.init.wav2vec2 "
                    "for the paper's setup")
  if m.encoder_size == PAPER_ENCODER and not m.init.sapiens:
    warnings.append(f"model.encoder_size={PAPER_ENCODER!r} (the paper's encoder) with an empty "
                    "model.init.sapiens: the encoder starts from random weights, not Sapiens-0.3B "
                    "(paper 5)")
  return warnings
