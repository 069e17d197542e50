"""A trained demo checkpoint exported to PyTorch: the sync metrics (paper 5) computed from PyTorch
tokens equal the JAX evaluator's; `synclipmae-export` exports a workdir's checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from data_pipelines import face_weights
from synclipmae_jax import checkpointing, input_pipeline, masking
from synclipmae_jax.evaluators import sync
from synclipmae_jax.models import audio_encoder, synclipmae
from synclipmae_jax.weights import param_tree
from synclipmae_torch import export, layout
from tests import cell_boxes, sync_decisions

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


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
  """(params, frozen, the JAX sync evaluator, the same on PyTorch tokens) of the tiny run's final
  checkpoint, exported to PyTorch."""
  config, workdir, _ = trained
  step, params, frozen = read_checkpoint(workdir)
  assert step == config.num_train_steps
  folder = str(tmp_path_factory.mktemp("exported") / "export")
  export.export(config, params, folder, step=step)
  tokenizer = tokens.SyncTokenizer.from_pretrained(folder)
  args = (config.evals.sync, config)
  kwargs = dict(model=synclipmae.build(config.model), audio_encoder=audio_encoder.build(config.model.audio),
                eval_paths=input_pipeline.dataset_paths(config)[1])
  return (params, frozen, sync.Evaluator(*args, **kwargs),
          PyTorchTokensEvaluator(tokenizer, *args, **kwargs))


def test_sync_metrics_from_pytorch_tokens_equal_the_jax_ones(trained, exported):
  config, _, jax_metrics = trained
  params, frozen, jax_evaluator, torch_evaluator = exported
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


def test_exported_tokens_equal_the_jax_ones_where_face_weights_tie(trained, exported):
  """Boxes on patch-cell edges, so that the evaluation view's cut falls among equal face weights
  (issue 29: the demo's exported tokens were off on such a frame): the exported model keeps the
  JAX evaluator's patches, and its prompt tokens are the JAX ones within 1e-5 on every frame."""
  config, _, _ = trained
  params, _, jax_evaluator, torch_evaluator = exported
  assert config.evals.sync.view == "face"
  grid = config.model.image_size // config.model.patch_size
  k = masking.num_visible(grid * grid, config.masking.mask_ratio)
  clip = jax_evaluator.clips[0]
  n = len(clip["frames"])
  face, mouth = cell_boxes.cell_edge_boxes(np.random.default_rng(0), n, grid)
  clip = dict(clip, face_boxes=face, mouth_boxes=mouth)
  ranked = -np.sort(-face_weights.patch_weights(face, mouth, grid, **config.masking.face_weights))
  assert (ranked[:, k - 1] == ranked[:, k]).sum() >= n // 4  # the premise: ties at the cut
  jax_keep = jax.jit(lambda f, m: masking.top_weight_keep(face_weights.patch_weights(
      f, m, grid, **config.masking.face_weights, xp=jnp), k))(face, mouth)
  _, torch_keep = torch_evaluator.tokenizer.view(clip["frames"], face, mouth)
  np.testing.assert_array_equal(torch_keep.numpy(), np.asarray(jax_keep))
  ours = torch_evaluator.prompt_tokens(None, clip, 0, n)
  expected = jax_evaluator.prompt_tokens(params, clip, 0, n)
  assert ours.shape == expected.shape == (n, 3, 32)
  np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)


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
