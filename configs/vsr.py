r"""Lip reading (paper 4.3): the Conformer / Transformer head with the hybrid CTC/attention loss
(CTC weight 0.1) on the frozen vocal-motion tokens of a pretrained SyncLipMAE.

  python -m synclipmae_jax.main --config=configs/vsr.py --workdir=/tmp/vsr \
      --config.encoder.workdir=workdirs/demo

The labelled clips are the labelled synthetic set of unseen speakers (80 frames, with
transcripts) unless `data.pattern` names prepared shards with train / validation / test records
(e.g. LRS3-style transcripts). `--config.encoder.random_init=True` trains the same head on the
encoder run's random initialisation (the random-encoder baseline). The evaluator reports WER and
CER on the validation split with the joint CTC/attention beam search (beam 10).

Variants (`--config=configs/vsr.py:<variant>`):
  tiny  a few steps of a very small head; what the tests train (encoder: configs/demo.py:tiny).
"""

from synclipmae_jax import config_defaults


def get_config(arg: str | None = None):
  c = config_defaults.vsr_config()
  if arg == "tiny":
    c.num_train_steps = 4
    c.log_every_steps = c.checkpoint_every_steps = 2
    c.data.update(global_batch_size=8, max_frames=24, max_units=16)
    c.data.synthetic.update(num_identities=5, clips_per_identity=3, clip_frames=24)
    c.units.vocab_size = 40
    c.model.update(width=16, encoder_depth=1, decoder_depth=1, num_heads=2, mlp_dim=32, conv_kernel=3)
    c.evals.vsr.update(every_steps=2, beam=2)
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of configs/vsr.py (known: tiny)")
  return c
