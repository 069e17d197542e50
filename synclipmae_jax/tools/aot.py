r"""Ahead-of-time compilation of the real train and eval steps for a TPU topology, on any host.

  python -m synclipmae_jax.tools.aot --config=configs/pretrain.py --topology=v5p:4x4x8 \
      --clips_per_chip=48 --min_headroom=0.15 --json_out=/tmp/aot.json
  python -m synclipmae_jax.tools.aot --config=configs/pretrain.py --topology=v5p:4x4x8 \
      --num_slices=2 --config.mesh.dcn_data=2 --clips_per_chip=48   # multislice: 2 x 128 chips

libtpu (the `tpu` extra, requirements-tpu.txt) describes the devices of a named topology
(`jax.experimental.topologies.get_topology_desc`, e.g. `v5p:4x4x8` = 128 chips, `v5e:16x16`,
`v6e:16x16`); the config's mesh is laid over them and the train step that training runs
(`experiment.build`) is lowered from abstract shapes with their shardings and compiled by the
TPU compiler (MaxText's `train_compile`). Nothing is allocated and no data is read: the config
is validated for the topology's device and host counts, then only shapes flow. The sync
evaluator's token functions (`evaluators.sync.prompt_tokens_fn` / `audio_tokens_fn`) are
compiled the same way.

Multislice: `--num_slices=N` describes N slices of the topology (libtpu's `num_slices`; their
devices carry a `slice_index`) and the mesh's DCN sizes (`mesh.dcn_data` x `mesh.dcn_fsdp` = N,
sharding.py) lay the hybrid mesh over them. The report says which mesh axes cross DCN, counted on
the laid-out mesh (how many slices a line of devices along the axis spans); the memory figures
stay per chip.

The report gives, per device: parameter, optimizer-state, frozen-encoder and batch bytes (from
the state's shardings); each compiled function's argument, output, aliased (donated), temporary
and code bytes, their total (what the runtime reserves) and XLA's own peak estimate; the
device's HBM and the headroom; compiled FLOPs next to the analytical count
(`flops.train_step_flops`); lower and compile times; and, from the chip's peak bf16 FLOP/s,
the step time that the analytical count implies at 40 % and 60 % MFU; and the contrastive term:
its negatives (`loss.contrastive.negatives`: the group's or the global batch's), the candidates
each anchor is scored against and the analytical FLOPs of its logits (forward + backward) and
positive sets (`flops.contrastive_flops`).

XLA's cost analysis is of the SPMD-partitioned program, so its FLOPs are per device (checked:
the tiny config compiled for 1 and for 4 v5p chips gives 173 and 46 MFLOP). It counts a while
loop's body once: with `model.scan_layers=True` every scanned stack counts as one layer, so
compare with `--config.model.scan_layers=False`. `model.remat_policy` (models/remat.py) says
what the backward pass recomputes: "full" recomputes each block's forward pass, about 4/3 of the
analytical 3x-forward count of the blocks; `tools/remat_search.py` compares the policies.

Exit status 1 when a compiled function needs more than (1 - min_headroom) of the device's HBM
(or the TPU compiler itself refuses it as larger than HBM: RESOURCE_EXHAUSTED), or when a
parameter (trainable or frozen) larger than --max_replicated_mib is replicated on a mesh with
fsdp > 1 (MaxText's check against an accidentally unsharded weight).
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time

from absl import app, flags
import jax
import numpy as np
from ml_collections import config_flags

from synclipmae_jax import command_line, config_validation, experiment, flops, objective, sharding
from synclipmae_jax.chip_peaks import (GIB, HBM_GIB_PER_CHIP, PEAK_BF16_TFLOPS_PER_CHIP,
                                       devices_per_chip)
from synclipmae_jax.evaluators import sync

# An AOT compile uses no TPU: let several processes (compiles, tests) load libtpu at once
# instead of failing on its lockfile.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

MFU_POINTS = (0.4, 0.6)

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:variant]).",
                                          lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", None, "libtpu topology name, e.g. v5p:4x4x8.")
_NUM_SLICES = flags.DEFINE_integer(
    "num_slices", 1, "Slices of the topology joined over DCN (multislice; set mesh.dcn_data / "
    "mesh.dcn_fsdp to match).")
_CLIPS_PER_CHIP = flags.DEFINE_integer(
    "clips_per_chip", 0, "If > 0, data.global_batch_size = clips_per_chip x the topology's chips.")
_MIN_HEADROOM = flags.DEFINE_float("min_headroom", 0.0, "Fraction of HBM that must stay free.")
_MAX_REPLICATED_MIB = flags.DEFINE_float(
    "max_replicated_mib", 1.0, "Largest parameter (trainable or frozen) allowed to stay replicated on "
    "an fsdp mesh.")
_HBM_GIB = flags.DEFINE_float("hbm_gib", 0.0, "HBM per chip; 0 = from the table of chip kinds.")
_EVAL = flags.DEFINE_bool("eval", True, "Also compile the evaluator's token functions.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Write the report as JSON here.")


def topology_devices(topology: str, num_slices: int = 1) -> list:
  """The devices of `num_slices` slices of a libtpu topology (e.g. 'v5p:4x4x8'), without any
  TPU attached."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top

  if num_slices < 1:
    raise ValueError(f"num_slices={num_slices} must be >= 1")
  try:
    return list(topologies.get_topology_desc(platform="tpu", topology_name=topology,
                                             num_slices=num_slices).devices)
  except (RuntimeError, ValueError) as e:
    raise ValueError(f"cannot describe TPU topology {topology!r} (it needs libtpu: "
                     f"pip install -r requirements-tpu.txt): {e}") from e


