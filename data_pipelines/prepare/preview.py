r"""Renders prepared clips for a person to check: frames, face-weight map, boxes, waveform.

  python -m data_pipelines.prepare.preview --shards 'data/prepared/train-*.array_record' \
      --output previews/ --num_clips 4 --mp4

For each clip, a PNG shows a row of frames spread over the clip with the face-preserving
keep weights (`data_pipelines.face_weights`, the map the training masks with; the weight of
each region is a flag, by default the training's: mouth, then lower face, then face)
overlaid as a heat map, the face box (white) and the mouth box (red), and under them the
audio waveform of the whole clip with the 40 ms window of each shown frame shaded. With
--mp4, the clip is also written as a 25 fps video with the overlay and its audio (AAC), to
hear lip sync.
"""

from __future__ import annotations

import argparse
import glob
import os
from typing import Mapping

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from data_pipelines import face_weights  # pylint: disable=wrong-import-position
from data_pipelines import grain_pipeline  # pylint: disable=wrong-import-position
from data_pipelines import schema  # pylint: disable=wrong-import-position
from data_pipelines.prepare import encode  # pylint: disable=wrong-import-position


def weight_maps(clip: dict, patch: int,
                weights: Mapping[str, float] = face_weights.DEFAULT_WEIGHTS) -> np.ndarray:
  """Face-preserving keep weights of every frame, upsampled to pixels: float [N, H, W].

  `weights` holds the keep weight of each region (the keywords of `face_weights.patch_weights`).
  """
  size = clip["frames"].shape[1]
  if size % patch:
    raise ValueError(f"frame size {size} is not a multiple of patch {patch}")
  grid = size // patch
  w = face_weights.patch_weights(clip["face_boxes"], clip["mouth_boxes"], grid, **weights)
  return w.reshape(-1, grid, grid).repeat(patch, axis=1).repeat(patch, axis=2)


def _overlay(frame: np.ndarray, weight: np.ndarray, vmax: float) -> np.ndarray:
  """Blends a colour map of `weight` over an RGB frame (uint8 result)."""
  heat = plt.get_cmap("inferno")(np.clip(weight / vmax, 0, 1))[..., :3] * 255
  return (0.55 * frame + 0.45 * heat).astype(np.uint8)


def render_png(clip: dict, path: str, *, num_frames: int = 6, patch: int = 8,
               weights: Mapping[str, float] = face_weights.DEFAULT_WEIGHTS) -> None:
  """Writes the frames + weight map + boxes + waveform figure of one clip to `path`."""
  frames, audio = clip["frames"], clip["audio"]
  n, size = len(frames), frames.shape[1]
  maps = weight_maps(clip, patch, weights)
  shown = np.linspace(0, n - 1, min(num_frames, n)).round().astype(int)
  fig = plt.figure(figsize=(2.2 * len(shown), 4.2), dpi=100)
  grid = fig.add_gridspec(2, len(shown), height_ratios=(2.2, 1.0))
  for col, t in enumerate(shown):
    ax = fig.add_subplot(grid[0, col])
    ax.imshow(_overlay(frames[t], maps[t], maps.max()))
    for box, colour in ((clip["face_boxes"][t], "white"), (clip["mouth_boxes"][t], "red")):
      x0, y0, x1, y1 = box * size
      ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=colour, lw=1))
    ax.set_title(f"frame {t} ({t / schema.FPS:.2f} s)", fontsize=8)
    ax.axis("off")
  ax = fig.add_subplot(grid[1, :])
  seconds = np.arange(len(audio)) / schema.SAMPLE_RATE
  ax.plot(seconds, audio, lw=0.4, color="black")
  for t in shown:
    ax.axvspan(t / schema.FPS, (t + 1) / schema.FPS, color="tab:orange", alpha=0.5)
  ax.set_xlim(0, n / schema.FPS)
  ax.set_ylim(-1, 1)
  ax.set_xlabel("seconds (shaded: the audio of the frames shown)", fontsize=8)
  ax.tick_params(labelsize=7)
  fig.suptitle(f"clip {clip['clip_id']}  identity {clip['identity_id']}  {n} frames  "
               f"{size}x{size}", fontsize=9)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def render_mp4(clip: dict, path: str, *, patch: int = 8,
               weights: Mapping[str, float] = face_weights.DEFAULT_WEIGHTS) -> None:
  """Writes the clip with its weight-map overlay and its audio as an H.264 + AAC mp4."""
  frames, maps = clip["frames"], weight_maps(clip, patch, weights)
  size = frames.shape[1] + frames.shape[1] % 2  # yuv420p needs even sides
  images = np.zeros((len(frames), size, size, 3), np.uint8)
  for image, frame, weight in zip(images, frames, maps):
    image[:frame.shape[0], :frame.shape[1]] = _overlay(frame, weight, maps.max())
  encode.write_video(path, images, clip["audio"], fps=schema.FPS, sample_rate=schema.SAMPLE_RATE)


def main(argv: list[str] | None = None) -> list[str]:
  """Renders the first --num_clips clips of the shards; returns the files written."""
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--shards", required=True, help="glob of ArrayRecord shards")
  p.add_argument("--output", required=True, help="folder for the PNG (and mp4) files")
  p.add_argument("--num_clips", type=int, default=4)
  p.add_argument("--num_frames", type=int, default=6, help="frames shown per clip")
  p.add_argument("--patch", type=int, default=8, help="patch size of the weight map")
  for region, weight in face_weights.DEFAULT_WEIGHTS.items():
    p.add_argument(f"--{region}_weight", type=float, default=weight,
                   help=f"keep weight of a patch inside the {region} region")
  p.add_argument("--mp4", action="store_true", help="also write an mp4 per clip")
  a = p.parse_args(argv)
  weights = {region: getattr(a, f"{region}_weight") for region in face_weights.DEFAULT_WEIGHTS}
  paths = sorted(glob.glob(a.shards))
  if not paths:
    raise ValueError(f"no shard matches {a.shards!r}")
  os.makedirs(a.output, exist_ok=True)
  written = []
  for clip in grain_pipeline.load_eval_clips(paths, max_clips=a.num_clips):
    base = os.path.join(a.output, f"clip_{clip['clip_id']}")
    render_png(clip, base + ".png", num_frames=a.num_frames, patch=a.patch, weights=weights)
    written.append(base + ".png")
    if a.mp4:
      render_mp4(clip, base + ".mp4", patch=a.patch, weights=weights)
      written.append(base + ".mp4")
  print("\n".join(written))
  return written


def run() -> None:
  """Console-script entry point (`synclipmae-preview`)."""
  main()


if __name__ == "__main__":
  run()
