"""Sweeps: product / zip / chain expansion, run names, workdirs, flags that parse, the index."""

import json
import os
import sys

from absl import flags as absl_flags
from ml_collections import config_flags
import pytest

from synclipmae_jax.sweeps import expand, hyper, index as index_lib, launch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "configs", "demo.py")


def test_product_is_cartesian_with_the_first_sweep_outermost():
  runs = hyper.product([hyper.sweep("a", [1, 2]), hyper.sweep("b", ["x", "y", "z"])])
  assert runs == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 1, "b": "z"},
                  {"a": 2, "b": "x"}, {"a": 2, "b": "y"}, {"a": 2, "b": "z"}]


def test_zip_pairs_runs_and_nests_in_a_product():
  lr_warmup = hyper.zipit([hyper.sweep("lr", [1e-3, 3e-4]), hyper.sweep("warmup", [100, 50])])
  assert lr_warmup == [{"lr": 1e-3, "warmup": 100}, {"lr": 3e-4, "warmup": 50}]
  runs = hyper.product([hyper.fixed("mode", "m"), lr_warmup])
  assert runs == [{"mode": "m", "lr": 1e-3, "warmup": 100}, {"mode": "m", "lr": 3e-4, "warmup": 50}]
  assert hyper.chainit([hyper.fixed("a", 1), hyper.sweep("b", [2, 3])]) == [{"a": 1}, {"b": 2}, {"b": 3}]


def test_bad_declarations_are_value_errors():
  with pytest.raises(ValueError, match="equal length"):
    hyper.zipit([hyper.sweep("a", [1, 2]), hyper.sweep("b", [1])])
  with pytest.raises(ValueError, match="set twice"):
    hyper.product([hyper.sweep("a", [1]), hyper.sweep("a", [2])])
  with pytest.raises(ValueError, match="no values"):
    hyper.sweep("a", [])


def test_run_names_are_unique_short_and_directory_safe():
  runs = [{"model.decoder.width": 64, "model.encoder_size": "mini", "optim.learning_rate": 1e-3},
          {"model.decoder.width": 128, "model.encoder_size": "S/16", "optim.learning_rate": 3e-4}]
  names = expand.run_names(runs)
  assert names == ["00-width=64+encoder_size=mini+learning_rate=0.001",
                   "01-width=128+encoder_size=S_16+learning_rate=0.0003"]
  clash = expand.run_names([{"model.decoder.width": 1, "data.width": 2}])
  assert clash == ["00-data.width=2+decoder.width=1"]


# A 6-run sweep of the demo config: the machinery's test subject (product and zip).
MASKING_BY_SCHEDULE = """from configs import demo
get_config = demo.get_config
def get_hyper(hyper):
  return hyper.product([
      hyper.sweep("masking.mode", ["two_bypass", "uniform_only", "face_only"]),
      hyper.zipit([hyper.sweep("optim.learning_rate", [1e-3, 3e-4]),
                   hyper.sweep("optim.warmup_steps", [100, 50])]),
  ])
"""


@pytest.fixture(scope="module")
def demo_index(tmp_path_factory):
  root = tmp_path_factory.mktemp("sweep")
  config = root / "masking_by_schedule.py"
  config.write_text(MASKING_BY_SCHEDULE)
  return str(root), expand.expand(f"{config}:tiny", str(root), ["--config.num_train_steps=2"])


def test_demo_ablation_sweep_is_the_papers_ablations(tmp_path):
  index = expand.expand(DEMO, str(tmp_path))
  assert [r["overrides"] for r in index["runs"]] == [
      {"seed": 0}, {"seed": 1}, {"masking.mode": "uniform_only"}, {"masking.mode": "face_only"},
      {"masking.mode": "face_only", "masking.photometric": False},
      {"loss.weights.decorrelation": 0.0}, {"masking.photometric": False},
      {"model.decoder.cross_attention": False}, {"loss.identity_shuffle": False}]


def test_demo_sweep_expands_into_named_runs_with_their_own_workdirs(demo_index):
  root, index = demo_index
  runs = index["runs"]
  assert len(runs) == 6  # 3 masking modes x 2 zipped (learning rate, warmup) schedules
  assert len({r["name"] for r in runs}) == 6
  assert {os.path.dirname(r["workdir"]) for r in runs} == {root}
  assert {r["overrides"]["masking.mode"] for r in runs} == {"two_bypass", "uniform_only", "face_only"}
  assert {(r["overrides"]["optim.learning_rate"], r["overrides"]["optim.warmup_steps"])
          for r in runs} == {(1e-3, 100), (3e-4, 50)}
  assert all(r["flags"][-1] == "--config.num_train_steps=2" for r in runs)


