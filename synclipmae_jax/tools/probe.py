r"""Linear probes of trained encoders side by side (paper 4.2, Table 3): `synclipmae-probe`.

  synclipmae-probe --workdir=workdirs/demo --workdir=workdirs/plain_mae --random_init \
      [--out=DIR] [--option feature=patch_mean] [--option pattern='/data/celebv/*.array_record']

One row per encoder: each --workdir's checkpoint (its latest, or --step for the first), and
with --random_init the first workdir's run at initialisation (`checkpointing.initial`: the same
architecture, untrained). Every row goes through the probe evaluator of `evaluators/probe/`
with the options of the first workdir's `evals.probe` (the defaults when it trained without
one) changed by --option key=value: its frames through the frozen encoder once, then the
emotion and action probes scored per video at each sampled frame count (`frames`, 16 and 80:
frames sampled uniformly over each video, their logits averaged; `--option protocol=clips` for
the clip-based baselines' protocol), the learning rate and weight decay chosen on validation,
the test figures reported. Writes to --out (default FIRST_WORKDIR/probe/STEP): `probe.json`
(every figure, the chosen grid points, video counts, extraction and fitting times) and
`probe.md` (the table).
"""

from __future__ import annotations

import os
import time

from synclipmae_jax import checkpointing, command_line, storage
from synclipmae_jax.evaluators import common as evaluators
from synclipmae_jax.evaluators import probe as probe_evaluator
from synclipmae_jax.models import synclipmae

REPORT_JSON = "probe.json"
REPORT_MD = "probe.md"


def probe_options(workdir: str, options: dict | None = None):
  """The probe options of the rows: `workdir`'s `evals.probe` (the defaults when it trained
  without one) changed by `options`, validated before anything loads."""
  config = checkpointing.read_config(workdir)
  entry = probe_evaluator.entry_of(config)
  evaluators.override(entry, options or {}, config)
  return entry


def probe_rows(workdirs: list[str], *, step: int | None = None, random_init: bool = False,
               options: dict | None = None) -> dict:
  """The report: per encoder row its metrics and details (see the module docstring)."""
  if not workdirs:
    raise ValueError("give at least one --workdir")
  entry = probe_options(workdirs[0], options)
  sources = [(os.path.basename(os.path.normpath(w)), w, step if i == 0 else None, False)
             for i, w in enumerate(workdirs)]
  if random_init:
    sources.append((f"random init ({sources[0][0]})", workdirs[0], None, True))
  rows, clips_cache = [], {}
  for name, workdir, row_step, initial in sources:
    restored = checkpointing.initial(workdir) if initial else checkpointing.load(workdir, row_step)
    config = restored.config
    config.evals.probe = entry
    key = config.model.image_size
    evaluator = probe_evaluator.Evaluator(entry, config, model=synclipmae.build(config.model),
                                          clips=clips_cache.get(key))
    clips_cache[key] = evaluator.clips
    start = time.perf_counter()
    features = evaluator.extract(restored.params)
    extract_seconds = time.perf_counter() - start
    start = time.perf_counter()
    metrics, details = evaluator.fit(features)
    fit_seconds = time.perf_counter() - start
    frames = sum(len(c["frames"]) for clips in evaluator.clips.values() for c in clips)
    rows.append({"name": name, "workdir": str(storage.path(workdir)), "step": restored.step,
                 "metrics": metrics, "details": details, "frames": frames,
                 "extract_seconds": extract_seconds, "fit_seconds": fit_seconds})
  return {"options": entry.to_dict(), "rows": rows}


def protocol(options: dict) -> str:
  """How the probes of `options` sample and score a video, in words (the tables' captions)."""
  counts = " / ".join(str(n) for n in options["frames"])
  if options["protocol"] == "clips":
    sampled = (f"clips of {options['clip_length']} frames ({counts} frames in all) sampled "
               f"uniformly, clip predictions averaged")
  else:
    sampled = f"{counts} frames sampled uniformly, frame predictions averaged"
  return f"scored per video: {sampled}"


def markdown(report: dict) -> str:
  """The rows as one table: emotion and action Acc / AUC (%) per sampled frame count."""
  o = report["options"]
  columns = [(task, figure, count) for task in o["tasks"] for count in o["frames"]
             for figure in ("acc", "auc")]
  data = o["pattern"] or "the labelled synthetic set (unseen speakers)"
  lines = [f"# Linear probes on {data}; feature: {o['feature']}; {protocol(o)}", "",
           "| encoder | step | " + " | ".join(f"{t} {f.upper()} @{n}" for t, f, n in columns) + " |",
           "| --- | ---: | " + " | ".join("---:" for _ in columns) + " |"]
  for row in report["rows"]:
    m = row["metrics"]
    lines.append(f"| {row['name']} | {row['step']} | "
                 + " | ".join(f"{m[f'probe/{t}_{f}@{n}']:.1f}" for t, f, n in columns) + " |")
  return "\n".join(lines) + "\n"


def write_report(report: dict, out_dir: str) -> dict[str, str]:
  import json  # pylint: disable=import-outside-toplevel
  os.makedirs(out_dir, exist_ok=True)
  paths = {"json": os.path.join(out_dir, REPORT_JSON), "markdown": os.path.join(out_dir, REPORT_MD)}
  with open(paths["json"], "w") as f:
    json.dump(report, f, indent=1)
  with open(paths["markdown"], "w") as f:
    f.write(markdown(report))
  return paths


def main(flags_) -> None:
  report = probe_rows(flags_.workdir, step=flags_.step, random_init=flags_.random_init,
                      options=evaluators.parse_options(flags_.option))
  out_dir = flags_.out or os.path.join(flags_.workdir[0], "probe", str(report["rows"][0]["step"]))
  out = storage.Mirror(out_dir)  # written locally, copied to a bucket's folder
  paths = write_report(report, out.local)
  out.sync()
  print(markdown(report))
  print("wrote " + ", ".join(out.shown(p) for p in paths.values()))


def run() -> None:
  """Command line (`python -m synclipmae_jax.tools.probe`, console script `synclipmae-probe`)."""
  from absl import flags  # pylint: disable=import-outside-toplevel

  flags.DEFINE_multi_string("workdir", None, "A training run's workdir; repeat for more rows.")
  flags.DEFINE_integer("step", None, "The first workdir's checkpoint (default: the latest).")
  flags.DEFINE_bool("random_init", False, "Add a row for the first workdir's run at initialisation.")
  flags.DEFINE_string("out", "", "Output folder (default: FIRST_WORKDIR/probe/STEP).")
  flags.DEFINE_multi_string("option", [], "A probe option key=value (evals.probe), e.g. "
                            "feature=patch_mean, frames=[16,80] or protocol=clips.")
  flags.mark_flags_as_required(["workdir"])
  command_line.run(lambda argv: main(flags.FLAGS), __name__)


if __name__ == "__main__":
  run()
