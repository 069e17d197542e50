r"""The sync score of a video, e.g. a dubbed one (paper 5, video dubbing, Table 4):
`synclipmae-dub-score`.

  synclipmae-dub-score --synclipmae=/tmp/demo-torch --video=dubbed.mp4 --video=talk.mp4 \
      [--syncnet=/ckpt/syncnet_v2.model] [--wav2vec2=/ckpt/wav2vec2-base] [--report=score.json]

Each video goes through the training data's preparation (`data_pipelines.prepare`: 25 fps and
16 kHz, face detection and tracking, crops at the exported model's image size) and every prepared
clip is scored:

- SyncLipMAE (the exported folder's `SyncTokenizer`, no JAX): the cosine distance between each
  frame's audio token and the vocal-motion tokens of the frames at lags -15..+15 (the sync suite's
  `sync_metrics.lag_distance_matrix`), on the frames that have all their neighbours. `sync_c` is
  the paper's Sync-C (Table 4) on these tokens: the confidence of each window of 5 frames (the
  median minus the minimum of its distance-vs-lag curve, every start) averaged over the windows;
  `in_sync` is the fraction of windows whose minimum lies within +-1 frame of lag 0; `offset` and
  `confidence` are those of the whole video's curve (> 0: the video lags the audio).
- SyncNet (`--syncnet`: the public `syncnet_v2.model`, or any file in its layout): offset, LSE-D
  and LSE-C with the public code's conventions (`syncnet.evaluate`) on 224 px BGR crops of the
  same face track. The video is prepared once, at the larger of the model's size and 224 px, and
  resized for the other with the preparation's filter (`at_size`), so face detection runs once;
  the model then sees its frames resized from the 224 px crops (JPEG-compressed at that size)
  rather than cropped from the source at its size as in training. The crop side
  is 1.4 times the face box's (the preparation's default margin 0.2, as the public pipeline's crop
  scale 0.4) but centred on the box, where the public crop runs from the box's top to 0.4 sides
  below its bottom (0.2 sides lower), and the boxes come from MTCNN instead of S3FD: compare LSE
  figures between videos scored by this command, and with published ones only as orientation.

A video's figures are its clips' weighted by their windows (the whole curve: by frames). A video
that cannot be prepared is listed with the reason and the others are still scored.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import numpy as np
import torch

from data_pipelines import audio_windows, grain_pipeline
from data_pipelines.prepare import crop, face_detector, prepare, process
from synclipmae_jax import sync_metrics
from synclipmae_torch import syncnet, tokens as tokens_lib
from synclipmae_jax import command_line

MAX_LAG = 15  # lags -15..+15, as SyncNet's offsets
WINDOW = 5  # frames per window of Sync-C: SyncNet's video window


@dataclasses.dataclass(frozen=True)
class Preparation:
  """How videos are prepared: the face detector ("mtcnn", "whole_frame" for face crops, or
  "module:Class") and the crop margin (crop side = (1 + 2 margin) x the face box)."""

  detector: str = face_detector.DEFAULT
  margin: float = process.PrepareOptions.margin


def synclipmae_clip(tokenizer: tokens_lib.SyncTokenizer, clip: dict, *, max_lag: int = MAX_LAG,
                    window: int = WINDOW) -> dict | None:
  """One prepared clip's SyncLipMAE figures (see the module docstring), or None when it has fewer
  than 2 max_lag + window frames."""
  with torch.no_grad():
    out = tokenizer(clip["frames"], clip["face_boxes"], clip["mouth_boxes"],
                    torch.from_numpy(clip["audio"]))
  audio, vocal = out["audio"].float().cpu().numpy(), out["vocal"].float().cpu().numpy()
  frames = len(audio)
  if frames < 2 * max_lag + window:
    return None
  dist = sync_metrics.lag_distance_matrix(audio[max_lag:frames - max_lag], vocal, max_lag)
  estimates = sync_metrics.window_lag_estimates(dist, window, max_lag)
  confidences = sync_metrics.window_confidences(dist, window, max_lag)
  return {"frames": frames, "windows": len(confidences), "sync_c": float(confidences.mean()),
          "in_sync": float(np.mean(np.abs(estimates) <= 1)), "curve": dist.mean(axis=1)}


def syncnet_clip(model: syncnet.SyncNet, clip: dict) -> syncnet.LseResult | None:
  """One prepared 224 px clip's SyncNet figures, or None when it is too short for a window."""
  if len(clip["frames"]) <= syncnet.WINDOW_FRAMES:
    return None
  samples = np.round(clip["audio"] * audio_windows.INT16_SCALE).astype(np.int16)
  return syncnet.evaluate(model, clip["frames"][..., ::-1], samples)  # RGB -> BGR, as cv2 reads


def at_size(clips: list[dict], size: int) -> list[dict]:
  """The prepared clips with their square frames resized to size x size by the preparation's own
  resampling (`crop.crop_frame` over the whole frame); the same clips when already that size."""
  if not clips or clips[0]["frames"].shape[1] == size:
    return clips
  return [dict(c, frames=np.stack([crop.crop_frame(f, np.array([0.0, 0.0, f.shape[1], f.shape[0]]),
                                                   size) for f in c["frames"]]))
          for c in clips]


def _weighted(parts: list[dict], key: str, weight: str = "windows") -> float:
  return float(sum(p[key] * p[weight] for p in parts) / sum(p[weight] for p in parts))


