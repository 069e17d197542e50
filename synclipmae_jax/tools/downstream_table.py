r"""The downstream table (paper 4.2-4.3, Tables 3 and 5) for a pretrained encoder against its
baselines, in one command: `synclipmae-downstream`.

  synclipmae-downstream --workdir=workdirs/demo --root=workdirs/downstream

Rows: the encoder of --workdir (a pretraining run), the same architecture at its random
initialisation, and the plain single-view MAE baseline (`--baseline_config`, default
configs/demo.py:plain_mae, trained here into ROOT/plain_mae at the same budget unless
--baseline_workdir names one). Columns: the linear probes (`tools/probe.py`: emotion and action
Acc / AUC scored per video at each sampled frame count; by default 16 and 80 frames sampled
uniformly over each video, their logits averaged; --probe_option protocol=clips for the
clip-based protocol) and lip reading (a `configs/vsr.py` head trained on each frozen encoder
into ROOT/vsr_<row>, then `tools/vsr_eval.py` on the test split: WER / CER). Finished
parts are kept (a run with its metrics.json, a probe or VSR report) and a rerun continues; a
probe report made with other options (another protocol or an older version's) is made again.
Writes ROOT/downstream.json and ROOT/downstream.md.
"""

from __future__ import annotations

import json
import os

from synclipmae_jax import checkpointing, command_line, config_files, train
from synclipmae_jax.evaluators import common as evaluators
from synclipmae_jax.tools import probe as probe_tool
from synclipmae_jax.tools import vsr_eval

REPORT_JSON = "downstream.json"
REPORT_MD = "downstream.md"


def _train(config, workdir: str) -> None:
  if not os.path.isfile(os.path.join(workdir, "metrics.json")):
    train.train_and_evaluate(config, workdir)


def cached_probes(folder: str, options: dict) -> dict | None:
  """The probe report kept in `folder` (`tools/probe.py`) when it was made with `options` (as
  JSON: lists for tuples), else None: a report of other options, or of an older version's
  (per-window scoring, without `protocol`), is not reused."""
  path = os.path.join(folder, probe_tool.REPORT_JSON)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    report = json.load(f)
  return report if report.get("options") == options else None


def table(workdir: str, root: str, *, baseline_config: str = "configs/demo.py:plain_mae",
          baseline_workdir: str = "", vsr_config: str = "configs/vsr.py",
          probe_options: dict | None = None) -> dict:
  """Trains what is missing and returns the report (see the module docstring); probe_options
  change the probes' options (`tools/probe.py`)."""
  # The probe options, checked before anything trains, as the probe report stores them.
  wanted = json.loads(json.dumps(probe_tool.probe_options(workdir, probe_options).to_dict()))
  os.makedirs(root, exist_ok=True)
  if not baseline_workdir:
    baseline_workdir = os.path.join(root, "plain_mae")
    baseline = config_files.load(baseline_config)
    baseline.data.directory = checkpointing.read_config(workdir).data.directory
    _train(baseline, baseline_workdir)
  probes = cached_probes(os.path.join(root, "probe"), wanted)
  if probes is None:
    probes = probe_tool.probe_rows([workdir, baseline_workdir], random_init=True,
                                   options=probe_options)
    probe_tool.write_report(probes, os.path.join(root, "probe"))
    probes = json.loads(json.dumps(probes))
  rows = []
  for name, encoder, random_init in (("pretrained", workdir, False), ("random init", workdir, True),
                                     ("plain MAE", baseline_workdir, False)):
    head = os.path.join(root, "vsr_" + name.replace(" ", "_"))
    config = config_files.load(vsr_config)
    config.encoder.update(workdir=os.path.abspath(encoder), random_init=random_init)
    _train(config, head)
    report = vsr_eval.evaluate(head)
    probe_row = next(r for r in probes["rows"] if r["workdir"] == os.path.abspath(encoder)
                     and (r["step"] == 0) == random_init)
    rows.append({"name": name, "encoder": os.path.abspath(encoder), "probe": probe_row["metrics"],
                 "vsr": report["metrics"], "vsr_workdir": head,
                 "vsr_utterances_per_second": report["utterances_per_second"]})
  result = {"probe_options": probes["options"], "rows": rows}
  with open(os.path.join(root, REPORT_JSON), "w") as f:
    json.dump(result, f, indent=1)
  with open(os.path.join(root, REPORT_MD), "w") as f:
    f.write(markdown(result))
  return result


def markdown(report: dict) -> str:
  """The rows as one table: probe Acc / AUC (%) per task and sampled frame count, VSR WER / CER
  (%); a caption line says how the probes scored."""
  o = report["probe_options"]
  probe_columns = [(t, f, n) for t in o["tasks"] for n in o["frames"] for f in ("acc", "auc")]
  header = ([f"{t} {f.upper()} @{n}" for t, f, n in probe_columns] + ["VSR WER", "VSR CER"])
  lines = [f"Probes {probe_tool.protocol(o)}; feature: {o['feature']}.", "",
           "| encoder | " + " | ".join(header) + " |",
           "| --- | " + " | ".join("---:" for _ in header) + " |"]
  for row in report["rows"]:
    values = [row["probe"][f"probe/{t}_{f}@{n}"] for t, f, n in probe_columns]
    values += [row["vsr"]["vsr/wer"], row["vsr"]["vsr/cer"]]
    lines.append(f"| {row['name']} | " + " | ".join(f"{v:.1f}" for v in values) + " |")
  return "\n".join(lines) + "\n"


def run() -> None:
  """Command line (`python -m synclipmae_jax.tools.downstream_table`, `synclipmae-downstream`)."""
  from absl import flags  # pylint: disable=import-outside-toplevel

  flags.DEFINE_string("workdir", None, "The pretraining run whose encoder is evaluated.")
  flags.DEFINE_string("root", None, "Where the baseline, the VSR heads and the reports go.")
  flags.DEFINE_string("baseline_config", "configs/demo.py:plain_mae",
                      "The plain-MAE baseline's pretraining config (trained into ROOT/plain_mae).")
  flags.DEFINE_string("baseline_workdir", "", "An already trained baseline (skips its training).")
  flags.DEFINE_string("vsr_config", "configs/vsr.py", "The lip-reading head's config.")
  flags.DEFINE_multi_string("probe_option", [], "A probe option key=value (tools/probe.py).")
  flags.mark_flags_as_required(["workdir", "root"])

  def main(argv):
    del argv
    f = flags.FLAGS
    report = table(f.workdir, f.root, baseline_config=f.baseline_config,
                   baseline_workdir=f.baseline_workdir, vsr_config=f.vsr_config,
                   probe_options=evaluators.parse_options(f.probe_option))
    print(markdown(report))

  command_line.run(main, __name__)


if __name__ == "__main__":
  run()
