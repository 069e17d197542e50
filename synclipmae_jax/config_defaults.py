"""Every config field with its default: data only (this module imports no jax or flax).

Config files in `configs/` start from `base_config()` and change what they need
(big_vision style: `get_config(arg)` with `:variant` strings), so reading a config loads
nothing but ml_collections. `synclipmae_jax.config_validation.validate(config)` checks every
value against the allowed values that the modules using them define.
"""

from __future__ import annotations

import ml_collections

from data_pipelines import face_weights

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
    ("vocab", None),  # lip reading's output units (tens to a few thousand)
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
  c.checkpoint_every_steps = 500
  c.keep_checkpoints = 3
  c.profile_steps = 0  # clu Profile: number of steps traced once, after warm-up; 0 = off
  # JAX's persistent compilation cache (a local folder or gs://): a restarted run, and every host
  # of a pod, loads its compiled steps from it instead of compiling again; "" = JAX's default
  # (the JAX_COMPILATION_CACHE_DIR environment variable, else none).
  c.compilation_cache_dir = ""

  c.data = ml_collections.ConfigDict()
  c.data.source = "synthetic"  # "synthetic" (generated on first use) | "array_record"
  c.data.directory = ""  # host cache: synthetic sets, bucket shards ("" = ~/.cache/synclipmae_jax)
  c.data.train_pattern = ""  # array_record: glob of training shards
  c.data.eval_pattern = ""  # array_record: glob of held-out shards
  c.data.tfds_name = ""  # tfds: the dataset with its config, e.g. "talking_faces/224px"
  c.data.tfds_data_dir = ""  # tfds: its data_dir (where `tfds build` wrote it)
  c.data.tfds_eval_split = "validation"  # tfds: the held-out split
  c.data.global_batch_size = 8  # clips per step, all processes together
  c.data.window_frames = 16  # T consecutive frames per clip
  c.data.worker_count = 0  # grain worker processes (0 = in the main process)
  c.data.worker_buffer_size = 2
  # Threads reading and decoding ahead in each process; they cost CPU (BENCHMARKS.md (f)): with
  # worker processes, 0 is the efficient choice.
  c.data.read_threads = 2
  c.data.horizontal_flip = 0.0
  # Identity-aware batches (data_pipelines/identity_groups.py): every K consecutive clips of a batch
  # are K clips of one identity, so a contrastive group holds several clips of a few identities and
  # the identity shuffle swaps across clips (paper 3.2); 0 = a global shuffle.
  c.data.clips_per_identity = 2
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
      wav2vec2=ml_collections.ConfigDict(),  # kwargs of transformers.Wav2Vec2Config
      # Frames of audio the frozen encoder reads on each side of a window, in training and in
      # every evaluator alike (data_pipelines/audio_windows.py); silence beyond a clip's ends.
      input_context_frames=0,
      # A training run refuses a frozen wav2vec2 without pretrained weights (model.init.wav2vec2):
      # a random frozen encoder carries no speech knowledge. True = train against one anyway
      # (tests, shape and speed checks); the run then warns at start.
      allow_random_wav2vec2=False))
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
  # Paper 3.2 perturbs colour, brightness and saturation; contrast is left alone (0), as there.
  c.masking.jitter = ml_collections.ConfigDict(dict(
      brightness=0.4, contrast=0.0, saturation=0.4, hue=0.1))
  c.masking.face_weights = ml_collections.ConfigDict(dict(face_weights.DEFAULT_WEIGHTS))

  c.loss = ml_collections.ConfigDict()
  c.loss.recon_on = "masked"  # | "all"
  c.loss.norm_pix = False
  c.loss.identity_shuffle = True
  c.loss.weights = ml_collections.ConfigDict(dict(
      recon_video=1.0, recon_audio=1.0, contrastive=1.0, decorrelation=0.1))
  c.loss.contrastive = ml_collections.ConfigDict(dict(
      temperature=0.07, neighbor_delta=0, similarity_threshold=0.95,
      group_size=0))  # 0 = the per-device batch; threshold > 1 disables similarity positives
  # InfoNCE's candidates (objective.NEGATIVES): "group" = the frames of the anchor's contrastive
  # group (group_size clips); "global" = the frames of the whole global batch (gathered from every
  # device). group_size then only sets the identity shuffle's groups.
  c.loss.contrastive.negatives = "group"

  c.optim = optim_config()
  _set_mesh_and_sharding(c)

  # Evaluators by name (big_vision's `config.evals`): each entry's `type` names a module of
  # synclipmae_jax/evaluators; `every_steps` is its period; the rest are its own options.
  c.evals = ml_collections.ConfigDict()
  c.evals.sync = sync_eval_config()
  return c


def unisync_config() -> ml_collections.ConfigDict:
  """UniSync's streams and margin (models/unisync.py, tasks/unisync/losses.py; `task="unisync"`)."""
  return ml_collections.ConfigDict(dict(
      window=5, channels=(32, 64, 128), audio_width=128, hidden=256, embed_dim=128, margin=0.2))


def syncnet_config() -> ml_collections.ConfigDict:
  """The SyncNet we train: its streams and contrastive margin (models/syncnet.py,
  tasks/syncnet/losses.py; `task="syncnet"`)."""
  return ml_collections.ConfigDict(dict(
      window=5, channels=(32, 64, 128), audio_channels=(32, 64), hidden=256, embed_dim=128,
      margin=1.0))


