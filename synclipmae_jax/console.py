"""Quiet by default: the console shows a config summary, one progress line per log period
and evaluation results; library logging (absl INFO: orbax, clu, grain, ...) goes to
`workdir/log.txt`. absl's `--alsologtostderr` brings all of it back to the console.
"""

from __future__ import annotations

import os
import sys

from absl import flags, logging
import jax

LOG_FILE = "log.txt"
LOSS_PREFIX = "loss/"


def log_to_workdir(files) -> str:
  """Sends absl logging (and the libraries logging through it) to `log.txt` in the local folder of
  the workdir's `storage.Mirror` `files` (the workdir, or the local copy of a bucket's, where an
  earlier launch's log is fetched to be continued); warnings and errors still reach the console."""
  name = LOG_FILE if jax.process_index() == 0 else f"log.process{jax.process_index()}.txt"
  files.fetch(name)
  path = os.path.join(files.local, name)
  handler = logging.get_absl_handler().python_handler
  if flags.FLAGS.is_parsed() and not flags.FLAGS.logtostderr:
    handler.stream = open(path, "a", encoding="utf-8")  # pylint: disable=consider-using-with
    flags.FLAGS.stderrthreshold = "warning"
  return path


def show(text: str) -> None:
  """One line (or block) on the console, from process 0 only."""
  if jax.process_index() == 0:
    print(text, file=sys.stdout, flush=True)


def config_summary(config, exp, log_path: str) -> str:
  m = config.model
  return (f"SyncLipMAE: encoder {m.encoder_size} ({exp.num_params / 1e6:.2f}M trainable), "
          f"decoder {m.decoder.width}x{m.decoder.depth}, audio {m.audio.frontend} "
          f"({exp.num_frozen / 1e6:.2f}M frozen), {m.image_size}px/{m.patch_size}, "
          f"masking {config.masking.mode}\n"
          f"{config.data.global_batch_size} clips x {config.data.window_frames} frames per step, "
          f"{config.num_train_steps} steps, mesh {dict(exp.mesh.shape)}, "
          f"{exp.step_flops / 1e9:.1f} GFLOP/step; log: {log_path}")


def progress_line(step: int, total: int, means: dict) -> str:
  """`step 500/3000 | 3.40 steps/s, ETA 12.3 min | 123 TFLOP/s/device, MFU 44.7%, input wait
  0.3%, mem 11.2/13.9 GiB | loss 1.234: recon_video 0.1 ...`: the chips' use (progress.Chrono)
  after the speed; MFU and device memory (in use / peak) only where known."""
  parts = [f"step {step}/{total}"]
  if "perf/steps_per_sec" in means:
    parts.append(f"{means['perf/steps_per_sec']:.2f} steps/s, "
                 f"ETA {means['perf/eta_seconds'] / 60:.1f} min")
    use = []
    if "perf/tflops_per_sec_per_device" in means:
      use.append(_flops(means["perf/tflops_per_sec_per_device"] * 1e12) + "/device")
    if "perf/mfu" in means:
      use.append(f"MFU {100 * means['perf/mfu']:.3g}%")
    use.append(f"input wait {100 * means['perf/input_wait_fraction']:.2g}%")
    if "perf/device_memory_gib" in means:
      peak = means.get("perf/device_memory_peak_gib")
      peak = "" if peak is None else f"/{peak:.1f}"
      use.append(f"mem {means['perf/device_memory_gib']:.1f}{peak} GiB")
    parts.append(", ".join(use))
  terms = " ".join(f"{k.removeprefix(LOSS_PREFIX)} {v:.4g}" for k, v in means.items()
                   if k.startswith(LOSS_PREFIX) and k != "loss/total")
  if "loss/total" in means:
    parts.append(f"loss {means['loss/total']:.4g}: {terms}")
  return " | ".join(parts)


def _flops(per_second: float) -> str:
  """`123 TFLOP/s` from a TFLOP/s on, `41.5 GFLOP/s` below (a CPU's)."""
  if per_second >= 1e12:
    return f"{per_second / 1e12:.3g} TFLOP/s"
  return f"{per_second / 1e9:.3g} GFLOP/s"


def eval_line(step: int, name: str, metrics: dict) -> str:
  return f"eval {name} @ {step}: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(metrics.items()))
