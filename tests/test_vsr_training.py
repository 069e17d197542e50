"""Lip reading trained by the trainer (`config.task="vsr"`, configs/vsr.py:tiny) on the frozen
encoder of the shared tiny run: the run, its evaluator (WER / CER), resume == uninterrupted,
sharded steps == single-device steps, and bad configs."""

import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import vsr as vsr_config
from synclipmae_jax import sharding, train
from synclipmae_jax.evaluators import vsr as vsr_evaluator
from synclipmae_jax.tasks import vsr as vsr_task
from synclipmae_jax.tools import downstream_table, vsr_eval
from tests import tiny_training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.slow


def _config(encoder_workdir, **mesh):
  config = vsr_config.get_config("tiny")
  config.encoder.workdir = encoder_workdir
  config.mesh.update(mesh or dict(data=2, fsdp=2, tensor=2))
  return config


def _params(workdir, step):
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  with ocp.StandardCheckpointer() as checkpointer:
    return jax.device_get(checkpointer.restore(path)["params"])


@pytest.fixture(scope="module")
def runs(tiny_run, tmp_path_factory):
  _, encoder, _ = tiny_run
  root = tmp_path_factory.mktemp("vsr")
  straight, resumed = str(root / "straight"), str(root / "resumed")
  metrics = train.train_and_evaluate(_config(encoder), straight)
  shutil.copytree(straight, resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", "4"))
  train.train_and_evaluate(_config(encoder), resumed)
  return metrics, straight, resumed


def test_the_trainer_trains_the_head_and_evaluates_wer_and_cer(runs):
  metrics, straight, _ = runs
  for name in ("loss/total", "loss/ctc", "loss/attention", "vsr/wer", "vsr/cer"):
    assert np.isfinite(metrics[name]), name
  assert metrics["vsr/wer"] >= 0 and metrics["vsr/cer"] >= 0
  assert os.path.isfile(os.path.join(straight, vsr_task.UNITS_FILE))
  assert sorted(int(s) for s in os.listdir(os.path.join(straight, "checkpoints")) if s.isdigit()) == [2, 4]


def test_resumed_run_reproduces_the_uninterrupted_one(runs):
  _, straight, resumed = runs
  for a, b in zip(jax.tree.leaves(_params(straight, 4)), jax.tree.leaves(_params(resumed, 4))):
    np.testing.assert_array_equal(a, b)


def test_sharded_steps_equal_single_device_steps(tiny_run):
  _, encoder, _ = tiny_run
  states, rng = {}, np.random.default_rng(0)
  config = _config(encoder)
  b, t, l = config.data.global_batch_size, config.data.max_frames, config.data.max_units
  batches = [{"features": rng.normal(size=(b, t, vsr_task.feature_dim(config))).astype(np.float32),
              "frame_mask": np.arange(t)[None] < rng.integers(t // 2, t + 1, (b, 1)),
              "units": rng.integers(4, config.units.vocab_size, (b, l)).astype(np.int32),
              "unit_mask": np.arange(l)[None] < rng.integers(1, l + 1, (b, 1))} for _ in range(3)]
  for name, mesh_shape, devices in (("one", dict(data=1, fsdp=1, tensor=1), jax.devices()[:1]),
                                    ("eight", dict(data=2, fsdp=2, tensor=2), jax.devices())):
    config = _config(encoder, **mesh_shape)
    mesh = sharding.make_mesh(config.mesh, devices)
    exp = vsr_task.build(config, mesh)
    with exp.scope():
      state = exp.init(jax.random.PRNGKey(0))
      for batch in batches:
        state, metrics = exp.train_step(state, sharding.global_batch(batch, mesh))
    states[name] = (jax.device_get(state.params), float(metrics["loss/total"]),
                    jax.device_get(tiny_training.first_moment(state.opt_state)))
  assert states["one"][1] == pytest.approx(states["eight"][1], rel=1e-5)
  tiny_training.assert_same_training(states["one"][0], states["eight"][0], states["one"][2],
                                     states["eight"][2], tiny_training.learning_rates(config, 3))


def test_error_rates_are_jiwers_on_constructed_strings():
  # One substitution (b -> x) and one deletion (e) against six reference words.
  rates = vsr_evaluator.error_rates(["a b c d e f", "g h"], ["a x c d f", "g h"])
  assert rates["wer"] == pytest.approx(100 * 2 / 8)
  # Characters: "a b c d e f" -> "a x c d f" is one substitution and two deletions ("e ").
  assert rates["cer"] == pytest.approx(100 * 3 / (11 + 3))


def test_bad_configs_name_their_fields(tmp_path):
  config = vsr_config.get_config("tiny")
  with pytest.raises(ValueError, match="encoder.workdir is required"):
    vsr_task.validate(config, num_devices=8, process_count=1)
  config.encoder.workdir = str(tmp_path)
  config.loss.ctc_weight = 1.5
  config.evals.vsr.beam = 0
  with pytest.raises(ValueError) as e:
    vsr_task.validate(config, num_devices=8, process_count=1)
  for field in ("is not a training workdir", "loss.ctc_weight=1.5", "evals.vsr.beam=0"):
    assert field in str(e.value)


def test_vsr_eval_reproduces_the_runs_evaluation_and_decodes_the_test_split(runs):
  metrics, straight, _ = runs
  again = vsr_eval.evaluate(straight, options={"split": "validation"})
  assert again["step"] == 4
  for name in ("vsr/wer", "vsr/cer"):
    assert again["metrics"][name] == pytest.approx(metrics[name])
  test = vsr_eval.evaluate(straight, options={"beam": 1, "ctc_weight": 0.0})
  assert test["options"]["split"] == "test" and len(test["utterances"]) == 3  # 1 speaker x 3 clips
  for row in test["utterances"]:
    assert row["reference"] and isinstance(row["hypothesis"], str)
  assert "| clip | reference | hypothesis |" in vsr_eval.markdown(test)
  with pytest.raises(ValueError, match="split='dev' must be one of"):
    vsr_eval.evaluate(straight, options={"split": "dev"})


def test_downstream_table_has_a_row_per_encoder_with_probes_and_lip_reading(tiny_run, runs, tmp_path):
  _, encoder, _ = tiny_run
  # The heads are taken as trained (the table keeps finished runs): copies of the tiny head, so
  # that this test exercises the table, not three more trainings.
  for name in ("pretrained", "random_init", "plain_MAE"):
    shutil.copytree(runs[1], tmp_path / f"vsr_{name}")
  probe = {"synthetic": {"num_identities": 5, "clips_per_identity": 3, "clip_frames": 24, "seed": 0},
           "frames": [8], "steps": 10, "learning_rates": [0.01], "weight_decays": [0.0]}
  report = downstream_table.table(encoder, str(tmp_path), baseline_workdir=encoder,
                                  vsr_config=os.path.join(REPO, "configs/vsr.py:tiny"),
                                  probe_options=probe)
  assert [r["name"] for r in report["rows"]] == ["pretrained", "random init", "plain MAE"]
  for row in report["rows"]:
    assert set(row["probe"]) >= {"probe/emotion_acc@8", "probe/actions_auc@8"}
    assert np.isfinite(row["vsr"]["vsr/wer"]) and os.path.isdir(row["vsr_workdir"])
  with open(tmp_path / downstream_table.REPORT_MD) as f:
    lines = f.read().splitlines()
  assert lines[0] == ("Probes scored per video: 8 frames sampled uniformly, frame predictions "
                      "averaged; feature: motion.")
  assert lines[2].startswith("| encoder | emotion ACC @8 |") and lines[2].endswith("| VSR WER | VSR CER |")
  assert len(lines) == 7
