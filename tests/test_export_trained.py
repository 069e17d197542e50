"""A trained demo checkpoint exported to PyTorch: the sync metrics (paper 5) computed from PyTorch
tokens equal the JAX evaluator's; `synclipmae-export` exports a workdir's checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from synclipmae_jax import checkpointing, input_pipeline
from synclipmae_jax.evaluators import sync
from synclipmae_jax.models import audio_encoder, synclipmae
from synclipmae_jax.weights import param_tree
from synclipmae_torch import export, layout
from tests import sync_decisions

torch = pytest.importorskip("torch")
from synclipmae_torch import tokens  # pylint: disable=wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained(tiny_run):
  """(config, workdir, the run's final metrics): the tiny demo trained 4 steps on 8 fake
  devices (conftest.tiny_run), checkpoints and evaluations at steps 2 and 4."""
  return tiny_run


def read_checkpoint(workdir: str, step: int | None = None) -> tuple[int, dict, dict]:
  """(step, params, frozen) of a workdir's checkpoint, read with orbax directly (the same as
  `checkpointing.load` gives, without depending on it)."""
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints"), item_names=("state", "iter")) as manager:
    step = manager.latest_step() if step is None else step
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
  return step, state["params"], state["frozen"]


class PyTorchTokensEvaluator(sync.Evaluator):
  """The JAX evaluator's protocol (clips, true lags, windows, pools) on PyTorch tokens."""

  def __init__(self, tokenizer: tokens.SyncTokenizer, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.tokenizer = tokenizer

  def prompt_tokens(self, params, clip, start, stop):
    del params  # the tokenizer holds the exported parameters
    with torch.no_grad():
      prompts = self.tokenizer.prompt_tokens(clip["frames"][start:stop], clip["face_boxes"][start:stop],
                                             clip["mouth_boxes"][start:stop])
    return np.stack([prompts[name].numpy() for name in ("identity", "vocal", "ambient")], axis=1)

  def audio_tokens(self, params, frozen, clip, start, stop):
    del params, frozen
    with torch.no_grad():
      return self.tokenizer.audio_tokens(clip["audio"], start, stop).numpy()


def test_sync_metrics_from_pytorch_tokens_equal_the_jax_ones(trained, tmp_path):
  config, workdir, jax_metrics = trained
  step, params, frozen = read_checkpoint(workdir)
  assert step == config.num_train_steps
  folder = str(tmp_path / "export")
  export.export(config, params, folder, step=step)
  tokenizer = tokens.SyncTokenizer.from_pretrained(folder)
  args = (config.evals.sync, config)
  kwargs = dict(model=synclipmae.build(config.model), audio_encoder=audio_encoder.build(config.model.audio),
                eval_paths=input_pipeline.dataset_paths(config)[1])
  jax_evaluator = sync.Evaluator(*args, **kwargs)
  torch_evaluator = PyTorchTokensEvaluator(tokenizer, *args, **kwargs)
  jax_tokens, torch_tokens = jax_evaluator.tokens(params, frozen), torch_evaluator.tokens(None, None)
  n = len(jax_evaluator.clips[0]["frames"])
  for name in ("aligned_video", "aligned_audio"):
    assert torch_tokens[name][0].shape == jax_tokens[name][0].shape == (n, 32)
    np.testing.assert_allclose(torch_tokens[name][0], jax_tokens[name][0], atol=1e-4)

  ours, _ = torch_evaluator.metrics(torch_tokens)
  expected, _ = jax_evaluator.metrics(jax_tokens)
  print(f"sync metrics from PyTorch tokens {ours}")
  assert set(ours) == set(expected) == {k for k in jax_metrics if k.startswith(("sync/", "factors/"))}
  assert len(ours) == 2 * len(config.evals.sync.windows) + len(config.evals.sync.ks) + 2
  # The metrics count decisions (argmins, ranks): equal but where a decision is a near tie
  # within the two token sets' rounding (tests/sync_decisions.py).
  allowed = sync_decisions.allowed_differences(jax_tokens, torch_tokens, config.evals.sync,
                                               jax_evaluator.DISTANCE)
  for k, v in expected.items():
    if k.startswith("sync/"):
      assert abs(ours[k] - v) <= allowed[k] + 1e-9, (k, ours[k], v, allowed[k])
    else:  # mean |correlation| of the prompts: continuous in the tokens
      assert ours[k] == pytest.approx(v, abs=1e-4), k


def test_export_command_writes_any_step_of_a_workdir(trained, tmp_path):
  """`synclipmae-export` reads the checkpoint through `checkpointing.load` (latest or --step)."""
  config, workdir, _ = trained
  for step, dtype in ((None, "float32"), (2, "bfloat16")):
    out = str(tmp_path / f"export-{step}")
    command = [sys.executable, "-m", "synclipmae_torch.export_cli", f"--workdir={workdir}",
               f"--out={out}", f"--dtype={dtype}"] + ([f"--step={step}"] if step else [])
    subprocess.run(command, check=True, cwd=ROOT, capture_output=True)
    restored = checkpointing.load(workdir, step=step)
    expected_step, params, _ = read_checkpoint(workdir, step)
    assert restored.step == expected_step
    with open(os.path.join(out, layout.CONFIG_FILE)) as f:
      saved = json.load(f)
    assert (saved["step"], saved["dtype"]) == (expected_step, dtype)
    back = param_tree.flatten(export.import_params(out, config))
    for path, value in param_tree.flatten(params).items():
      np.testing.assert_array_equal(
          back[path], np.asarray(value).astype(export.NUMPY_DTYPES[dtype]).astype(np.float32),
          err_msg=path)
