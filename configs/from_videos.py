r"""Training on a small folder of the user's own talking-face videos, on CPU: what `synclipmae-run`
trains when no --config is given.

  synclipmae-run /data/my_videos --workdir=/tmp/my_run

The demo's model and budget (configs/demo.py: 48 px crops, the "mini" encoder, one decoder
layer, a mel front end, 3000 steps: 6.6 to 13.3 min on 2 cores, README "Headline results") on
the ArrayRecord shards prepared from the videos (`synclipmae-run` sets `data.train_pattern` and
`data.eval_pattern`). 3000 steps of 8 windows of 12 frames read 288k frames, about 3.2 hours of
video: a folder holding more than MAX_HOURS hours (kept after preparation) is better served by a
larger model on an accelerator, so `synclipmae-run` asks for a --config then (configs/pretrain.py
on a TPU pod). No variants.
"""

import os

from synclipmae_jax import config_files

# Read by path (not `from configs import demo`): the console script runs from any folder.
_DEMO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo.py")

# Hours of prepared (kept) video above which the default config is too small a model and too
# short a run: `synclipmae-run` stops after the preparation and asks for a --config.
MAX_HOURS = 3.0


def get_config(arg: str | None = None):
  if arg:
    raise ValueError(f"unknown variant {arg!r} of configs/from_videos.py (it has none)")
  c = config_files.module_of(_DEMO).get_config()
  c.data.source = "array_record"
  return c
