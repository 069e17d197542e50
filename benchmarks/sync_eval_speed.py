r"""(i) Throughput of the sync evaluation (evaluators/sync.py) on a trained run's held-out clips,
against the model's forward passes alone, timed in the same process.

  python benchmarks/sync_eval_speed.py --workdir=/tmp/quick --json_out=benchmarks/results/sync_eval_speed.json

The workdir is any trained run (e.g. `python -m synclipmae_jax.main --config=configs/demo.py:quick
--workdir=/tmp/quick`, 2 min). After one untimed evaluation (compilation), the whole evaluation
(`Evaluator.evaluate`: vocal-motion tokens of every clip, audio tokens of every trial's shifted span
and of every aligned clip, the lag sweep over -max_lag..max_lag for K in the config's windows,
R-precision and factor correlations) is timed `--repeats` times, then the same token computations
alone (the jitted model calls the evaluation makes, on the same inputs). Reported: clips and
seconds of video evaluated per second (median), and the share of the evaluation the forward
passes take.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness  # pylint: disable=wrong-import-position
from data_pipelines import schema  # pylint: disable=wrong-import-position
from synclipmae_jax import checkpointing, input_pipeline  # pylint: disable=wrong-import-position
from synclipmae_jax.evaluators import sync as sync_evaluator  # pylint: disable=wrong-import-position


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--json_out", default="benchmarks/results/sync_eval_speed.json")
  a = p.parse_args(argv)
  print(f"load before: {harness.load()}")

  config = checkpointing.read_config(a.workdir)
  restored = checkpointing.load(a.workdir)
  entry = sync_evaluator.entry_of(config)
  evaluator = sync_evaluator.evaluator_of_run(config, entry, input_pipeline.dataset_paths(config)[1])
  params, frozen = restored.params, restored.frozen
  start = time.perf_counter()
  metrics, _ = evaluator.evaluate(params, frozen)
  first = time.perf_counter() - start

  s = entry.max_lag

  def forward_only():
    """The token computations of one evaluation, nothing else."""
    for clip in evaluator.clips:
      evaluator.clip_tokens(params, clip)
    for i, lag in evaluator.trials:
      n = len(evaluator.clips[i]["frames"])
      evaluator.audio_tokens(params, frozen, evaluator.clips[i], s + lag, n - s + lag)
    for clip in evaluator.clips:
      evaluator.audio_tokens(params, frozen, clip, 0, len(clip["frames"]))

  evaluation = statistics.median(harness.timed(lambda: evaluator.evaluate(params, frozen), a.repeats))
  forward = statistics.median(harness.timed(forward_only, a.repeats))
  clips = len(evaluator.clips)
  video_seconds = sum(len(c["frames"]) for c in evaluator.clips) / schema.FPS
  result = {
      "workdir": os.path.abspath(a.workdir), "step": restored.step,
      "clips": clips, "trials": len(evaluator.trials), "video_seconds": video_seconds,
      "windows": list(entry.windows), "max_lag": s, "first_evaluation_seconds": first,
      "evaluation_seconds": evaluation, "forward_seconds": forward,
      "clips_per_second": clips / evaluation, "video_seconds_per_second": video_seconds / evaluation,
      "forward_share": forward / evaluation, "metrics": metrics,
  }
  print(f"{clips} clips ({video_seconds:.0f} s of video, {len(evaluator.trials)} trials, lags "
        f"-{s}..{s}, K in {tuple(entry.windows)}): evaluation {evaluation:.2f} s (first, with "
        f"compilation: {first:.1f} s) = {clips / evaluation:.1f} clips/s, "
        f"{video_seconds / evaluation:.0f} s of video per second; forward passes alone "
        f"{forward:.2f} s = {100 * forward / evaluation:.0f} % of the evaluation")
  harness.finish(a.json_out, result)


if __name__ == "__main__":
  main()