def test_run_flags_parse_back_into_the_overridden_config(demo_index, monkeypatch):
  _, index = demo_index
  run = index["runs"][3]
  values = absl_flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True)
  absl_flags.DEFINE_string("workdir", None, "", flag_values=values)
  argv = ["synclipmae_jax.main", *run["flags"]]
  monkeypatch.setattr(sys, "argv", argv)  # config_flags reads its overrides from sys.argv
  values(argv)
  config = values["config"].value
  for key, value in run["overrides"].items():
    node = config
    for part in key.split("."):
      node = node[part]
    assert node == value, key
  assert config.num_train_steps == 2 and config.model.encoder_size == "tiny"
  assert values["workdir"].value == run["workdir"]


def test_unknown_field_is_rejected_before_anything_runs(tmp_path):
  path = tmp_path / "cfg.py"
  path.write_text(
      "from configs import demo\n"
      "get_config = demo.get_config\n"
      "def get_hyper(hyper):\n  return hyper.sweep('optim.learning_rat', [1.0])\n")
  with pytest.raises(ValueError, match="'optim.learning_rat' is not in the config"):
    expand.expand(str(path), str(tmp_path / "root"))


def test_index_collects_metrics_and_prints_a_table(demo_index, tmp_path):
  _, index = demo_index
  index = json.loads(json.dumps(index))
  for i, run in enumerate(index["runs"][:2]):
    run["workdir"] = str(tmp_path / run["name"])
    os.makedirs(run["workdir"])
    with open(os.path.join(run["workdir"], "metrics.json"), "w") as f:
      json.dump({"step": 4, "loss/total": 1.5 + i, "sync/acc_k15": 1.0, "sync/acc_k1": 10.0 * i,
                 "sync/acc_k5": 2.0, "perf/clips_per_sec": 3.0}, f)
    run["status"] = "done"
  index_lib.write_index(index, str(tmp_path))
  collected = index_lib.collect_metrics(index_lib.read_index(str(tmp_path)))
  table = index_lib.format_table(collected)
  lines = table.splitlines()
  assert lines[0].split() == ["run", "mode", "learning_rate", "warmup_steps", "status", "step",
                              "loss/total", "sync/acc_k1", "sync/acc_k5", "sync/acc_k15"]
  assert lines[2].split()[1:] == ["two_bypass", "0.001", "100", "done", "4", "1.5", "0", "2", "1"]
  assert lines[3].split()[-5:] == ["4", "2.5", "10", "2", "1"]
  assert lines[4].split()[-6:] == ["pending", "-", "-", "-", "-", "-"]
  assert "perf/" not in table
  markdown = index_lib.format_table(collected, markdown=True).splitlines()
  assert markdown[0] == ("| run | mode | learning_rate | warmup_steps | status | step | loss/total "
                         "| sync/acc_k1 | sync/acc_k5 | sync/acc_k15 |")
  assert markdown[1] == "| --- " * 10 + "|"
  assert markdown[2] == "| " + " | ".join(lines[2].split()) + " |"
  assert markdown[4].endswith("| pending | - | - | - | - | - |")


def test_local_runner_runs_each_run_and_records_failures(demo_index, tmp_path, monkeypatch):
  _, index = demo_index
  index = json.loads(json.dumps(index))
  for run in index["runs"]:
    run["workdir"] = str(tmp_path / run["name"])

  def fake_commands(run, launcher, launcher_args, dry_run):  # stands in for a training process
    del launcher, launcher_args, dry_run
    code = ("import json, sys; d = sys.argv[1]; json.dump({'step': 2, 'loss/total': 0.5}, "
            "open(d + '/metrics.json', 'w'))")
    if run["overrides"]["masking.mode"] == "face_only":
      code = "raise SystemExit(3)"
    return [[sys.executable, "-c", code, run["workdir"]]]

  monkeypatch.setattr(launch, "launch_commands", fake_commands)
  launch.run_sweep(index, str(tmp_path))
  saved = index_lib.read_index(str(tmp_path))
  status = {r["overrides"]["masking.mode"]: r["status"] for r in saved["runs"]}
  assert status == {"two_bypass": "done", "uniform_only": "done", "face_only": "failed (exit 3)"}
  assert all(r["metrics"] == {"step": 2, "loss/total": 0.5} for r in saved["runs"]
             if r["status"] == "done")


def test_tpu_launcher_dry_run_trains_every_run_on_the_pod(demo_index, tmp_path, capfd):
  _, index = demo_index
  index = json.loads(json.dumps(index))
  launch.run_sweep(index, str(tmp_path), launcher="tpu", dry_run=True,
                  launcher_args=["--name=pod-a", "--zone=us-east5-a"])
  out = capfd.readouterr().out
  ssh = [l for l in out.splitlines() if "tpu-vm ssh pod-a" in l]
  assert len(ssh) == 6 and all("--worker=all" in l and "--jax_distributed" in l for l in ssh)
  for run in index["runs"]:
    assert any(f"--workdir={run['workdir']}" in l and
               f"--config.masking.mode={run['overrides']['masking.mode']}" in l for l in ssh)
  assert out.count("tpu-vm scp pod-a:") == 6  # each run's metrics.json fetched from worker 0
  assert all(r["status"] == "dry_run" for r in index["runs"])
