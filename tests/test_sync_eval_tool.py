"""`synclipmae-sync-eval` (synclipmae_jax/tools/sync_eval.py) on the shared tiny trained workdir:
the command reproduces the figures the run logged at its last step and writes every output."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from synclipmae_jax.evaluators import common as evaluators
from synclipmae_jax.tools import sync_eval
from tests import sync_decisions, xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def command_output(tiny_run, tmp_path_factory):
  """The command run in a fresh one-device process on the tiny run's latest checkpoint."""
  _, workdir, _ = tiny_run
  out = str(tmp_path_factory.mktemp("sync_eval"))
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags.with_devices(1),
             PYTHONPATH=REPO)
  result = subprocess.run([sys.executable, "-m", "synclipmae_jax.tools.sync_eval", f"--workdir={workdir}",
                           f"--out={out}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  return out, result.stdout


def test_command_reproduces_the_runs_own_evaluation(tiny_run, command_output):
  _, _, final = tiny_run
  out, stdout = command_output
  with open(os.path.join(out, sync_eval.REPORT_JSON)) as f:
    report = json.load(f)
  assert report["step"] == 4
  expected = {k: v for k, v in final.items() if k.startswith(("sync/", "factors/"))}
  assert set(report["metrics"]) == set(expected)
  # One device here, the training mesh's 8 there: the counted decisions are equal but for near
  # ties within the two programs' rounding (tests/sync_decisions.py); the factors are continuous.
  allowed = sync_decisions.logged_against_one_device(tiny_run[1])
  for k, v in expected.items():
    assert report["metrics"][k] == pytest.approx(v, abs=allowed.get(k, 0.0) + 1e-3), k
  assert "| K | Acc (%) | Offset (frames) |" in stdout


def test_every_trial_has_its_curve_estimate_confidence_and_milliseconds(tiny_run, command_output):
  config, _, _ = tiny_run
  out, _ = command_output
  with open(os.path.join(out, sync_eval.REPORT_JSON)) as f:
    report = json.load(f)
  entry = config.evals.sync
  assert len(report["trials"]) == entry.num_clips * entry.trials_per_clip
  for t in report["trials"]:
    curve = np.asarray(t["distance"])
    assert t["lags"] == list(range(-entry.max_lag, entry.max_lag + 1))
    assert t["estimate"] == t["lags"][int(np.argmin(curve))]
    assert t["confidence"] == pytest.approx(np.median(curve) - curve.min())
    assert t["estimate_ms"] == 40.0 * t["estimate"] and t["true_lag_ms"] == 40.0 * t["true_lag"]
    assert abs(t["true_lag"]) <= entry.max_true_lag
    assert {f"acc_k{k}" for k in entry.windows} <= set(t)


def test_markdown_plots_and_tensorboard_are_written(command_output):
  out, _ = command_output
  with open(os.path.join(out, sync_eval.REPORT_MD)) as f:
    md = f.read()
  assert "| trial | clip | true lag (frames / ms) |" in md and "| R-precision@k | % |" in md
  for name in (sync_eval.CURVES_PNG, sync_eval.ACCURACY_PNG):
    with Image.open(os.path.join(out, name)) as image:
      assert image.size[0] > 200 and image.size[1] > 150
      assert np.asarray(image.convert("L")).std() > 5  # something is drawn
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))


def test_options_change_the_protocol_and_bad_ones_are_named_before_loading(tiny_run):
  _, workdir, _ = tiny_run
  report = sync_eval.evaluate(workdir, step=2, options={"num_clips": 2, "windows": [1]})
  assert report["step"] == 2 and len(report["trials"]) == 2
  assert set(report["metrics"]) >= {"sync/acc_k1", "sync/offset_k1"} and "sync/acc_k5" not in report["metrics"]
  with pytest.raises(ValueError, match="unknown sync evaluator option 'num_clip'"):
    sync_eval.evaluate(workdir, options={"num_clip": 2})
  with pytest.raises(ValueError, match="view='side' must be one of"):
    sync_eval.evaluate(workdir, options={"view": "side"})
  with pytest.raises(ValueError, match="no shards match"):
    sync_eval.evaluate(workdir, eval_pattern="/nonexistent/*.array_record")
  with pytest.raises(ValueError, match="must be key=value"):
    evaluators.parse_options(["num_clips"])
