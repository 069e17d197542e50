r"""Prints what the pretrained loader would map where, for one checkpoint and one config.

  synclipmae-inspect-checkpoint --config=configs/pretrain.py KIND PATH
  python -m synclipmae_jax.weights.inspect --config=configs/pretrain.py KIND PATH

KIND is wav2vec2 (a Hugging Face directory), sapiens (a .pth / TorchScript file) or vitmae (a
Hugging Face ViTMAEForPreTraining directory). Every line of the output is
`source key (shape) -> target parameter (shape): transformation`, followed by the unused
checkpoint keys and the parameters that keep their initial values, with reasons; problems
(unknown keys, missing keys, shape mismatches, config differences) are listed first and make the
command exit with status 1. Config fields are overridden as in training, e.g.
`--config.model.image_size=256`.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from synclipmae_jax.weights import pretrained
from synclipmae_jax import command_line

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "The training config (configs/*.py[:variant]) whose model is the target.",
    lock_config=True)
flags.mark_flag_as_required("config")


def main(argv: list[str]) -> int:
  if len(argv) != 3:
    raise app.UsageError(f"expected KIND PATH (KIND one of {pretrained.KINDS}), got {argv[1:]}")
  kind, path = argv[1:]
  if kind not in pretrained.KINDS:
    raise app.UsageError(f"KIND must be one of {pretrained.KINDS}, got {kind!r}")
  config = _CONFIG.value
  _, report = pretrained.convert(kind, path, config, pretrained.target_shapes(config, kind))
  print(report.format())
  return 1 if report.problems else 0


def run():
  """Console-script entry point (`synclipmae-inspect-checkpoint`)."""
  command_line.run(main, __name__)


if __name__ == "__main__":
  run()
