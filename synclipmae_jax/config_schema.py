"""Every config field with its default, and validation before anything compiles.

Config files in `configs/` start from `base_config()` and change what they need
(big_vision style: `get_config(arg)` with `:variant` strings). `validate(config)` checks
every value a run depends on and raises one ValueError listing all problems.
"""

from __future__ import annotations

import ml_collections

from synclipmae_jax import objective
from synclipmae_jax.models import audio_adapter, remat, vit
from synclipmae_jax.weights import checkpoint_files

DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("layers", None),
    ("length", None),
    ("patch", None),
    ("prompts", None),
    ("audio_features", "fsdp"),  # the adapter's 9984-wide input: sharded like `embed`
    # The frozen wav2vec 2.0 (models/wav2vec2.py AXES): sharded like the trainable weights.
    ("audio_embed", "fsdp"),
    ("audio_heads", "tensor"),
    ("audio_mlp", "tensor"),
    ("audio_conv", "fsdp"),
    ("act_embed", None),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
)


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_train_steps = 1000
  c.log_every_steps = 50
  c.image_every_steps = 500
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 500
  c.keep_checkpoints = 3
  c.profile_steps = 0  # clu Profile: number of steps traced once, after warm-up; 0 = off

  c.data = ml_collections.ConfigDict()
  c.data.source = "synthetic"  # "synthetic" (generated on first use) | "array_record"
  c.data.directory = ""  # synthetic: cache dir ("" = ~/.cache/synclipmae_jax)
  c.data.train_pattern = ""  # array_record: glob of training shards
  c.data.eval_pattern = ""  # array_record: glob of held-out shards
  c.data.global_batch_size = 8  # clips per step, all processes together
  c.data.window_frames = 16  # T consecutive frames per clip
  c.data.worker_count = 0  # grain worker processes (0 = in the main process)
  c.data.worker_buffer_size = 2
  c.data.horizontal_flip = 0.0
  c.data.synthetic = ml_collections.ConfigDict(dict(
      num_train_clips=512, num_eval_clips=64, num_identities=64, num_eval_identities=16,
      clip_frames=75, eval_clip_frames=100, seed=0, num_shards=4))

  c.model = ml_collections.ConfigDict()
  c.model.image_size = 48
  c.model.patch_size = 8
  c.model.encoder_size = "mini"
  c.model.decoder = ml_collections.ConfigDict(dict(
      width=512, depth=8, num_heads=16, mlp_dim=2048, cross_attention=True))
  c.model.audio = ml_collections.ConfigDict(dict(
      frontend="mel", alignment="resample", adapter="all_layers", n_mels=40, context_frames=1,
      wav2vec2=ml_collections.ConfigDict()))  # kwargs of transformers.Wav2Vec2Config
  # Pretrained initialisation of a fresh run ("" = random): a Hugging Face wav2vec2 directory,
  # a Sapiens .pth / TorchScript file, a Hugging Face ViTMAEForPreTraining directory.
  c.model.init = ml_collections.ConfigDict(dict(wav2vec2="", sapiens="", vitmae=""))
  c.model.dtype = "float32"
  c.model.scan_layers = False
  # What each stack's blocks keep for the backward pass (models/remat.py: none, full, ...).
  c.model.remat_policy = ml_collections.ConfigDict(dict(encoder="none", decoder="none"))

  c.masking = ml_collections.ConfigDict()
  c.masking.mode = "two_bypass"  # | "uniform_only" (A1) | "face_only" (A2)
  c.masking.mask_ratio = 0.75
  c.masking.photometric = True  # jitter of the face-preserving view (off = A3)
  c.masking.jitter = ml_collections.ConfigDict(dict(
      brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1))
  c.masking.face_weights = ml_collections.ConfigDict(dict(
      background=1.0, face=2.0, lower_face=4.0, mouth=16.0))

  c.loss = ml_collections.ConfigDict()
  c.loss.recon_on = "masked"  # | "all"
  c.loss.norm_pix = False
  c.loss.identity_shuffle = True
  c.loss.weights = ml_collections.ConfigDict(dict(
      recon_video=1.0, recon_audio=1.0, contrastive=1.0, decorrelation=0.1))
  c.loss.contrastive = ml_collections.ConfigDict(dict(
      temperature=0.07, neighbor_delta=0, similarity_threshold=0.95,
      group_size=0))  # 0 = the per-device batch; threshold > 1 disables similarity positives

  c.optim = ml_collections.ConfigDict(dict(
      learning_rate=1e-3, warmup_steps=100, final_lr_fraction=0.01, weight_decay=0.05,
      b1=0.9, b2=0.95, grad_clip_norm=1.0))

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.sharding = ml_collections.ConfigDict()
  c.sharding.logical_axis_rules = DEFAULT_RULES

  c.eval = ml_collections.ConfigDict(dict(
      num_clips=32, max_true_lag=10, trials_per_clip=2, windows=(1, 5, 15), max_lag=15,
      tolerance=1, pool_size=32, ks=(1, 2, 3), view="face", frames_per_call=256, seed=0))
  return c


