r"""Which rematerialisation policy (and per-chip batch) a TPU topology affords: compiled, not guessed.

  python -m synclipmae_jax.tools.remat_search --config=configs/pretrain.py --topology=v5p:4x4x8 \
      --clips_per_chip=48 --min_headroom=0.15 --json_out=/tmp/remat.json
  synclipmae-aot-remat ... --topology=v6e:16x16 --clips_per_chip=48 --fallback_clips_per_chip=32,24,16

(the flags of `synclipmae-aot` plus --candidates, --fallback_clips_per_chip, --first_fit and
--resume).

For every candidate policy (`models/remat.py`; "P" for both stacks or "ENCODER:DECODER") and
every per-chip batch, the config's train step is compiled for the topology by `aot.compile_report`
with `model.remat_policy` set and `model.scan_layers=False`: unscanned, XLA's cost analysis counts
every layer (a scanned stack's body is counted once), so its FLOPs are the FLOPs that run per step,
recomputation included; memory is that of the unscanned step, and the search tells the config to
train unscanned (`--config.model.scan_layers=False`; without remat, `nn.scan` stacks every
layer's residuals and needs far more memory, BENCHMARKS.md (c)).

Per candidate the table gives memory per chip, headroom, the FLOPs that run per chip and step, their
ratio to the analytical count without recomputation (`flops.train_step_flops`), the step time if the
chip executed those FLOPs at 40 % and 60 % of its peak bf16 rate, and the days that gives for the
config's `num_train_steps` (the paper's 400k for configs/pretrain.py). The choice: at the largest
per-chip batch where any candidate keeps `--min_headroom` of HBM free, the candidate with the fewest
FLOPs (ties: more headroom). Candidates that offload to host memory move bytes over PCIe that the
FLOP count does not show: the table marks them, and they are chosen only when nothing else fits.
A compile that the TPU compiler refuses (RESOURCE_EXHAUSTED) is a row that does not fit.

`--first_fit` stops at a batch's first candidate that fits: give the candidates in order of
increasing FLOPs (as a full search on another topology measured them) to save compiles. Batches
are tried from the largest down; smaller ones are not compiled once one has a fitting candidate.
"""

from __future__ import annotations

import copy
import json
import sys

from absl import app, flags
import jax

from synclipmae_jax.models import remat
from synclipmae_jax.tools import aot
from synclipmae_jax import command_line

SECONDS_PER_DAY = 86_400
UTILISATION_POINTS = aot.MFU_POINTS  # fractions of peak at which the executed FLOPs run

# --config, --topology, --clips_per_chip, --min_headroom, --hbm_gib and --json_out are aot's flags.
FLAGS = flags.FLAGS
_FALLBACK_CLIPS_PER_CHIP = flags.DEFINE_list(
    "fallback_clips_per_chip", [], "Smaller per-chip batches, tried in turn (largest first) when no "
    "candidate fits at --clips_per_chip (default for that: the config's batch).")
_CANDIDATES = flags.DEFINE_list(
    "candidates", list(remat.REMAT_POLICIES),
    "Policies to compile: a name of models/remat.py for both stacks, or ENCODER:DECODER.")
_FIRST_FIT = flags.DEFINE_bool("first_fit", False, "Stop at a batch's first candidate that fits.")
_RESUME = flags.DEFINE_bool(
    "resume", False, "Keep the rows of an earlier search in --json_out (same topology and settings) "
    "and compile only the candidates it lacks: a long search continues where it stopped.")


def parse_candidate(candidate: str) -> dict[str, str]:
  """'P' -> both stacks use P; 'E:D' -> encoder E, decoder D (names of remat.REMAT_POLICIES)."""
  names = candidate.split(":")
  if len(names) == 1:
    names = names * len(remat.STACKS)
  if len(names) != len(remat.STACKS) or any(n not in remat.REMAT_POLICIES for n in names):
    raise ValueError(f"remat candidate {candidate!r} must be POLICY or ENCODER:DECODER with policies "
                     f"from {remat.REMAT_POLICIES}")
  return dict(zip(remat.STACKS, names))


def candidate_config(config, policy: dict[str, str], global_batch_size: int):
  """A copy of `config` with the policy, unscanned stacks and the batch."""
  config = copy.deepcopy(config)
  with config.unlocked():
    config.model.remat_policy.update(policy)
    config.model.scan_layers = False
    config.data.global_batch_size = global_batch_size
  return config


