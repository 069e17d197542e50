r"""The sync score of a video, e.g. a dubbed one (paper 5, video dubbing, Table 4):
`synclipmae-dub-score`.

  synclipmae-dub-score --synclipmae=/tmp/demo-torch --video=dubbed.mp4 --video=talk.mp4 \
      [--syncnet=/ckpt/syncnet_v2.model] [--stable_syncnet=/ckpt/stable_syncnet.pt] \
      [--reference=real.mp4 --fid_inception=/ckpt/pt_inception-2015-12-05-6726825d.pth \
       --i3d=/ckpt/i3d_pretrained_400.pt] [--wav2vec2=/ckpt/wav2vec2-base] [--report=score.json]

Each video goes through the training data's preparation (`data_pipelines.prepare`: 25 fps and
16 kHz, face detection and tracking, crops at the largest size an evaluator takes, resized for the
others) and every prepared clip is scored:

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

- StableSyncNet (`--stable_syncnet`: LatentSync's `stable_syncnet.pt`), the sync evaluator of the
  paper's Table 4: `stable_syncnet.distance_matrix` on the face crops resized to 256 px (lower
  half) and the clip's mel; `sync_c` is the mean over 16-frame windows of the median minus the
  minimum of each window's distance-vs-offset curve (-15..+15), `offset` that of the whole video's
  mean curve, in the sign convention above.
- FID and FVD (`--fid_inception`, `--i3d`, with `--reference`: the real videos to compare with):
  the Fréchet distance (`frechet`) between the scored videos' and the reference videos' features,
  one figure per set as in Table 4: FID on every face-crop frame (`fid_inception`: pytorch-fid's
  Inception-v3 pool features), FVD on the consecutive non-overlapping 16-frame clips of each
  prepared clip (`i3d`: the Kinetics-400 I3D logits of the common FVD code). Both see the face
  crops at 256 px (`QUALITY_SIZE`, whichever other evaluators run), and the reference videos are
  prepared like the scored ones, so both sets are face crops of the same framing and size.

All weights are the user's local files, read without unpickling objects; nothing is downloaded.
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
from synclipmae_torch import fid_inception, frechet, i3d, stable_syncnet, syncnet
from synclipmae_torch import tokens as tokens_lib
from synclipmae_jax import command_line

MAX_LAG = 15  # lags -15..+15, as SyncNet's offsets
WINDOW = 5  # frames per window of Sync-C: SyncNet's video window
QUALITY_SIZE = 256  # side of the face crops FID and FVD see, whichever other evaluators run


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


def stable_syncnet_clip(model: stable_syncnet.StableSyncNet, clip: dict) -> dict | None:
  """One prepared 256 px clip's StableSyncNet figures, or None when no window has all its
  offsets."""
  dist = stable_syncnet.distance_matrix(model, clip["frames"], clip["audio"])
  if not len(dist):
    return None
  return {"windows": len(dist), "sync_c": float(stable_syncnet.window_confidences(dist).mean()),
          "curve": dist.mean(axis=0)}


def _stable_syncnet_video(parts: list[dict]) -> dict:
  windows = sum(p["windows"] for p in parts)
  curve = sum(p["curve"] * p["windows"] for p in parts) / windows
  # distance_matrix pairs the video at s with the audio at s + lag: the tokens' lag is its negative
  return {"sync_c": _weighted(parts, "sync_c"), "windows": windows,
          "offset": -(int(np.argmin(curve)) - stable_syncnet.MAX_LAG)}


def clips_of(clips: list[dict], length: int = i3d.FRAMES) -> np.ndarray:
  """The consecutive non-overlapping clips of `length` frames of each prepared clip
  (N, length, H, W, 3): FVD's samples."""
  parts = [c["frames"][i:i + length] for c in clips
           for i in range(0, len(c["frames"]) - length + 1, length)]
  shape = (0, length) + (clips[0]["frames"].shape[1:] if clips else (0, 0, 3))
  return np.stack(parts) if parts else np.zeros(shape, np.uint8)


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


@dataclasses.dataclass(frozen=True)
class Evaluators:
  """The local weight files of the other evaluators (None: that figure is not computed)."""

  syncnet: str | None = None  # SyncNet's syncnet_v2.model: LSE-C / LSE-D
  stable_syncnet: str | None = None  # LatentSync's stable_syncnet.pt: Table 4's Sync-C
  fid_inception: str | None = None  # pytorch-fid's pt_inception-2015-12-05-6726825d.pth: FID
  i3d: str | None = None  # the FVD code's i3d_pretrained_400.pt: FVD