def optim_config(**overrides) -> ml_collections.ConfigDict:
  """AdamW with warm-up and cosine decay (`optimizer.make`)."""
  c = ml_collections.ConfigDict(dict(
      learning_rate=1e-3, warmup_steps=100, final_lr_fraction=0.01, weight_decay=0.05,
      b1=0.9, b2=0.95, grad_clip_norm=1.0))
  c.update(overrides)
  return c


def _set_mesh_and_sharding(c) -> None:
  """The device mesh (data x fsdp x tensor; -1 = the devices left) and the logical-axis rules.

  data / fsdp / tensor are each axis's total size over all devices (all slices); dcn_data /
  dcn_fsdp are the part of data / fsdp that crosses slices (multislice: their product = the
  number of slices; 1 = one slice). Tensor stays inside a slice (sharding.py).
  """
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, dcn_data=1, dcn_fsdp=1))
  c.sharding = ml_collections.ConfigDict()
  c.sharding.logical_axis_rules = DEFAULT_RULES


def sync_eval_config(**overrides) -> ml_collections.ConfigDict:
  """The sync evaluator (paper 4.1): held-out lag detection and R-precision."""
  c = ml_collections.ConfigDict(dict(
      type="sync", every_steps=500, num_clips=32, max_true_lag=10, trials_per_clip=2,
      windows=(1, 5, 15), max_lag=15, tolerance=1, pool_size=32, ks=(1, 2, 3), view="face",
      frames_per_call=256, seed=0))
  c.update(overrides)
  return c


def probe_eval_config(**overrides) -> ml_collections.ConfigDict:
  """The linear probes (paper 4.2, Table 3) on labelled videos: emotion and facial actions scored
  per video on 16 and 80 frames sampled uniformly over it. pattern: prepared shards with train /
  validation / test records ("" = the labelled synthetic set `synthetic`); frames: the counts;
  protocol: evaluators/probe/ PROTOCOLS ("frames": per-frame logits averaged, the paper's for
  SyncLipMAE; "clips": frames / clip_length clips of clip_length frames, the clip-based
  baselines'); feature: evaluators/probe/ FEATURES."""
  c = ml_collections.ConfigDict(dict(
      type="probe", every_steps=1000, pattern="",
      synthetic=dict(num_identities=400, clips_per_identity=6, clip_frames=80, seed=0),
      frames=(16, 80), protocol="frames", clip_length=16, tasks=("emotion", "actions"),
      feature="motion",
      learning_rates=(1e-3, 1e-2, 1e-1), weight_decays=(0.0, 1e-3, 1e-1), steps=500,
      frames_per_call=256))
  c.update(overrides)
  return c


def vsr_config() -> ml_collections.ConfigDict:
  """The lip-reading head (paper 4.3; `task="vsr"`, tasks/vsr/): a Conformer encoder and a
  Transformer decoder over SentencePiece units trained with the hybrid CTC/attention loss on the
  vocal-motion tokens of a frozen pretrained SyncLipMAE (`encoder.workdir`)."""
  c = ml_collections.ConfigDict()
  c.task = "vsr"
  c.seed = 0
  c.num_train_steps = 2000
  c.log_every_steps = 50
  c.checkpoint_every_steps = 500
  c.keep_checkpoints = 3
  c.profile_steps = 0
  c.compilation_cache_dir = ""  # as in base_config
  # The frozen encoder: a pretraining workdir, its checkpoint (0 = the latest), or with
  # random_init its run's initialisation (the random-encoder baseline).
  c.encoder = ml_collections.ConfigDict(dict(workdir="", step=0, random_init=False))
  c.data = ml_collections.ConfigDict(dict(
      pattern="",  # prepared shards with train / validation / test records and transcripts
      # "" = the labelled synthetic set of unseen speakers (synthetic_dataset.ensure_labelled_dataset)
      synthetic=dict(num_identities=40, clips_per_identity=20, clip_frames=80, seed=0),
      directory="",  # where the synthetic set is generated ("" = next to the encoder run's data)
      global_batch_size=16, max_frames=80, max_units=64, frames_per_call=256))
  c.units = ml_collections.ConfigDict(dict(vocab_size=64, model_type="unigram"))
  c.model = ml_collections.ConfigDict(dict(
      width=96, encoder_depth=3, decoder_depth=1, num_heads=4, mlp_dim=384, conv_kernel=15,
      causal_conv=False, dtype="float32"))
  c.loss = ml_collections.ConfigDict(dict(ctc_weight=0.1, label_smoothing=0.1))
  c.optim = optim_config(warmup_steps=200, b2=0.98)
  _set_mesh_and_sharding(c)
  c.evals = ml_collections.ConfigDict()
  c.evals.vsr = vsr_eval_config()
  return c


def vsr_eval_config(**overrides) -> ml_collections.ConfigDict:
  """WER / CER of the lip-reading head (paper 4.3, Table 5) with the joint CTC/attention beam
  search on a split of the labelled data (num_clips 0 = all of it)."""
  c = ml_collections.ConfigDict(dict(
      type="vsr", every_steps=500, split="validation", num_clips=0, beam=10, ctc_weight=0.1))
  c.update(overrides)
  return c