def hbm_bytes_per_device(devices) -> int | None:
  gib = HBM_GIB_PER_CHIP.get(devices[0].device_kind)
  return None if gib is None else int(gib * GIB) // devices_per_chip(devices)


def bytes_per_device(tree) -> int:
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs (its shard of each leaf)."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    total += math.prod(leaf.sharding.shard_shape(leaf.shape)) * np.dtype(leaf.dtype).itemsize
  return total


def replicated_leaves(tree, min_bytes: int) -> list[dict]:
  """Leaves of at least `min_bytes` that every device holds whole."""
  found = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    nbytes = math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
    if nbytes >= min_bytes and leaf.sharding.is_fully_replicated:
      found.append({"name": jax.tree_util.keystr(path), "shape": list(leaf.shape), "bytes": nbytes})
  return found


def compile_function(fn, *args) -> dict:
  """Lowers and compiles a jitted function for its abstract arguments; memory, FLOPs, times."""
  start = time.perf_counter()
  lowered = fn.lower(*args)
  lowered_at = time.perf_counter()
  try:
    compiled = lowered.compile()
  except jax.errors.JaxRuntimeError as e:  # the TPU compiler refuses what exceeds HBM
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    return {"lower_seconds": lowered_at - start, "compile_seconds": time.perf_counter() - lowered_at,
            "error": str(e).strip().splitlines()[-1]}
  done = time.perf_counter()
  m = compiled.memory_analysis()
  memory = {"argument": m.argument_size_in_bytes, "output": m.output_size_in_bytes,
            "alias": m.alias_size_in_bytes, "temp": m.temp_size_in_bytes,
            "generated_code": m.generated_code_size_in_bytes,
            "xla_peak": getattr(m, "peak_memory_in_bytes", 0)}
  memory["total"] = (memory["argument"] + memory["output"] - memory["alias"] + memory["temp"]
                     + memory["generated_code"])
  return {"lower_seconds": lowered_at - start, "compile_seconds": done - lowered_at,
          "flops_per_device": float(compiled.cost_analysis().get("flops", 0.0)), "memory": memory}


