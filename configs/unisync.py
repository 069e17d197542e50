r"""UniSync, the supervised sync baseline (../shared/papers/unisync_summary.txt), trained with the
demo's data, audio front end and budget (configs/demo.py: 3000 steps of 8 clips), on windows of
10 frames (2 x K, so that a non-overlapping shift fits; tasks/pair_sync/pairs.py).

  python -m synclipmae_jax.main --config=configs/unisync.py --workdir=/tmp/unisync

Variants: `tiny`, a few steps of a very small model on the tests' tiny synthetic set.
"""

from configs import demo
from synclipmae_jax import config_defaults


def get_config(arg: str | None = None):
  if arg not in (None, "tiny"):
    raise ValueError(f"unknown variant {arg!r} of configs/unisync.py (known: tiny)")
  c = demo.get_config(arg)
  c.task = "unisync"
  c.model.unisync = config_defaults.unisync_config()
  c.data.window_frames = 2 * c.model.unisync.window
  c.evals.sync.type = "unisync_sync"  # the demo's sync protocol on UniSync's embeddings
  if arg == "tiny":
    c.model.unisync.update(channels=(8, 16), audio_width=16, hidden=32, embed_dim=16)
  return c