class Scorer:
  """The exported SyncLipMAE and the evaluators loaded once; `scorer(video)` -> one video's
  report, `scorer.score(video)` -> (report, its FID / FVD features).

  Args:
    synclipmae: a `synclipmae-export` folder.
    wav2vec2: the local wav2vec 2.0 directory the run was trained with (its front end only).
    preparation: how videos are prepared.
    evaluators: the other evaluators' weights.
  """

  def __init__(self, synclipmae: str, *, wav2vec2: str | None = None,
               preparation: Preparation = Preparation(), evaluators: Evaluators = Evaluators()):
    self.tokenizer = tokens_lib.SyncTokenizer.from_pretrained(synclipmae, wav2vec2)
    self.syncnet = syncnet.load_syncnet(evaluators.syncnet) if evaluators.syncnet else None
    self.stable_syncnet = (stable_syncnet.load(evaluators.stable_syncnet)
                           if evaluators.stable_syncnet else None)
    self.fid_inception = (fid_inception.load(evaluators.fid_inception)
                          if evaluators.fid_inception else None)
    self.i3d = i3d.load(evaluators.i3d) if evaluators.i3d else None
    self.preparation = preparation

  @property
  def quality(self) -> bool:
    """Whether FID or FVD is computed (they need reference videos)."""
    return self.fid_inception is not None or self.i3d is not None

  def _size(self) -> int:
    """The preparation's crop size: the largest any evaluator takes (the others are resized)."""
    size = max(self.tokenizer.image_size, QUALITY_SIZE if self.quality else 0)
    if self.syncnet is not None:
      size = max(size, syncnet.CROP)
    if self.stable_syncnet is not None:
      size = max(size, stable_syncnet.FACE)
    return size

  def _prepared(self, video: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as scratch:
      return self._clips(video, scratch, self._size())

  def features(self, prepared: list[dict]) -> dict:
    """{"fid": (frames, D), "fvd": (clips, 400)} of prepared clips (at `QUALITY_SIZE`), for the
    loaded networks."""
    clips, out = at_size(prepared, QUALITY_SIZE), {}
    if self.fid_inception is not None:
      frames = np.concatenate([c["frames"] for c in clips]) if clips else np.zeros((0, 1, 1, 3))
      out["fid"] = fid_inception.frame_features(self.fid_inception, frames)
    if self.i3d is not None:
      out["fvd"] = i3d.clip_features(self.i3d, clips_of(clips))
    return out

  def reference_features(self, video: str) -> dict:
    """A reference (real) video's FID / FVD features, prepared as the scored videos are."""
    return self.features(self._prepared(video))

  def _clips(self, video: str, folder: str, size: int) -> list[dict]:
    options = process.PrepareOptions(image_size=size, margin=self.preparation.margin)
    paths, _ = prepare.prepare_video(video, folder, options, self.preparation.detector)
    return grain_pipeline.load_eval_clips(paths)

  def __call__(self, video: str) -> dict:
    return self.score(video)[0]

  def score(self, video: str) -> tuple[dict, dict]:
    """(the video's report, its FID / FVD features)."""
    prepared = self._prepared(video)
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
    if self.stable_syncnet is not None:
      stable = [r for r in (stable_syncnet_clip(self.stable_syncnet, c)
                            for c in at_size(prepared, stable_syncnet.FACE)) if r is not None]
      report["stable_syncnet"] = _stable_syncnet_video(stable) if stable else None
    return report, self.features(prepared)


def quality(scored: list[dict], reference: list[dict]) -> dict:
  """{"fid": {...}, "fvd": {...}}: the Fréchet distance between the scored videos' features and
  the reference videos' (each set pooled over its videos), with the sample counts; a distance is
  None when a set has fewer than 2 samples."""
  out = {}
  for key in sorted(set().union(*scored, *reference)):
    a = np.concatenate([f[key] for f in scored]) if scored else np.zeros((0, 1))
    b = np.concatenate([f[key] for f in reference]) if reference else np.zeros((0, 1))
    value = frechet.features_distance(a, b) if min(len(a), len(b)) >= 2 else None
    out[key] = {"value": value, "samples": len(a), "reference_samples": len(b)}
  return out


def check_references(references, quality: bool) -> None:
  """Raises ValueError unless reference videos come with FID / FVD weights and vice versa."""
  if quality != bool(references):
    raise ValueError("FID / FVD compare the scored videos with real ones: give both --reference "
                     "videos and --fid_inception / --i3d weights" if references else
                     "FID / FVD need --reference videos (the real videos to compare with)")


def score_videos(videos: list[str], scorer: Scorer, references: list[str] = ()) -> dict:
  """{"videos": [report per scored video], "failed": [{"video", "reason"}]}, and with FID / FVD
  networks loaded, "quality" (`quality`) against the `references` and "references" (those
  used); a reference that cannot be prepared is listed in "failed" too.

  Raises:
    ValueError: FID / FVD networks loaded without references, or references without them.
  """
  check_references(references, scorer.quality)
  scored, failed, features, reference_features, used = [], [], [], [], []
  for video in videos:
    try:
      report, video_features = scorer.score(video)
    except prepare.NothingKept as e:
      failed.append({"video": os.path.abspath(video), "reason": str(e)})
      continue
    scored.append(report)
    features.append(video_features)
  for video in references:
    try:
      reference_features.append(scorer.reference_features(video))
      used.append(os.path.abspath(video))
    except prepare.NothingKept as e:
      failed.append({"video": os.path.abspath(video), "reason": f"reference: {e}"})
  result = {"videos": scored, "failed": failed}
  if scorer.quality:
    result["quality"] = quality(features, reference_features)
    result["references"] = used
  return result


def markdown(report: dict) -> str:
  """The report as a table (one row per video, then the videos that could not be scored)."""
  lines = ["| video | frames | SyncLipMAE Sync-C | in sync (+-1) | offset / confidence | "
           "SyncNet LSE-C | LSE-D | offset | StableSyncNet Sync-C | offset |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for v in report["videos"]:
    s, n, st = v["synclipmae"], v.get("syncnet"), v.get("stable_syncnet")
    lse = (f"{n['lse_c']:.3f} | {n['lse_d']:.3f} | {n['offset']:+d}" if n else "- | - | -")
    stable = f"{st['sync_c']:.4f} | {st['offset']:+d}" if st else "- | -"
    lines.append(f"| {os.path.basename(v['video'])} | {v['frames']} | {s['sync_c']:.4f} | "
                 f"{100 * s['in_sync']:.1f} % | {s['offset']:+d} / {s['confidence']:.4f} | {lse} | "
                 f"{stable} |")
  for key, name, unit in (("fid", "FID", "frames"), ("fvd", "FVD", "16-frame clips")):
    q = report.get("quality", {}).get(key)
    if q is not None:
      value = "-" if q["value"] is None else f"{q['value']:.3f}"
      lines.append(f"\n{name}: {value} ({q['samples']} {unit} of the scored videos against "
                   f"{q['reference_samples']} of {len(report['references'])} reference videos)")
  lines += [f"\nnot scored: {f['video']}: {f['reason']}" for f in report["failed"]]
  return "\n".join(lines)


def run() -> None:
  """Command line (`python -m synclipmae_torch.dub_score`, console script `synclipmae-dub-score`)."""
  from absl import flags  # pylint: disable=import-outside-toplevel

  flags.DEFINE_multi_string("video", None, "A video to score (repeat for several).")
  flags.DEFINE_string("synclipmae", None, "A synclipmae-export folder.")
  flags.DEFINE_string("wav2vec2", None, "The run's local wav2vec 2.0 directory (that front end only).")
  flags.DEFINE_string("syncnet", None, "SyncNet's weights (syncnet_v2.model) for LSE-C / LSE-D.")
  flags.DEFINE_string("stable_syncnet", None, "LatentSync's StableSyncNet weights "
                      "(stable_syncnet.pt) for the paper's Sync-C (Table 4).")
  flags.DEFINE_string("fid_inception", None, "pytorch-fid's Inception-v3 weights "
                      "(pt_inception-2015-12-05-6726825d.pth) for FID; needs --reference.")
  flags.DEFINE_string("i3d", None, "The FVD code's Kinetics-400 I3D weights "
                      "(i3d_pretrained_400.pt) for FVD; needs --reference.")
  flags.DEFINE_multi_string("reference", [], "A real video that FID / FVD compare the scored "
                            "videos with (repeat for several).")
  prepare.define_video_preparation_flags(flags)
  flags.DEFINE_string("report", "", "Write the JSON report here.")
  flags.mark_flags_as_required(["video", "synclipmae"])

  def main(argv):
    del argv
    f = flags.FLAGS
    try:  # before any network is loaded
      check_references(f.reference, bool(f.fid_inception or f.i3d))
    except ValueError as e:
      raise SystemExit(f"synclipmae-dub-score: {e}") from e
    scorer = Scorer(f.synclipmae, wav2vec2=f.wav2vec2,
                    preparation=Preparation(f.detector, f.crop_margin),
                    evaluators=Evaluators(f.syncnet, f.stable_syncnet, f.fid_inception, f.i3d))
    report = score_videos(f.video, scorer, f.reference)
    print(markdown(report))
    if f.report:
      with open(f.report, "w") as out:
        json.dump(report, out, indent=1)
    if not report["videos"]:
      raise SystemExit("synclipmae-dub-score: no video could be scored")

  command_line.run(main, __name__)


if __name__ == "__main__":
  run()