def _compile_eval(config, exp) -> dict:
  """The sync evaluator's prompt-token and audio-token functions, for frames_per_call frames."""
  entry = config.evals.sync
  n, s = entry.frames_per_call, config.model.image_size
  replicated = sharding.replicated(exp.mesh)
  frames = jax.ShapeDtypeStruct((n, s, s, 3), np.uint8, sharding=replicated)
  boxes = jax.ShapeDtypeStruct((n, 4), np.float32, sharding=replicated)
  t = config.data.window_frames
  wave = jax.ShapeDtypeStruct((sync.windows_per_call(entry, t), exp.audio_encoder.window_samples(t)),
                              np.float32, sharding=replicated)
  prompts = sync.prompt_tokens_for(exp.model, config, entry)
  audio = sync.audio_tokens_fn(exp.model, exp.audio_encoder, t)
  params, frozen = exp.abstract_state.params, exp.abstract_state.frozen
  return {"eval_prompt_tokens": compile_function(prompts, params, frames, boxes, boxes),
          "eval_audio_tokens": compile_function(audio, params, frozen, wave)}


def _for_compilation(config):
  """A copy that validates without data: file patterns are never read here."""
  config = copy.deepcopy(config)
  if config.data.source == "array_record":
    config.data.train_pattern = config.data.train_pattern or "<not read by the AOT compile>"
    config.data.eval_pattern = config.data.eval_pattern or "<not read by the AOT compile>"
  return config