def table_row(candidate: str, clips_per_chip: int, report: dict, num_train_steps: int) -> dict:
  """The search's summary of one compile report."""
  step = report["functions"]["train_step"]
  row = {"candidate": candidate, "clips_per_chip": clips_per_chip,
         "offloads": "offload" in parse_candidate(candidate).values(), "fits": step["fits"],
         "analytical_flops_per_device": report["flops"]["analytical_per_device"],
         "compile_seconds": step["compile_seconds"]}
  if "error" in step:
    return dict(row, error=step["error"])
  flops = step["flops_per_device"]
  row.update(total_bytes=step["memory"]["total"], headroom=step["headroom"], flops_per_device=flops,
             flops_over_analytical=flops / report["flops"]["analytical_per_device"])
  if "peak_flops_per_device" in report:
    row["step_seconds"] = {f"{u:.2f}": flops / (report["peak_flops_per_device"] * u)
                           for u in UTILISATION_POINTS}
    row["days"] = {u: s * num_train_steps / SECONDS_PER_DAY for u, s in row["step_seconds"].items()}
  return row


def choose(rows: list[dict]) -> dict | None:
  """At the largest per-chip batch with a fitting row: the fewest FLOPs (ties: more headroom);
  rows that offload to host only if nothing else fits there."""
  fitting = [r for r in rows if r["fits"]]
  if not fitting:
    return None
  largest = max(r["clips_per_chip"] for r in fitting)
  at_batch = [r for r in fitting if r["clips_per_chip"] == largest]
  on_device = [r for r in at_batch if not r["offloads"]] or at_batch
  return min(on_device, key=lambda r: (r["flops_per_device"], -r["headroom"]))


def search(config, devices, clips_per_chip: list[int], candidates: list[str], *, min_headroom: float,
           hbm_bytes: int | None = None, first_fit: bool = False, on_row=None,
           done_rows: tuple[dict, ...] = ()) -> dict:
  """Compiles the candidates for each per-chip batch (largest first); returns the table and choice.

  Args:
    config: a training config.
    devices: the devices to compile for (a TPU topology's, or local ones in tests).
    clips_per_chip: per-chip batches to try; a batch is not compiled once a larger one fits.
    candidates: remat candidates ("P" or "ENCODER:DECODER").
    min_headroom: fraction of HBM that must stay free.
    hbm_bytes: memory per device; default from the chip kind (`aot.HBM_GIB_PER_CHIP`).
    first_fit: stop at a batch's first fitting candidate.
    on_row: called with the result so far after every compile (e.g. to save it).
    done_rows: rows of an earlier search with the same settings (`resumable_rows`): kept, and
      their (candidate, batch) pairs are not compiled again.

  Returns:
    {"rows": [...], "choice": the chosen row or None, and the settings}.
  """
  for candidate in candidates:
    parse_candidate(candidate)  # every name is checked before the first (minutes long) compile
  chips = len(devices) // aot.devices_per_chip(devices)
  result = {"num_chips": chips, "device_kind": devices[0].device_kind, "min_headroom": min_headroom,
            "num_train_steps": config.num_train_steps, "scan_layers": False,
            "flops_counted": "compiled without nn.scan: XLA counts every layer",
            "rows": list(done_rows)}
  done = {(r["candidate"], r["clips_per_chip"]): r for r in done_rows}
  result["choice"] = choose(result["rows"])
  for clips in sorted(clips_per_chip, reverse=True):
    for candidate in candidates:
      if (candidate, clips) in done:
        if first_fit and done[candidate, clips]["fits"]:
          break
        continue
      report = aot.compile_report(
          candidate_config(config, parse_candidate(candidate), clips * chips), devices,
          hbm_bytes=hbm_bytes, min_headroom=min_headroom, compile_eval=False)
      result["rows"].append(table_row(candidate, clips, report, config.num_train_steps))
      jax.clear_caches()  # each candidate traces new functions: do not keep the old ones' traces
      result.update(hbm_bytes_per_device=report["hbm_bytes_per_device"], mesh=report["mesh"])
      result["choice"] = choose(result["rows"])
      if on_row is not None:
        on_row(result)
      if first_fit and result["rows"][-1]["fits"]:
        break
    if result["choice"] is not None:
      break
  return result


