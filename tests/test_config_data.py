"""Configs are data: reading one loads no jax; validation checks against the allowed values
that the modules using them define (one definition each), and reports every problem at once."""

import os
import subprocess
import sys

import pytest

from configs import demo
from synclipmae_jax import config_validation, objective
from synclipmae_jax.evaluators import common as evaluators
from synclipmae_jax.evaluators import sync
from synclipmae_jax.models import audio_encoder, synclipmae

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_reading_the_configs_imports_no_framework():
  code = ("import sys, configs.demo, configs.pretrain\n"
          "configs.demo.get_config('tiny'); configs.pretrain.get_config()\n"
          "loaded = sorted(m for m in ('jax', 'flax', 'optax', 'orbax', 'tensorflow', 'grain') if m in sys.modules)\n"
          "assert not loaded, loaded\n")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO))
  assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("field, value, allowed", [
    ("masking.mode", "random", objective.MASKING_MODES),
    ("model.audio.frontend", "mfcc", audio_encoder.FRONTENDS),
    ("model.audio.alignment", "nearest", audio_encoder.ALIGNMENTS),
    ("model.dtype", "float16", tuple(synclipmae.DTYPES)),
    ("loss.recon_on", "visible", objective.RECON_TARGETS),
    ("evals.sync.view", "mouth", sync.VIEWS),
])
def test_allowed_values_come_from_the_modules_that_use_them(field, value, allowed):
  config = demo.get_config("tiny")
  node = config
  *path, last = field.split(".")
  for part in path:
    node = node[part]
  node[last] = value
  with pytest.raises(ValueError) as e:
    config_validation.validate(config, num_devices=1)
  assert f"{value!r} must be one of {tuple(allowed)}" in str(e.value)


def test_every_problem_is_listed_at_once():
  config = demo.get_config("tiny")
  config.evals.sync.max_true_lag = 99
  config.evals.extra = dict(type="no_such_evaluator", every_steps=1)
  config.log_every_steps = 0
  with pytest.raises(ValueError) as e:
    config_validation.validate(config, num_devices=1)
  message = str(e.value)
  assert "evals.sync.max_true_lag=99 must be in [0, max_lag=5]" in message
  assert f"evals.extra.type='no_such_evaluator' must be one of {evaluators.TYPES}" in message
  assert "log_every_steps=0 must be > 0" in message