def compile_report(config, devices, *, hbm_bytes: int | None = None, min_headroom: float = 0.0,
                   max_replicated_bytes: int = 2 ** 20, compile_eval: bool = True) -> dict:
  """Compiles the config's train step (and eval functions) for `devices`; returns the report.

  Args:
    config: a training config (configs/*.py).
    devices: the devices to lay the config's mesh over (a TPU topology's, or local ones); of
      several slices, the mesh's DCN sizes must multiply to their number.
    hbm_bytes: memory per device; default: from HBM_GIB_PER_CHIP by the devices' kind.
    min_headroom: fraction of the memory that must stay free for a function to fit.
    max_replicated_bytes: larger parameters (trainable or frozen) may not be replicated on an
      fsdp mesh.
    compile_eval: also compile the sync evaluator's token functions (if config.evals.sync).

  Returns:
    A JSON-serialisable dict; `ok` is False if something does not fit or is left replicated;
    `dcn_axes` maps each mesh axis that crosses slices to the number of slices it spans.
  """
  if not 0.0 <= min_headroom < 1.0:
    raise ValueError(f"min_headroom={min_headroom} must be in [0, 1)")
  config = _for_compilation(config)
  num_hosts = len({d.process_index for d in devices})
  num_slices = sharding.num_slices(devices)
  config_validation.validate(config, num_devices=len(devices), process_count=num_hosts,
                             num_slices=num_slices, training=False)
  kind = devices[0].device_kind
  hbm = hbm_bytes or hbm_bytes_per_device(devices)
  if hbm is None:
    raise ValueError(f"HBM of device kind {kind!r} is unknown (known: {sorted(HBM_GIB_PER_CHIP)}); "
                     f"pass hbm_bytes (--hbm_gib)")

  exp = experiment.build(config, sharding.make_mesh(config.mesh, devices))
  abstract, batch, mesh = exp.abstract_state, exp.abstract_batch, exp.mesh
  with exp.scope():
    functions = {"train_step": compile_function(exp.train_step, abstract, batch)}
    if compile_eval and "sync" in config.evals:
      functions.update(_compile_eval(config, exp))
  for f in functions.values():
    if "error" in f:
      f["fits"] = False
      continue
    f["headroom"] = 1.0 - f["memory"]["total"] / hbm
    f["fits"] = f["memory"]["total"] <= (1.0 - min_headroom) * hbm

  t = config.data.window_frames
  analytical = exp.step_flops
  n = len(devices)
  compiled_flops = functions["train_step"].get("flops_per_device", float("nan"))
  report = {
      "device_kind": kind, "num_devices": n, "devices_per_chip": devices_per_chip(devices),
      "num_hosts": num_hosts, "mesh": {k: int(v) for k, v in mesh.shape.items()},
      "num_slices": num_slices,
      "dcn_axes": {a: k for a, k in sharding.slices_per_axis(mesh.devices).items() if k > 1},
      "global_batch_size": config.data.global_batch_size,
      "clips_per_device": config.data.global_batch_size / n,
      "window_frames": t, "scan_layers": bool(config.model.scan_layers),
      "remat_policy": dict(config.model.remat_policy), "dtype": config.model.dtype,
      "hbm_bytes_per_device": hbm, "min_headroom": min_headroom,
      "state_bytes_per_device": {
          "params": bytes_per_device(abstract.params),
          "opt_state": bytes_per_device(abstract.opt_state),
          "frozen": bytes_per_device(abstract.frozen), "batch": bytes_per_device(batch)},
      "functions": functions,
      "flops": {"analytical_per_step": analytical, "analytical_per_device": analytical / n,
                "compiled_per_device": compiled_flops,
                "compiled_over_analytical": compiled_flops * n / analytical},
  }
  peak = PEAK_BF16_TFLOPS_PER_CHIP.get(kind)
  if peak is not None:
    per_device_peak = peak * 1e12 / devices_per_chip(devices)
    report["peak_flops_per_device"] = per_device_peak
    report["step_seconds_at_mfu"] = {f"{mfu:.2f}": analytical / n / (per_device_peak * mfu)
                                     for mfu in MFU_POINTS}
  fsdp = mesh.shape["fsdp"] > 1
  logits, positives = flops.contrastive_flops(
      config, group_size=exp.group_size, audio_features=experiment.audio_feature_shape(
          exp.audio_encoder, abstract.frozen, t))
  report["contrastive"] = {
      "negatives": objective.contrastive_negatives(config.loss.contrastive),
      "candidates_per_anchor": flops.contrastive_candidates(config, exp.group_size),
      "logits_flops_per_step": 3 * logits, "positives_flops_per_step": positives,
      "fraction_of_analytical": (3 * logits + positives) / analytical}
  report["replicated_parameters"] = (  # trainable and frozen
      replicated_leaves(abstract.params, max_replicated_bytes)
      + replicated_leaves({"frozen": abstract.frozen}, max_replicated_bytes) if fsdp else [])
  report["replicated_frozen_bytes"] = sum(
      x["bytes"] for x in replicated_leaves(abstract.frozen, 0))
  report["fits"] = all(f["fits"] for f in functions.values())
  report["ok"] = report["fits"] and not report["replicated_parameters"]
  return report


