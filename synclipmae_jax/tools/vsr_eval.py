r"""Lip reading of a trained head on a split of its labelled data (paper 4.3, Table 5):
`synclipmae-vsr-eval`.

  synclipmae-vsr-eval --workdir=workdirs/vsr [--step=2000] [--out=DIR] \
      [--option split=test] [--option beam=10] [--option ctc_weight=0.1]

Reads the head's checkpoint (`checkpointing.load`), its units (`units.model` in the workdir) and
its config's frozen encoder and labelled data, decodes every utterance of the split with the
evaluator of `evaluators/vsr.py` (the run's `evals.vsr` options, changed by --option; the
default split here is test) and writes to --out (default WORKDIR/vsr_eval/STEP): `vsr_eval.json`
(WER, CER, decoding speed, and per utterance its reference and hypothesis) and `vsr_eval.md`.
"""

from __future__ import annotations

import json
import os
import time

from synclipmae_jax import checkpointing, command_line, config_defaults, storage
from synclipmae_jax.evaluators import common as evaluators
from synclipmae_jax.evaluators import vsr as vsr_evaluator
from synclipmae_jax.tasks import vsr as vsr_task

REPORT_JSON = "vsr_eval.json"
REPORT_MD = "vsr_eval.md"


def evaluate(workdir: str, *, step: int | None = None, options: dict | None = None) -> dict:
  """The report (see the module docstring)."""
  config = checkpointing.read_config(workdir)  # options are checked before anything loads
  if config.get("task") != "vsr":
    raise ValueError(f"{workdir} is not a lip-reading run (task={config.get('task', 'pretrain')!r})")
  entry = config.evals.get("vsr") or config_defaults.vsr_eval_config()
  entry.split = "test"
  evaluators.override(entry, options or {}, config)
  restored = checkpointing.load(workdir, step)
  units, by_split = vsr_task.load_utterances(config, workdir)
  evaluator = vsr_evaluator.Evaluator(entry, config, model=vsr_task.build_model(config), units=units,
                                      utterances=by_split)
  start = time.perf_counter()
  metrics, rows = evaluator.evaluate(restored.params)
  seconds = time.perf_counter() - start
  return {"workdir": str(storage.path(workdir)), "step": restored.step, "options": entry.to_dict(),
          "encoder": config.encoder.to_dict(), "metrics": metrics, "utterances": rows,
          "decode_seconds": seconds, "utterances_per_second": len(rows) / seconds}


def markdown(report: dict) -> str:
  o, m = report["options"], report["metrics"]
  lines = [f"# Lip reading of {report['workdir']} at step {report['step']}", "",
           f"{len(report['utterances'])} {o['split']} utterances, beam {o['beam']}, CTC weight "
           f"{o['ctc_weight']}: WER {m['vsr/wer']:.1f} %, CER {m['vsr/cer']:.1f} % "
           f"({report['utterances_per_second']:.1f} utterances/s).", "",
           "| clip | reference | hypothesis |", "| ---: | --- | --- |"]
  lines += [f"| {r['clip_id']} | {r['reference']} | {r['hypothesis']} |" for r in report["utterances"]]
  return "\n".join(lines) + "\n"


def main(flags_) -> None:
  report = evaluate(flags_.workdir, step=flags_.step, options=evaluators.parse_options(flags_.option))
  out_dir = flags_.out or os.path.join(flags_.workdir, "vsr_eval", str(report["step"]))
  out = storage.Mirror(out_dir)  # written locally, copied to a bucket's folder
  with open(os.path.join(out.local, REPORT_JSON), "w") as f:
    json.dump(report, f, indent=1)
  with open(os.path.join(out.local, REPORT_MD), "w") as f:
    f.write(markdown(report))
  out.sync()
  print(markdown(report).split("\n| clip |")[0])
  print(f"wrote {out_dir}/{REPORT_JSON}, {REPORT_MD}")


def run() -> None:
  """Command line (`python -m synclipmae_jax.tools.vsr_eval`, console script `synclipmae-vsr-eval`)."""
  from absl import flags  # pylint: disable=import-outside-toplevel

  flags.DEFINE_string("workdir", None, "A lip-reading run's workdir (configs/vsr.py).")
  flags.DEFINE_integer("step", None, "The checkpoint (default: the latest).")
  flags.DEFINE_string("out", "", "Output folder (default: WORKDIR/vsr_eval/STEP).")
  flags.DEFINE_multi_string("option", [], "A VSR evaluator option key=value (evals.vsr), e.g. "
                            "split=validation, beam=1 or ctc_weight=0.")
  flags.mark_flags_as_required(["workdir"])
  command_line.run(lambda argv: main(flags.FLAGS), __name__)


if __name__ == "__main__":
  run()
