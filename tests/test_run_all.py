"""`synclipmae-run` (synclipmae_jax/tools/from_videos.py, issue 31): a folder of videos to a
trained, evaluated, exported model and its report, each stage resumed by a rerun.

The end-to-end tests share one run of the command on the HDTF clips (the module's `first_run`,
about a minute of CPU: the tiny model's 4 steps on 2 s clips of whole frames; what the stages
do, not what they learn) and run in file order: the reruns, then a failing stage."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from data_pipelines.prepare import process
from fixture_paths import HDTF
from synclipmae_jax import config_files
from synclipmae_jax.tools import from_videos

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/demo.py:tiny"
# The command line's values, given once: to the command and to `make_settings` (in-process runs).
VALUES = {"detector": "whole_frame", "crop_margin": 0.0, "min_seconds": 2.0, "max_seconds": 2.0,
          "workers": 0, "seed": 0}
ARGS = [f"--config={CONFIG}"] + [f"--{k}={v}" for k, v in VALUES.items()]
STATUS = re.compile(r"^stage (\w+): (running|resuming|redoing|done at|skipped)", re.MULTILINE)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXPORTS = all(importlib.util.find_spec(m) for m in from_videos.EXPORT_NEEDS)


def synclipmae_run(workdir) -> dict[str, str]:
  """Runs the console script's entry point on the HDTF clips; {stage: what the run did}."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  result = subprocess.run(
      [sys.executable, "-c", "import sys; from synclipmae_jax.tools.from_videos import run; "
       "sys.argv[0] = 'synclipmae-run'; run()", HDTF, f"--workdir={workdir}", *ARGS],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
  assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
  return dict(STATUS.findall(result.stdout))


def marker_times(workdir) -> dict[str, float]:
  return {s: os.path.getmtime(from_videos.marker_path(str(workdir), s)) for s in from_videos.STAGES
          if os.path.exists(from_videos.marker_path(str(workdir), s))}


def expected(what: str) -> dict[str, str]:
  """Every stage did `what`, but the export is skipped where torch is not installed."""
  return {s: "skipped" if s == "export" and not EXPORTS else what for s in from_videos.STAGES}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
  """(workdir, {stage: what the first run did}, the stages' marker times after it)."""
  work = tmp_path_factory.mktemp("synclipmae_run") / "run"
  did = synclipmae_run(work)
  return work, did, marker_times(work)


@pytest.mark.slow
def test_every_stage_writes_its_outputs(first_run):
  work, did, _ = first_run
  assert did == expected("running")
  for stage in from_videos.STAGES:
    if did[stage] == "running":
      assert json.loads((work / "stages" / f"{stage}.json").read_text())["state"] == "done"
      for output in from_videos.stage_outputs(str(work), stage):
        assert (work / output).exists(), output
  prepared = work / "prepared"
  summary = json.loads((prepared / "summary.json").read_text())
  assert summary["identities"]["train"] == summary["identities"]["validation"] == 1  # one held out
  assert (prepared / "rejects.tsv").read_text().startswith("path\t")  # the rejects report
  assert sorted(p.name for p in prepared.glob("*.array_record")) == [
      "train-00000-of-00001.array_record", "validation-00000-of-00001.array_record"]
  manifest = [json.loads(line) for line in (prepared / "manifest.jsonl").read_text().splitlines()]
  held_out = {r["speaker"] for r in manifest if r["split"] == "validation"}
  trained = {r["speaker"] for r in manifest if r["split"] == "train"}
  assert held_out and trained and not held_out & trained
  sync = json.loads((work / "sync_eval" / "sync_eval.json").read_text())
  assert sync["eval_shards"] == [str(prepared / "validation-00000-of-00001.array_record")]
  assert sync["step"] == json.loads((work / "train" / "metrics.json").read_text())["step"]
  if EXPORTS:
    assert {"model.safetensors", "config.json"} <= {p.name for p in (work / "export").iterdir()}


@pytest.mark.slow
def test_the_report_links_its_figures_and_names_what_was_not_run(first_run):
  work, _, _ = first_run
  report = (work / "report.md").read_text()
  links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
  assert {os.path.basename(p) for p in links} == {
      "data.png", "loss.png", "sync_curve.png", "sync_accuracy.png", "lag_curves.png",
      "reconstructions.png"}
  for link in links:
    assert (work / link).read_bytes().startswith(PNG_SIGNATURE), link
  assert "| chance |" in report and "this run (held-out speakers)" in report
  assert "rejects.tsv" in report and "## Not run" in report and "Linear probes" in report
  if EXPORTS:
    assert f"`{work / 'export'}`" in report and "`model.safetensors`" in report


