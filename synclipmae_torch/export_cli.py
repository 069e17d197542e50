r"""`synclipmae-export`: a training run's checkpoint -> a folder PyTorch loads (`export.export`).

  synclipmae-export --workdir=/tmp/demo --out=/tmp/demo-torch [--step=2000] [--dtype=bfloat16]

Reads the checkpoint of `--step` (default: the latest) and the training config saved in the
workdir, and writes model.safetensors, config.json and README.md into `--out`.
"""

from __future__ import annotations

from absl import app, flags, logging

from synclipmae_jax import checkpointing
from synclipmae_torch import export, layout
from synclipmae_jax import command_line

_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's workdir.")
_OUT = flags.DEFINE_string("out", None, "Folder to write (created).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step; default: the latest.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", layout.DTYPES, "Dtype of the exported parameters.")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  restored = checkpointing.load(_WORKDIR.value, step=_STEP.value)
  export.export(restored.config, restored.params, _OUT.value, dtype=_DTYPE.value, step=restored.step)
  logging.info("exported step %d of %s to %s (%s)", restored.step, _WORKDIR.value, _OUT.value,
               _DTYPE.value)


def run():
  """Console-script entry point (`synclipmae-export`)."""
  command_line.run(main, __name__)


if __name__ == "__main__":
  run()