def validate(c, *, num_devices: int, process_count: int = 1) -> None:
  """Raises ValueError naming every invalid value (before anything compiles)."""
  from synclipmae_jax import sharding  # local: sharding imports jax device state lazily

  errors = []

  def check(ok, message):
    if not ok:
      errors.append(message)

  check(c.num_train_steps > 0, f"num_train_steps={c.num_train_steps} must be > 0")
  for name in ("log_every_steps", "image_every_steps", "eval_every_steps", "checkpoint_every_steps",
               "keep_checkpoints"):
    check(c[name] > 0, f"{name}={c[name]} must be > 0")
  check(c.data.source in ("synthetic", "array_record"),
        f"data.source={c.data.source!r} must be 'synthetic' or 'array_record'")
  if c.data.source == "array_record":
    check(bool(c.data.train_pattern) and bool(c.data.eval_pattern),
          "data.train_pattern and data.eval_pattern are required for data.source='array_record'")
  m = c.model
  check(m.encoder_size in vit.SIZES, f"model.encoder_size={m.encoder_size!r}, known: {sorted(vit.SIZES)}")
  check(m.patch_size > 0 and m.image_size % m.patch_size == 0,
        f"model.image_size={m.image_size} must be a multiple of model.patch_size={m.patch_size}")
  if m.encoder_size in vit.SIZES:
    s = vit.SIZES[m.encoder_size]
    check(s.width % 4 == 0, f"encoder width {s.width} must be divisible by 4")
  check(m.decoder.width % m.decoder.num_heads == 0 and m.decoder.width % 4 == 0,
        f"model.decoder.width={m.decoder.width} must be divisible by 4 and by num_heads={m.decoder.num_heads}")
  check(m.dtype in ("float32", "bfloat16"), f"model.dtype={m.dtype!r} must be float32 or bfloat16")
  check(set(m.remat_policy) == set(remat.STACKS),
        f"model.remat_policy keys {sorted(m.remat_policy)} must be {sorted(remat.STACKS)}")
  for stack, policy in m.remat_policy.items():
    check(policy in remat.REMAT_POLICIES,
          f"model.remat_policy.{stack}={policy!r} must be one of {remat.REMAT_POLICIES}")
  check(m.audio.frontend in ("mel", "wav2vec2"), f"model.audio.frontend={m.audio.frontend!r}")
  check(m.audio.alignment in ("resample", "interpolate"), f"model.audio.alignment={m.audio.alignment!r}")
  check(m.audio.adapter in audio_adapter.ADAPTER_MODES, f"model.audio.adapter={m.audio.adapter!r}")
  for kind, path in m.init.items():
    errors.extend(f"model.init.{kind}: {problem}" for problem in
                  (checkpoint_files.missing_files(kind, path) if path else []))
  check(not m.init.wav2vec2 or m.audio.frontend == "wav2vec2",
        f"model.init.wav2vec2 needs model.audio.frontend='wav2vec2', got {m.audio.frontend!r}")
  check(c.masking.mode in objective.MASKING_MODES,
        f"masking.mode={c.masking.mode!r} must be one of {objective.MASKING_MODES}")
  check(0.0 < c.masking.mask_ratio < 1.0, f"masking.mask_ratio={c.masking.mask_ratio} must be in (0, 1)")
  for name, value in c.masking.face_weights.items():
    check(value > 0, f"masking.face_weights.{name}={value} must be > 0")
  check(c.loss.recon_on in ("masked", "all"), f"loss.recon_on={c.loss.recon_on!r} must be 'masked' or 'all'")
  check(set(c.loss.weights) == set(objective.LOSS_TERMS),
        f"loss.weights keys {sorted(c.loss.weights)} must be {sorted(objective.LOSS_TERMS)}")
  check(all(w >= 0 for w in c.loss.weights.values()), "loss.weights must be >= 0")
  check(c.loss.contrastive.temperature > 0, f"loss.contrastive.temperature={c.loss.contrastive.temperature} must be > 0")
  check(c.loss.contrastive.neighbor_delta >= 0, "loss.contrastive.neighbor_delta must be >= 0")
  check(c.optim.learning_rate > 0 and c.optim.warmup_steps >= 0 and c.optim.grad_clip_norm > 0,
        "optim.learning_rate and optim.grad_clip_norm must be > 0, optim.warmup_steps >= 0")
  check(c.data.window_frames >= 2, f"data.window_frames={c.data.window_frames} must be >= 2")
  b = c.data.global_batch_size
  try:
    shape = dict(zip(sharding.MESH_AXES, sharding.mesh_shape(c.mesh, num_devices)))
    shards = shape["data"] * shape["fsdp"]
    check(b % shards == 0, f"data.global_batch_size={b} must be divisible by data*fsdp={shards}")
    check(b % process_count == 0, f"data.global_batch_size={b} must be divisible by the process count {process_count}")
    g = c.loss.contrastive.group_size or max(b // shards, 1)
    check(b % g == 0 and (b // g) % shards == 0,
          f"loss.contrastive.group_size={g}: the {b} clips must split into groups that each sit on one batch shard "
          f"(number of groups a multiple of data*fsdp={shards})")
  except ValueError as e:
    errors.append(str(e))
  e = c.eval
  check(e.view in ("full", "face"), f"eval.view={e.view!r} must be 'full' or 'face'")
  check(e.num_clips >= 1 and e.trials_per_clip >= 1, "eval.num_clips and eval.trials_per_clip must be >= 1")
  check(0 <= e.max_true_lag <= e.max_lag, f"eval.max_true_lag={e.max_true_lag} must be in [0, eval.max_lag={e.max_lag}]")
  if c.data.source == "synthetic":
    n = c.data.synthetic.eval_clip_frames - 2 * e.max_lag
    check(n >= max(e.windows), f"held-out clips of {c.data.synthetic.eval_clip_frames} frames leave {n} audio "
          f"frames after +-{e.max_lag} frames of lag context, fewer than the largest window {max(e.windows)}")
    check(c.data.synthetic.clip_frames >= c.data.window_frames,
          f"data.synthetic.clip_frames={c.data.synthetic.clip_frames} < data.window_frames={c.data.window_frames}")
    check(c.data.synthetic.num_eval_clips * e.trials_per_clip >= 1 and
          c.data.synthetic.num_eval_clips >= e.num_clips,
          f"eval.num_clips={e.num_clips} > data.synthetic.num_eval_clips={c.data.synthetic.num_eval_clips}")
  if errors:
    raise ValueError("invalid config:\n  " + "\n  ".join(errors))