@pytest.mark.slow
def test_a_second_run_does_no_work_and_a_removed_output_redoes_only_its_stage(first_run):
  work, _, times = first_run
  report_time = os.path.getmtime(work / "report.md")
  assert synclipmae_run(work) == expected("done at")
  assert marker_times(work) == times and os.path.getmtime(work / "report.md") == report_time

  # The held-out evaluation's report removed: that stage again, and the report made from it.
  (work / "sync_eval" / "sync_eval.json").unlink()
  again = synclipmae_run(work)
  redone = {"sync_eval", "report"}
  assert {s for s, what in again.items() if what == "redoing"} == redone
  assert all(again[s] in ("done at", "skipped") for s in from_videos.STAGES if s not in redone)
  after = marker_times(work)
  assert all(after[s] == times[s] for s in times if s not in redone)
  assert all(after[s] > times[s] for s in redone)
  assert (work / "sync_eval" / "sync_eval.json").exists()


@pytest.mark.slow
def test_a_failing_stage_is_named_and_the_stages_before_it_are_kept(first_run, monkeypatch):
  work, _, _ = first_run
  before = marker_times(work)
  (work / "sync_eval" / "sync_eval.json").unlink()

  def fails(self):
    raise OSError("no space left on device")

  monkeypatch.setattr(from_videos.Pipeline, "sync_eval", fails)
  config = config_files.load(os.path.join(REPO, CONFIG))
  settings = from_videos.make_settings(HDTF, str(work), config, config_given=True,
                                       config_name=CONFIG, **VALUES)
  with pytest.raises(from_videos.StageFailed,
                     match=r"stage sync_eval failed: OSError: no space left on device\n.*keeps the "
                           r"stages done \(prepare, train\)"):
    from_videos.Pipeline(settings, log=lambda _: None).run()
  after = marker_times(work)
  for stage in ("prepare", "train"):  # untouched, their outputs in place
    assert after[stage] == before[stage]
    assert all((work / p).exists() for p in from_videos.stage_outputs(str(work), stage))
  assert from_videos.read_marker(str(work), "sync_eval")["state"] == "started"  # a rerun redoes it
  assert after["report"] == before["report"]  # the stages after it did not run


def _settings(videos, workdir, config_given=True, **changes) -> from_videos.Settings:
  config = config_files.load(os.path.join(REPO, CONFIG))
  return from_videos.Settings(videos=str(videos), workdir=str(workdir), config=config,
                              config_given=config_given, config_name=CONFIG,
                              options=process.PrepareOptions(image_size=16, **changes),
                              detector="whole_frame")


def test_a_failing_preparation_is_named_and_a_rerun_with_other_options_is_refused(tmp_path):
  videos = tmp_path / "videos"
  videos.mkdir()
  for name in ("a.mp4", "b.mp4"):  # two speakers, no video: every file rejected
    (videos / name).write_bytes(b"")
  work = tmp_path / "run"
  with pytest.raises(from_videos.StageFailed, match=r"stage prepare failed: .*no clip kept"):
    from_videos.Pipeline(_settings(videos, work), log=lambda _: None).run()
  marker = json.loads((work / "stages" / "prepare.json").read_text())
  assert marker["state"] == "started"  # not done: a rerun resumes it
  assert (work / "prepared" / "rejects.tsv").read_text().count("empty_file") == 2
  assert not (work / "stages" / "train.json").exists()
  with pytest.raises(from_videos.StageFailed, match=r"other parameters \(options.margin\)"):
    from_videos.Pipeline(_settings(videos, work, margin=0.5), log=lambda _: None).run()


def test_held_out_speakers(tmp_path):
  def rows(names):
    return [{"path": str(tmp_path / n)} for n in names]

  with pytest.raises(ValueError, match="1 speaker"):
    from_videos.held_out_rows(rows(["alice/1.mp4", "alice/2.mp4"]), str(tmp_path), 0)
  two = from_videos.held_out_rows(rows(["alice/1.mp4", "alice/2.mp4", "bob.mp4"]), str(tmp_path), 0)
  splits = {r["path"]: r["split"] for r in two}
  assert splits[str(tmp_path / "alice/1.mp4")] == splits[str(tmp_path / "alice/2.mp4")]
  assert sorted(splits.values()).count("validation") in (1, 2) and len(set(splits.values())) == 2
  many = rows([f"s{i:02d}.mp4" for i in range(60)])

  def held_out(seed):
    return [r["path"] for r in from_videos.held_out_rows(many, str(tmp_path), seed)
            if r["split"] == "validation"]

  assert len(held_out(0)) == round(from_videos.HELD_OUT_FRACTION * 60)
  assert held_out(0) == held_out(0) != held_out(1)  # the same speakers on every run of a seed


def test_more_video_than_the_default_config_is_for_asks_for_a_config(tmp_path):
  limit = config_files.module_of(from_videos.DEFAULT_CONFIG).MAX_HOURS
  pipeline = from_videos.Pipeline(_settings(tmp_path, tmp_path, config_given=False))
  (tmp_path / "prepared").mkdir()
  (tmp_path / "prepared" / "summary.json").write_text(json.dumps({"hours_kept": 1.5 * limit}))
  with pytest.raises(ValueError, match=r"more than the .* give a --config"):
    pipeline.train()
  assert not (tmp_path / "train").exists()
