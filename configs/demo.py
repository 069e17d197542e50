r"""The embedded demo: SyncLipMAE on the built-in synthetic talking faces, 2 CPU cores.

  python -m synclipmae_jax.main --config=configs/demo.py --workdir=/tmp/demo

The synthetic dataset (data_pipelines/synthetic/) is generated into
~/.cache/synclipmae_jax on first use. Expected result on held-out synthetic speakers: see
docs/training.md ("Measured results"), which records the figures and the command.

Variants (`--config=configs/demo.py:<variant>`):
  tiny       a few steps of a very small model; what the tests train.
  quick      the demo's model for 600 steps on 128 clips (~2 min): K=15 about 97 %, enough for
             whole-video lag estimates within +-1 frame; what the drift tests train.
  plain_mae  the baseline of the probes (paper Table 3's MARLIN-like row): the same model and
             budget trained as a plain single-view MAE: uniform masking only, video
             reconstruction only (no contrastive, decorrelation or audio-driven term, no
             identity shuffle). docs/downstream.md has its table.
The paper's ablations are overrides, e.g. `--config.masking.mode=uniform_only` (A1).
"""

from synclipmae_jax import config_defaults


def get_config(arg: str | None = None):
  c = config_defaults.base_config()
  c.num_train_steps = 3000
  c.log_every_steps = 50
  c.image_every_steps = 1000
  c.evals.sync.every_steps = 1500
  c.checkpoint_every_steps = 500

  c.data.global_batch_size = 8
  c.data.window_frames = 12
  c.model.image_size = 48
  c.model.patch_size = 8
  c.model.encoder_size = "mini"
  # One decoder layer and 12-frame windows: 0.22 s per step with jemalloc on the slowest 2-core
  # machine of this kind (a 2-layer decoder over 16-frame windows took 0.43 s; docs/training.md).
  c.model.decoder.update(width=64, depth=1, num_heads=4, mlp_dim=256)
  c.model.audio.frontend = "mel"  # a random frozen wav2vec2 carries no speech knowledge
  c.model.audio.context_frames = 2  # +-80 ms of sound around each frame (coarticulation)
  c.model.audio.input_context_frames = 25  # each window read with 1 s of audio on each side
  # The paper gives no loss weights. At this budget a contrastive term 8x the reconstructions
  # lifts held-out R@1 by about 3.5 points (docs/training.md, "Measured results", has the trials).
  c.loss.weights.contrastive = 8.0
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 100

  if arg == "tiny":
    c.num_train_steps = 4
    c.log_every_steps = c.image_every_steps = c.evals.sync.every_steps = c.checkpoint_every_steps = 2
    c.data.global_batch_size = 8
    c.data.window_frames = 4
    c.data.synthetic.update(num_train_clips=16, num_eval_clips=4, num_identities=4,
                            num_eval_identities=2, clip_frames=12, eval_clip_frames=24,
                            num_shards=2)
    c.model.image_size = 16
    c.model.encoder_size = "tiny"
    c.model.decoder.update(width=16, depth=1, num_heads=2, mlp_dim=32)
    c.model.audio.n_mels = 8
    c.model.audio.input_context_frames = 2
    c.evals.sync.update(num_clips=4, max_true_lag=3, trials_per_clip=1, windows=(1, 5),
                        max_lag=5, pool_size=8)
  elif arg == "quick":
    c.num_train_steps = 600
    c.evals.sync.every_steps = c.checkpoint_every_steps = c.image_every_steps = 600
    c.data.synthetic.update(num_train_clips=128, num_eval_clips=32, num_identities=32,
                            num_eval_identities=8)
  elif arg == "plain_mae":
    c.masking.mode = "uniform_only"
    c.loss.weights.update(recon_audio=0.0, contrastive=0.0, decorrelation=0.0)
    c.loss.identity_shuffle = False
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of configs/demo.py (known: tiny, quick, plain_mae)")
  return c


def get_hyper(hyper):
  """The paper's ablations (Table 7 directions) on the synthetic demo at the demo's budget: the
  default with two seeds (its spread), A1 uniform-only, A2 face-preserving only (bypass 2 alone,
  its photometric jitter included, as paper 3.2 defines the bypass), A2 without that jitter, no
  decorrelation, A3 no photometric jitter, C1 prompts concatenated instead of cross-attention, no
  identity shuffling. 9 runs of 3000 steps, one after another (docs/training.md "Ablations" has the table
  and the time):

    bash scripts/demo_ablations.sh /tmp/demo_ablations
  """
  return hyper.chainit([
      hyper.sweep("seed", [0, 1]),  # the default
      hyper.sweep("masking.mode", ["uniform_only", "face_only"]),  # A1, A2
      hyper.product([hyper.fixed("masking.mode", "face_only"),
                     hyper.fixed("masking.photometric", False)]),  # A2 without its jitter
      hyper.fixed("loss.weights.decorrelation", 0.0),
      hyper.fixed("masking.photometric", False),  # A3
      hyper.fixed("model.decoder.cross_attention", False),  # C1
      hyper.fixed("loss.identity_shuffle", False),
  ])
