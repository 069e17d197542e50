r"""SyncNet trained by us (models/syncnet.py: the public SyncNet's two streams, scaled to the
synthetic faces; SyncNet's contrastive loss, tasks/syncnet/losses.py), with the demo's data, audio
front end and budget (configs/demo.py: 3000 steps of 8 clips), on UniSync's samples and windows of
10 frames (configs/unisync.py). Evaluated by the sync protocol on Euclidean distances, with LSE-D /
LSE-C (evaluators/syncnet_sync.py): the "SyncNet trained by us" row of `synclipmae-sync-table`.

The SyncNet paper does not print its contrastive margin: 1.0 here (`model.syncnet.margin`).

  python -m synclipmae_jax.main --config=configs/syncnet.py --workdir=/tmp/syncnet

Variants: `tiny`, a few steps of a very small model on the tests' tiny synthetic set.
"""

from configs import unisync
from synclipmae_jax import config_defaults


def get_config(arg: str | None = None):
  if arg not in (None, "tiny"):
    raise ValueError(f"unknown variant {arg!r} of configs/syncnet.py (known: tiny)")
  c = unisync.get_config(arg)
  c.task = "syncnet"
  del c.model["unisync"]
  c.model.syncnet = config_defaults.syncnet_config()
  c.data.window_frames = 2 * c.model.syncnet.window
  c.evals.sync.type = "syncnet_sync"  # the demo's sync protocol on SyncNet's embeddings
  if arg == "tiny":
    c.model.syncnet.update(channels=(8, 16), audio_channels=(8,), hidden=32, embed_dim=16)
  return c
