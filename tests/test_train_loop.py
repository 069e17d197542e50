"""The training loop end to end (slow): deferred metrics log and train what a per-step loop does,
with no collective of ours in the step loop (preemption through JAX's coordination service);
a non-finite loss stops the run naming its step, and is never checkpointed."""

import json
import os

import jax
import numpy as np
import pytest

from jax.experimental import multihost_utils

from synclipmae_jax import progress, train
from tests import tiny_training


@pytest.mark.slow
def test_deferred_metrics_loop_logs_and_trains_what_a_per_step_loop_does(data_dir, tmp_path,
                                                                          monkeypatch):
  config = tiny_training.tiny_config(
      data_dir, num_train_steps=6, log_every_steps=3, checkpoint_every_steps=6, image_every_steps=6,
      **{"evals.sync.every_steps": 6})
  config.mesh.update(data=2, fsdp=2, tensor=2)
  workdir = str(tmp_path / "deferred")
  # The loop as on a pod (JAX's coordination service up): it asks the service's preemption sync
  # point after every step, and calls no collective of ours (each would make every host wait).
  asked = []
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
  monkeypatch.setattr(multihost_utils, "reached_preemption_sync_point",
                      lambda step: asked.append(step) or False)
  for collective in ("process_allgather", "sync_global_devices", "broadcast_one_to_all"):
    monkeypatch.setattr(multihost_utils, collective, lambda *a, _name=collective, **k: pytest.fail(
        f"multihost_utils.{_name} called in the training loop"))
  train.train_and_evaluate(config, workdir)
  monkeypatch.undo()
  assert sorted(set(asked)) == list(range(1, 7))  # every step (orbax's save asks again)
  params, history = tiny_training.per_step_reference(config, 6)
  logged = json.load(open(os.path.join(workdir, "metrics.json")))
  for name in history[0]:  # the last log line: the means of steps 4..6, summed in float64
    assert logged[name] == sum(float(m[name]) for m in history[3:]) / 3, name
  step, saved = tiny_training.final_params(workdir)
  assert step == 6
  for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)

@pytest.mark.slow
def test_non_finite_loss_stops_naming_its_step_without_checkpointing_it(data_dir, tmp_path):
  # Metrics are fetched every 4 steps and before every checkpoint (every 2 steps).
  config = tiny_training.tiny_config(
      data_dir, num_train_steps=8, checkpoint_every_steps=2, log_every_steps=4, image_every_steps=8,
      **{"evals.sync.every_steps": 8, "optim.learning_rate": 1e30, "optim.warmup_steps": 2,
         "optim.grad_clip_norm": 1e30})
  _, history = tiny_training.per_step_reference(config, 8)
  first_bad = next(i + 1 for i, m in enumerate(history) if not np.isfinite(m["loss/total"]))
  workdir = str(tmp_path / "nan")
  with pytest.raises(progress.NonFiniteLossError, match=rf"non-finite \w+ .* at step {first_bad};"):
    train.train_and_evaluate(config, workdir)
  saved = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  assert all(s <= first_bad - 1 for s in saved), (saved, first_bad)
  if saved:
    _, params = tiny_training.final_params(workdir)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
