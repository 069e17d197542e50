"""The read API: a run trained on 8 devices (data=2, fsdp=2, tensor=2) read back by a fresh
one-device process gives the tokens the trainer's own evaluator computes; its config travels
with the workdir; bad requests are clear errors."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import demo
from synclipmae_jax import checkpointing, experiment, input_pipeline, sharding
from synclipmae_jax.evaluators import common as evaluators
from tests import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run in a fresh process with one CPU device: the read API's tokens of held-out clip 0.
READER = """
import sys
import numpy as np
from synclipmae_jax import checkpointing, input_pipeline
from synclipmae_jax.evaluators import common as evaluators
from synclipmae_jax.models import audio_encoder, synclipmae
import jax
assert jax.device_count() == 1
restored = checkpointing.load(sys.argv[1])
config = restored.config
evaluator = evaluators.from_config(
    config, model=synclipmae.build(config.model), audio_encoder=audio_encoder.build(config.model.audio),
    eval_paths=input_pipeline.dataset_paths(config)[1])["sync"]
clip = evaluator.clips[0]
n = len(clip["frames"])
np.savez(sys.argv[2], step=restored.step, vocal=evaluator.video_tokens(restored.params, clip, 0, n),
         audio=evaluator.audio_tokens(restored.params, restored.frozen, clip, 0, n))
"""


@pytest.fixture(scope="module")
def trained(tiny_run):
  """The tiny config trained 4 steps on 8 fake devices, checkpoints at steps 2 and 4."""
  config, workdir, _ = tiny_run
  return config, workdir


def test_workdir_describes_itself(trained):
  config, workdir = trained
  assert checkpointing.steps(workdir) == [2, 4]
  assert checkpointing.read_config(workdir).to_dict() == config.to_dict()


def test_fresh_one_device_process_reads_the_tokens_the_trainer_evaluates(trained, tmp_path):
  config, workdir = trained
  mesh = sharding.make_mesh(config.mesh)
  exp = experiment.build(config, mesh)
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"), item_names=("state", "iter"))
  state = manager.restore(4, args=ocp.args.Composite(state=ocp.args.StandardRestore(exp.abstract_state))).state
  manager.close()
  evaluator = evaluators.from_config(config, model=exp.model, audio_encoder=exp.audio_encoder,
                                     eval_paths=input_pipeline.dataset_paths(config)[1])["sync"]
  clip = evaluator.clips[0]
  n = len(clip["frames"])
  with exp.scope():
    vocal = evaluator.video_tokens(state.params, clip, 0, n)
    audio = evaluator.audio_tokens(state.params, state.frozen, clip, 0, n)
  out = str(tmp_path / "tokens.npz")
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags.with_devices(1),
             PYTHONPATH=REPO)
  result = subprocess.run([sys.executable, "-c", READER, workdir, out], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  read = np.load(out)
  assert int(read["step"]) == 4
  assert np.abs(vocal).mean() > 0.01 and np.abs(audio).mean() > 0.01
  np.testing.assert_allclose(read["vocal"], vocal, atol=2e-5, rtol=1e-4)
  np.testing.assert_allclose(read["audio"], audio, atol=2e-5, rtol=1e-4)


def test_any_step_loads_without_optimizer_state(trained):
  _, workdir = trained
  two, four = checkpointing.load(workdir, 2), checkpointing.load(workdir)
  assert (two.step, four.step) == (2, 4)
  assert two.frozen == {} and four.frozen == {}  # the tiny config's mel front end has none
  leaves = jax.tree.leaves(four.params)
  assert all(leaf.sharding.device_set == {jax.devices()[0]} for leaf in leaves)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(two.params), leaves))


def test_bad_requests_are_clear_errors(trained, tmp_path):
  _, workdir = trained
  with pytest.raises(ValueError, match=r"has no checkpoint of step 3 \(it has \[2, 4\]\)"):
    checkpointing.load(workdir, 3)
  with pytest.raises(FileNotFoundError, match="is not a training workdir"):
    checkpointing.load(str(tmp_path))
  os.makedirs(tmp_path / "empty")
  with open(tmp_path / "empty" / checkpointing.CONFIG_FILE, "w") as f:
    json.dump(demo.get_config("tiny").to_dict(), f)
  with pytest.raises(FileNotFoundError, match="no checkpoints"):
    checkpointing.load(str(tmp_path / "empty"))