def resumable_rows(path: str, topology: str, config, min_headroom: float) -> list[dict]:
  """The rows of an earlier search's JSON at `path` (none if the file does not exist).

  Raises ValueError when that search was for another topology, headroom or step count: its rows
  would not belong in this table.
  """
  try:
    with open(path) as f:
      earlier = json.load(f)
  except FileNotFoundError:
    return []
  mine = {"topology": topology, "min_headroom": min_headroom,
          "num_train_steps": config.num_train_steps}
  theirs = {k: earlier.get(k) for k in mine}
  if theirs != mine:
    raise ValueError(f"--resume: {path} is a search with {theirs}, this one has {mine}")
  return earlier["rows"]


def format_table(result: dict) -> str:
  """The search as a text table (GiB and TFLOP per chip)."""
  gib = aot.GIB
  points = [f"{u:.2f}" for u in UTILISATION_POINTS]
  lines = [
      f"{result['num_chips']} x {result['device_kind']}, mesh {result.get('mesh')}, HBM "
      f"{result.get('hbm_bytes_per_device', 0) / gib:.1f} GiB per chip, required headroom "
      f"{100 * result['min_headroom']:.0f} %; FLOPs {result['flops_counted']} (--config.model."
      f"scan_layers=False); step time = FLOPs that run / (peak x fraction); days for "
      f"{result['num_train_steps']} steps",
      "",
      f"{'clips/chip':>10} {'policy (enc:dec)':<34} {'GiB/chip':>8} {'headroom':>8} {'fits':>4} "
      f"{'TFLOP/chip':>10} {'/analyt.':>8} "
      + " ".join(f"{'s @' + str(round(100 * float(p))) + '%':>8} {'days':>6}" for p in points),
  ]
  for r in result["rows"]:
    name = r["candidate"] + (" (host offload)" if r["offloads"] else "")
    if "error" in r:
      lines.append(f"{r['clips_per_chip']:>10} {name:<34} does not compile: {r['error'][:120]}")
      continue
    timing = " ".join(f"{r['step_seconds'][p]:8.3f} {r['days'][p]:6.2f}" for p in points) \
        if "step_seconds" in r else ""
    lines.append(
        f"{r['clips_per_chip']:>10} {name:<34} {r['total_bytes'] / gib:8.1f} "
        f"{100 * r['headroom']:7.1f}% {'yes' if r['fits'] else 'NO':>4} "
        f"{r['flops_per_device'] / 1e12:10.2f} {r['flops_over_analytical']:8.3f} {timing}")
  c = result.get("choice")
  lines += ["", "CHOICE: " + (
      f"{c['clips_per_chip']} clips per chip, --config.model.remat_policy.encoder="
      f"{parse_candidate(c['candidate'])['encoder']} --config.model.remat_policy.decoder="
      f"{parse_candidate(c['candidate'])['decoder']} --config.model.scan_layers=False"
      if c else "nothing fits")]
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.topology:
    raise app.UsageError("--topology is required, e.g. --topology=v5p:4x4x8")
  devices = aot.topology_devices(FLAGS.topology)
  config = FLAGS.config
  chips = len(devices) // aot.devices_per_chip(devices)
  clips = [FLAGS.clips_per_chip or config.data.global_batch_size // chips]
  clips += [int(c) for c in _FALLBACK_CLIPS_PER_CHIP.value]

  def save(result):
    row = result["rows"][-1]
    print(f"{row['clips_per_chip']} clips per chip, {row['candidate']}: fits={row['fits']}, "
          f"{row.get('total_bytes', 0) / aot.GIB:.1f} GiB, {row.get('flops_per_device', 0):.4g} FLOPs, "
          f"compiled in {row['compile_seconds']:.0f} s", file=sys.stderr, flush=True)
    if FLAGS.json_out:
      with open(FLAGS.json_out, "w") as f:
        json.dump({"topology": FLAGS.topology, **result}, f, indent=1, sort_keys=True)

  if _RESUME.value and not FLAGS.json_out:
    raise app.UsageError("--resume reads the earlier rows from --json_out: give it")
  done_rows = resumable_rows(FLAGS.json_out, FLAGS.topology, config, FLAGS.min_headroom) \
      if _RESUME.value else []
  result = search(config, devices, clips, _CANDIDATES.value, min_headroom=FLAGS.min_headroom,
                  hbm_bytes=int(FLAGS.hbm_gib * aot.GIB) or None, first_fit=_FIRST_FIT.value,
                  on_row=save, done_rows=done_rows)
  print(f"topology {FLAGS.topology}: " + format_table(result))
  if result["choice"] is None:
    sys.exit(1)


def run():
  """Console-script entry point (`synclipmae-aot-remat`)."""
  flags.mark_flags_as_required(["config"])
  command_line.run(main, __name__)


if __name__ == "__main__":
  run()