def _synclipmae_video(parts: list[dict]) -> dict:
  curve = sum(p["curve"] * p["frames"] for p in parts) / sum(p["frames"] for p in parts)
  whole = sync_metrics.curve_estimate(curve, MAX_LAG)
  return {"sync_c": _weighted(parts, "sync_c"), "in_sync": _weighted(parts, "in_sync"),
          "windows": sum(p["windows"] for p in parts), "offset": whole["estimate"],
          "confidence": whole["confidence"], "lags": whole["lags"], "distance": whole["distance"]}


def _syncnet_video(parts: list[syncnet.LseResult]) -> dict:
  windows = sum(p.num_windows for p in parts)
  curve = sum(p.mean_distances * p.num_windows for p in parts) / windows
  best = int(np.argmin(curve))
  return {"lse_d": sum(p.lse_d * p.num_windows for p in parts) / windows,
          "lse_c": sum(p.lse_c * p.num_windows for p in parts) / windows,
          "offset": syncnet.MAX_OFFSET - best, "windows": windows}


class Scorer:
  """The exported SyncLipMAE (and SyncNet) loaded once; `scorer(video)` -> one video's report.

  Args:
    synclipmae: a `synclipmae-export` folder.
    wav2vec2: the local wav2vec 2.0 directory the run was trained with (its front end only).
    syncnet_weights: SyncNet's weights (`syncnet.load_syncnet`), or None for no LSE figures.
    preparation: how videos are prepared.
  """

  def __init__(self, synclipmae: str, *, wav2vec2: str | None = None,
               syncnet_weights: str | None = None, preparation: Preparation = Preparation()):
    self.tokenizer = tokens_lib.SyncTokenizer.from_pretrained(synclipmae, wav2vec2)
    self.syncnet = syncnet.load_syncnet(syncnet_weights) if syncnet_weights else None
    self.preparation = preparation

  def _clips(self, video: str, folder: str, size: int) -> list[dict]:
    options = process.PrepareOptions(image_size=size, margin=self.preparation.margin)
    paths, _ = prepare.prepare_video(video, folder, options, self.preparation.detector)
    return grain_pipeline.load_eval_clips(paths)

  def __call__(self, video: str) -> dict:
    size = self.tokenizer.image_size
    if self.syncnet is not None:
      size = max(size, syncnet.CROP)
    with tempfile.TemporaryDirectory() as scratch:
      prepared = self._clips(video, scratch, size)
    clips = at_size(prepared, self.tokenizer.image_size)
    parts = [p for p in (synclipmae_clip(self.tokenizer, c) for c in clips) if p is not None]
    if not parts:
      raise prepare.NothingKept(f"{video}: no prepared clip has the {2 * MAX_LAG + WINDOW} frames "
                                "a score needs")
    report = {"video": os.path.abspath(video), "frames": sum(len(c["frames"]) for c in clips),
              "clips": len(clips), "synclipmae": _synclipmae_video(parts)}
    if self.syncnet is not None:
      lse = [r for r in (syncnet_clip(self.syncnet, c) for c in at_size(prepared, syncnet.CROP))
             if r is not None]
      report["syncnet"] = _syncnet_video(lse) if lse else None
    return report


def score_videos(videos: list[str], scorer: Scorer) -> dict:
  """{"videos": [report per scored video], "failed": [{"video", "reason"}]}."""
  scored, failed = [], []
  for video in videos:
    try:
      scored.append(scorer(video))
    except prepare.NothingKept as e:
      failed.append({"video": os.path.abspath(video), "reason": str(e)})
  return {"videos": scored, "failed": failed}


def markdown(report: dict) -> str:
  """The report as a table (one row per video, then the videos that could not be scored)."""
  lines = ["| video | frames | SyncLipMAE Sync-C | in sync (+-1) | offset / confidence | "
           "SyncNet LSE-C | LSE-D | offset |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
  for v in report["videos"]:
    s, n = v["synclipmae"], v.get("syncnet")
    lse = (f"{n['lse_c']:.3f} | {n['lse_d']:.3f} | {n['offset']:+d}" if n else "- | - | -")
    lines.append(f"| {os.path.basename(v['video'])} | {v['frames']} | {s['sync_c']:.4f} | "
                 f"{100 * s['in_sync']:.1f} % | {s['offset']:+d} / {s['confidence']:.4f} | {lse} |")
  lines += [f"\nnot scored: {f['video']}: {f['reason']}" for f in report["failed"]]
  return "\n".join(lines)


def run() -> None:
  """Command line (`python -m synclipmae_torch.dub_score`, console script `synclipmae-dub-score`)."""
  from absl import flags  # pylint: disable=import-outside-toplevel

  flags.DEFINE_multi_string("video", None, "A video to score (repeat for several).")
  flags.DEFINE_string("synclipmae", None, "A synclipmae-export folder.")
  flags.DEFINE_string("wav2vec2", None, "The run's local wav2vec 2.0 directory (that front end only).")
  flags.DEFINE_string("syncnet", None, "SyncNet's weights (syncnet_v2.model) for LSE-C / LSE-D.")
  prepare.define_video_preparation_flags(flags)
  flags.DEFINE_string("report", "", "Write the JSON report here.")
  flags.mark_flags_as_required(["video", "synclipmae"])

  def main(argv):
    del argv
    f = flags.FLAGS
    scorer = Scorer(f.synclipmae, wav2vec2=f.wav2vec2, syncnet_weights=f.syncnet,
                    preparation=Preparation(f.detector, f.crop_margin))
    report = score_videos(f.video, scorer)
    print(markdown(report))
    if f.report:
      with open(f.report, "w") as out:
        json.dump(report, out, indent=1)
    if not report["videos"]:
      raise SystemExit("synclipmae-dub-score: no video could be scored")

  command_line.run(main, __name__)


if __name__ == "__main__":
  run()
