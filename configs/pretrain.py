r"""The paper's pretraining setup (SyncLipMAE section 5, "Implementation details").

Sapiens-0.3B-size ViT encoder (1024 wide, 24 layers, 16 heads, patch 16), ViTMAE-B decoder
(512 x 8, 16 heads) with prompt cross-attention in every block, frozen wav2vec 2.0 base with
the all-layer adapter, 25 fps video and 16 kHz audio, 48 clips per chip, 400k steps.

Launch on a Cloud TPU pod (every worker runs the same command; data prepared as
ArrayRecord shards in the schema of data_pipelines/schema.py):

  python -m synclipmae_jax.main --config=configs/pretrain.py --workdir=gs://BUCKET/runs/synclipmae \
    --jax_distributed \
    --config.data.train_pattern='/data/talking_faces/train-*.array_record' \
    --config.data.eval_pattern='/data/talking_faces/validation-*.array_record'

`data.global_batch_size` is set for 128 chips (48 x 128 = 6144 clips); change it with the
chip count: `--config.data.global_batch_size=$((48 * CHIPS))`. The workdir is written straight to
the bucket (checkpoints, config, metrics, TensorBoard, the log); data patterns may be `gs://`
shards too (copied once per host) or a gcsfuse mount (a local path, as above). Pass
`--config.compilation_cache_dir=gs://BUCKET/runs/compilation_cache` (launch/tpu_pod.sh does) so
that a restart loads the compiled step. Exit status 75 = preempted after saving (relaunch the same
command to resume; `tpu_pod.sh train --restart` does), 0 = finished (launch/README.md).

Multislice (N slices over DCN, a queued resource: `launch/tpu_pod.sh create --num_slices=N`):
the same command with `--config.mesh.dcn_data=N` (data parallel across slices; the mesh sizes
stay totals over all chips) and the batch for all chips; launch/README.md "Multislice".

Pretrained initialisation (paper 5; local files, nothing is downloaded; "" = random init):

  --config.model.init.wav2vec2=/ckpt/wav2vec2-base      # HF dir: config.json + model weights
  --config.model.init.sapiens=/ckpt/sapiens_0.3b_epoch_1600_clean.pth
  --config.model.init.vitmae=/ckpt/vit-mae-base         # HF ViTMAEForPreTraining dir

Without model.init.wav2vec2 the run refuses to start (a random frozen speech encoder learns
nothing); --config.model.audio.allow_random_wav2vec2=True overrides that, with a warning, as does
an empty model.init.sapiens. Only a fresh run loads them (a resumed run restores its own checkpoint). Inspect a checkpoint
with `synclipmae-inspect-checkpoint --config=configs/pretrain.py sapiens /ckpt/....pth`.

Memory and speed: the rematerialisation policy (models/remat.py) is the one the AOT search picks
for v5p:4x4x8 at 48 clips per chip: of the policies that leave >= 15 % of HBM free, the one that
runs the fewest FLOPs (BENCHMARKS.md (c), libtpu on any host, the tpu extra):

  python -m synclipmae_jax.tools.remat_search --config=configs/pretrain.py --topology=v5p:4x4x8 \
    --clips_per_chip=48 --min_headroom=0.15        # every policy; bash benchmarks/remat_pretrain.sh

No remat, unscanned: 76.9 GiB of 95 per chip (19 % free), 1.010x the analytical FLOPs, 2.61 days
for 400k steps at 40 % MFU (full remat: 10.7 GiB, 1.241x, 3.21 days); "dots_no_batch" (39.9 GiB,
1.022x) is the setting with room to spare. With fewer chips or less HBM per chip, run the search
for that topology (and --fallback_clips_per_chip for smaller batches; BENCHMARKS.md (c) has
v6e:16x16).

Paper's targets (Hallo3 test set, K = 1 / 5 / 15): Acc 52.5 / 68.4 / 82.3 %, Offset
2.66 / 1.73 / 0.93 frames, R-precision@1/2/3 (pool 32) 40.2 / 61.5 / 73.5 %.
"""

from synclipmae_jax import config_defaults

CHIPS = 128
CLIPS_PER_CHIP = 48


def get_config(arg: str | None = None):
  if arg:
    raise ValueError(f"configs/pretrain.py has no variants, got {arg!r}")
  c = config_defaults.base_config()
  c.num_train_steps = 400_000
  c.log_every_steps = 100
  c.image_every_steps = 5_000
  c.evals.sync.every_steps = 10_000
  c.checkpoint_every_steps = 2_000
  c.keep_checkpoints = 3
  c.profile_steps = 5

  c.data.source = "array_record"
  c.data.global_batch_size = CLIPS_PER_CHIP * CHIPS
  c.data.window_frames = 8
  c.data.worker_count = 16
  c.data.worker_buffer_size = 4
  c.data.read_threads = 0  # the 16 processes decode in parallel; threads would only cost CPU

  c.model.image_size = 224
  c.model.patch_size = 16
  c.model.encoder_size = "sapiens_0.3b"
  c.model.decoder.update(width=512, depth=8, num_heads=16, mlp_dim=2048, cross_attention=True)
  c.model.audio.update(frontend="wav2vec2", alignment="resample", adapter="all_layers",
                       input_context_frames=25)  # each 8-frame window read with 1 s of audio around it
  # model.audio.wav2vec2 stays empty: transformers.Wav2Vec2Config() defaults = wav2vec 2.0 base
  c.model.init.wav2vec2 = ""  # e.g. a local copy of facebook/wav2vec2-base
  c.model.init.sapiens = ""  # e.g. sapiens_0.3b_epoch_1600_clean.pth (CC-BY-NC-4.0)
  c.model.init.vitmae = ""  # e.g. a local copy of facebook/vit-mae-base
  c.model.dtype = "bfloat16"
  # Chosen by the remat search for v5p:4x4x8 at 48 clips per chip (see the docstring).
  c.model.scan_layers = False
  c.model.remat_policy.update(encoder="none", decoder="none")

  c.optim.update(learning_rate=1.5e-4, warmup_steps=10_000, weight_decay=0.05, b2=0.95)
  c.mesh.update(data=-1, fsdp=8, tensor=1)
  c.evals.sync.update(num_clips=100, trials_per_clip=4, frames_per_call=512)
  return c


def get_hyper(hyper):
  r"""The paper's ablations (Table 7: A1-A3, B1, C1) and the full model, one pod run each.

    python -m synclipmae_jax.sweeps.launch --config=configs/pretrain.py --sweep_root=/runs/ablations \
      --run --launcher=tpu --launcher_args='--name=POD --zone=ZONE' -- \
      --config.data.train_pattern=... --config.data.eval_pattern=...
  """
  return hyper.chainit([
      hyper.fixed("masking.mode", "two_bypass"),  # ours
      hyper.sweep("masking.mode", ["uniform_only", "face_only"]),  # A1, A2
      hyper.fixed("masking.photometric", False),  # A3
      hyper.fixed("model.audio.adapter", "last_layer"),  # B1
      hyper.fixed("model.decoder.cross_attention", False),  # C1
  ])
