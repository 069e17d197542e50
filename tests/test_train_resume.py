"""Training end to end (slow): SIGTERM, then a resume, gives the uninterrupted run's parameters.
(Its own file so that the slow training tests spread over the test workers.)"""

import json
import os
import signal
import threading
import time

import jax
import numpy as np
import pytest

from synclipmae_jax import checkpointing, train
from tests import tiny_training


@pytest.mark.slow
def test_sigterm_then_resume_reproduces_uninterrupted_run(data_dir, tmp_path):
  config = tiny_training.tiny_config(
      data_dir, num_train_steps=8, checkpoint_every_steps=2, image_every_steps=8, log_every_steps=1,
      **{"evals.sync.every_steps": 8})
  config.mesh.update(data=2, fsdp=2, tensor=2)
  straight = str(tmp_path / "straight")
  train.train_and_evaluate(config, straight)

  interrupted = str(tmp_path / "interrupted")

  def send_sigterm_after_first_checkpoint():
    ckpt_dir = os.path.join(interrupted, "checkpoints")
    while not (os.path.isdir(ckpt_dir) and any(d.isdigit() for d in os.listdir(ckpt_dir))):
      time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)

  threading.Thread(target=send_sigterm_after_first_checkpoint, daemon=True).start()
  with pytest.raises(checkpointing.Preempted) as stopped:
    train.train_and_evaluate(config, interrupted)
  stopped_at, _ = tiny_training.final_params(interrupted)
  assert 2 <= stopped_at < 8 and stopped.value.step == stopped_at, (stopped_at, stopped.value)
  assert json.load(open(os.path.join(interrupted, "metrics.json")))["step"] == stopped_at
  train.train_and_evaluate(config, interrupted)  # resumes from the checkpoint
  step_a, params_a = tiny_training.final_params(straight)
  step_b, params_b = tiny_training.final_params(interrupted)
  assert step_a == step_b == 8
  for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
    np.testing.assert_array_equal(a, b)