def format_report(report: dict) -> str:
  """The report as a text table (MiB per device)."""
  g = lambda b: f"{b / 2**20:9.1f}"  # pylint: disable=unnecessary-lambda-assignment
  lines = [
      f"topology {report.get('topology', '-')}: {report['num_devices']} x {report['device_kind']} "
      f"({report['devices_per_chip']} per chip), {report['num_hosts']} hosts, mesh {report['mesh']}",
      f"{report['num_slices']} slice(s); " + (", ".join(
          f"{a} crosses DCN ({n} slices)" for a, n in report["dcn_axes"].items())
          if report["dcn_axes"] else "no mesh axis crosses DCN"),
      f"global batch {report['global_batch_size']} clips x {report['window_frames']} frames "
      f"({report['clips_per_device']:g} per device), dtype {report['dtype']}, "
      f"scan_layers={report['scan_layers']}, remat_policy={report['remat_policy']}",
      f"HBM per device {report['hbm_bytes_per_device'] / GIB:.1f} GiB, required headroom "
      f"{100 * report['min_headroom']:.0f} %",
      "state per device (GiB): " + ", ".join(
          f"{k} {v / GIB:.3f}" for k, v in report["state_bytes_per_device"].items()),
      "",
      f"{'MiB per device':<18} {'args':>9} {'output':>9} {'alias':>9} {'temp':>9} {'code':>9} "
      f"{'total':>9} {'xla_peak':>9} {'headroom':>8} {'fits':>5} {'compile_s':>9} {'GFLOP/dev':>10}",
  ]
  for name, f in report["functions"].items():
    if "error" in f:
      lines.append(f"{name:<18} does not compile: {f['error']}")
      continue
    m = f["memory"]
    lines.append(
        f"{name:<18} {g(m['argument'])} {g(m['output'])} {g(m['alias'])} {g(m['temp'])} "
        f"{g(m['generated_code'])} {g(m['total'])} {g(m['xla_peak'])} {100 * f['headroom']:7.1f}% "
        f"{'yes' if f['fits'] else 'NO':>5} {f['compile_seconds']:9.1f} "
        f"{f['flops_per_device'] / 1e9:10.1f}")
  fl = report["flops"]
  lines += [
      "",
      f"train step FLOPs: analytical {fl['analytical_per_step']:.4g} per step = "
      f"{fl['analytical_per_device']:.4g} per device; compiled {fl['compiled_per_device']:.4g} "
      f"per device (compiled / analytical = {fl['compiled_over_analytical']:.3f})",
  ]
  if "contrastive" in report:
    c = report["contrastive"]
    lines.append(
        f"contrastive: {c['negatives']} negatives, {c['candidates_per_anchor']} candidates per "
        f"anchor; logits {c['logits_flops_per_step']:.4g} FLOPs per step (forward + backward), "
        f"positive sets {c['positives_flops_per_step']:.4g} "
        f"({100 * c['fraction_of_analytical']:.2g} % of the analytical count)")
  if report["scan_layers"]:
    lines.append("  (scan_layers: XLA counts each scanned stack's body once; compile with "
                 "--config.model.scan_layers=False to compare FLOPs)")
  if "step_seconds_at_mfu" in report:
    lines.append("step time implied by the analytical FLOPs: " + ", ".join(
        f"{s:.3f} s at {100 * float(mfu):.0f} % MFU" for mfu, s in report["step_seconds_at_mfu"].items())
        + f" (peak {report['peak_flops_per_device'] / 1e12:.0f} TFLOP/s per device)")
  frozen = report["replicated_frozen_bytes"] / GIB
  lines.append(f"frozen encoder replicated on every device: {frozen:.3f} GiB")
  for p in report["replicated_parameters"]:
    lines.append(f"REPLICATED on the fsdp mesh: {p['name']} {p['shape']} ({p['bytes'] / 2**20:.1f} MiB)")
  lines.append("OK" if report["ok"] else "FAILED: " + ", ".join(
      ([] if report["fits"] else ["does not fit"])
      + (["large parameters replicated"] if report["replicated_parameters"] else [])))
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _TOPOLOGY.value:
    raise app.UsageError("--topology is required, e.g. --topology=v5p:4x4x8")
  devices = topology_devices(_TOPOLOGY.value, _NUM_SLICES.value)
  config = _CONFIG.value
  if _CLIPS_PER_CHIP.value > 0:
    config.data.global_batch_size = _CLIPS_PER_CHIP.value * (len(devices) // devices_per_chip(devices))
  report = compile_report(
      config, devices, hbm_bytes=int(_HBM_GIB.value * GIB) or None, min_headroom=_MIN_HEADROOM.value,
      max_replicated_bytes=int(_MAX_REPLICATED_MIB.value * 2 ** 20), compile_eval=_EVAL.value)
  report = {"topology": _TOPOLOGY.value, **report}
  print(format_report(report))
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, "w") as f:
      json.dump(report, f, indent=1, sort_keys=True)
  if not report["ok"]:
    sys.exit(1)


def run():
  """Console-script entry point (`synclipmae-aot`)."""
  flags.mark_flags_as_required(["config"])
  command_line.run(main, __name__)


if __name__ == "__main__":
  run()
