r"""`synclipmae-dub`: a source video and a target speech track (audio-driven) or a driving video
(video-driven) -> the dubbed video, with a trained `synclipmae-dub-train` run (paper 4.4).

  synclipmae-dub --run=/tmp/dub --video=talk.mp4 --speech=new_speech.wav --out=dubbed.mp4
  synclipmae-dub --run=/tmp/dub --video=talk.mp4 --driving_video=actor.mp4 --out=dubbed.mp4

Either control drives any run, whatever its `config.tokens` (audio, video or mixed): the paper
toggles audio- and video-driven control "within the same model" (Table 4's A- and V-SyncLipMAE
rows), which rests on the pretraining's shared token space (the contrastive alignment of audio
and vocal-motion tokens, and the decoder reconstructing the same frame from either). The speech's
audio tokens or the driving video's vocal-motion tokens (its face tracked and cropped as the
preparation does) enter the AudioPack alike.

The source's face is tracked (the preparation's detector and tracking, `data_pipelines.prepare`);
the video is dubbed in segments of 17 frames, each in one square window around its own frames'
face boxes (the preparation's crop margin; the window follows a moving speaker) resized to
`--size`: WanVACE with the AudioPack regenerates the lower face (the training's mask,
`dub_samples.lower_face_mask`) with the source's first frame (in its own face window) as the
identity reference and the frame before the segment, as dubbed so far, as the continuity
reference (none for the first); the last segment is padded with its final frame and cut back. The
generated window goes back into the frame only inside the mask: every pixel outside it is the
source's. The output has the source's frames at 25 fps and the new audio (the speech, or the
driving video's sound) at 16 kHz, as long as the source (cut or padded with silence).
"""

from __future__ import annotations

import json
import os
from fractions import Fraction

import ml_collections
import numpy as np
from PIL import Image
import torch

from data_pipelines.prepare import crop, decode, encode, face_detector, process
from synclipmae_torch import dub_samples, dub_step, dub_train
from synclipmae_jax import command_line

MARGIN = process.PrepareOptions.margin  # the preparation's crop margin around the face
CRF = 17  # x264's constant rate factor of the output: visually lossless, the source kept as it was


def face_window(video: str,
                detector: str = face_detector.DEFAULT) -> tuple[list, np.ndarray, np.ndarray]:
  """(frames uint8 [H, W, 3] at 25 fps, the face track's boxes [F, 4] and mouth boxes [F, 4] in
  pixels) of `video`'s one face track (the preparation's detection and tracking,
  `process.track_video`), which must cover every frame."""
  info = decode.probe(video)
  frames = list(decode.iter_frames(video, info.rotation))
  _, tracks = process.track_video(video, face_detector.load_detector(detector))
  if not tracks:
    raise ValueError(f"{video}: no face found")
  track = max(tracks, key=lambda t: len(t.boxes))
  if track.start > 0 or track.stop < len(frames):
    raise ValueError(f"{video}: the face is tracked in frames {track.start}-{track.stop - 1} of "
                     f"{len(frames)}; dubbing needs it in every frame (cut the video first)")
  return frames, track.boxes, crop.mouth_boxes(track.boxes, track.mouth_corners)


def window_of(boxes: np.ndarray, margin: float, width: int, height: int) -> np.ndarray:
  """One square window (x0, y0, x1, y1; integer pixels inside the frame) around every box."""
  union = np.concatenate([boxes[:, :2].min(0), boxes[:, 2:].max(0)])[None]
  x0, y0, x1, y1 = crop.crop_windows(union, margin)[0]
  side = min(int(round(x1 - x0)), width, height)
  x0 = int(np.clip(round(x0), 0, width - side))
  y0 = int(np.clip(round(y0), 0, height - side))
  return np.array([x0, y0, x0 + side, y0 + side])


def load_run(workdir: str, device: str = "auto"):
  """(config, pipeline, AudioPack, tokenizer) of a dub-train run at its latest checkpoint, on
  `device` (`dub_train.DEVICES`)."""
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    config = ml_collections.ConfigDict(json.load(f))
  latest = dub_train.latest_checkpoint(workdir)
  if latest is None:
    raise FileNotFoundError(f"{workdir} holds no checkpoint (checkpoints/step_*.safetensors)")
  transformer, vae, tokenizer, pack = dub_train.build_models(config)
  trained = dub_step.freeze(transformer, pack)
  dub_train.restore_checkpoint(latest[1], trained, None)
  place = dub_train.resolve_device(device)
  for module in (transformer, vae, tokenizer, pack):
    module.to(place)
  transformer.eval()
  return config, dub_step.pipeline(transformer, vae), pack, tokenizer


def control_of(speech: str | None, driving_video: str | None) -> str:
  """The control of a dub (one of `dub_train.CONTROLS`): "audio" for a speech track, "video"
  for a driving video; exactly one must be given. Any run takes either, whatever its
  `config.tokens` (module doc)."""
  if (speech is None) == (driving_video is None):
    raise ValueError("give either a speech track (audio-driven) or a driving video (video-driven)")
  return "audio" if speech is not None else "video"


def control_tokens(tokenizer, num_frames: int, speech: str | None, driving_video: str | None
                   ) -> tuple[torch.Tensor, np.ndarray]:
  """([num_frames, D] control tokens, the output's audio [640 num_frames]) of the target (one of
  the two, `control_of`)."""
  if speech is not None:
    audio, _ = decode.read_audio(speech, Fraction(0), num_frames)
    with torch.no_grad():
      return tokenizer.audio_tokens(audio), audio
  frames, boxes, mouths = face_window(driving_video)
  if len(frames) < num_frames:
    raise ValueError(f"the driving video has {len(frames)} frames, the source {num_frames}")
  frames, boxes, mouths = frames[:num_frames], boxes[:num_frames], mouths[:num_frames]
  windows = crop.crop_windows(boxes, MARGIN)
  crops = np.stack([crop.crop_frame(f, win, tokenizer.image_size) for f, win in zip(frames, windows)])
  with torch.no_grad():
    vocal = tokenizer.prompt_tokens(crops, crop.normalise(boxes, windows), crop.normalise(mouths, windows))
  audio, _ = decode.read_audio(driving_video, decode.probe(driving_video).start, num_frames)
  return vocal["vocal"], audio


def _window_image(frame: np.ndarray, window, size: int) -> Image.Image:
  """`frame`'s face window as the preparation crops it (`crop.crop_frame`), size x size."""
  return Image.fromarray(crop.crop_frame(frame, window, size))


def dub(run: str, video: str, out: str, *, speech: str | None = None, driving_video: str | None = None,
        size: int = 256, steps: int = 30, guidance_scale: float = 1.0, seed: int = 0,
        detector: str = face_detector.DEFAULT, device: str = "auto") -> dict:
  """Writes the dubbed video to `out`; returns {"frames", "segments", "windows": each segment's
  face window (x0, y0, x1, y1), "regenerated_box": the bounding box of every pixel the masks
  regenerate, "control": "audio" or "video" (this dub's), "trained_tokens": the run's
  `config.tokens`}."""
  control = control_of(speech, driving_video)
  config, pipe, pack, tokenizer = load_run(run, device)
  base = pipe.vae_scale_factor_spatial * pipe.transformer.config.patch_size[1]
  if size % base:
    raise ValueError(f"size={size} must be a multiple of {base} (the VAE's and the DiT's patches)")
  frames, boxes, mouths = face_window(video, detector)
  n, (height, width) = len(frames), frames[0].shape[:2]
  tokens, audio = control_tokens(tokenizer, n, speech, driving_video)
  # The identity reference: the first frame in its own face window.
  identity = _window_image(frames[0], window_of(boxes[:1], MARGIN, width, height), size)
  prompt = torch.zeros(1, config.prompt_length, pipe.transformer.config.text_dim,
                       device=tokenizer.pixel_mean.device)
  f = dub_samples.TARGET_FRAMES
  out_frames = [fr.copy() for fr in frames]
  regenerated = np.zeros((height, width), bool)
  windows = []
  for start in range(0, n, f):
    index = np.minimum(np.arange(start, start + f), n - 1)  # the last segment: its final frame repeated
    # This segment's window follows the face: around its own frames' boxes.
    x0, y0, x1, y1 = window = window_of(boxes[index], MARGIN, width, height)
    side = x1 - x0
    box = np.tile([[x0, y0, x1, y1]], (len(index), 1)).astype(np.float32)
    rel_faces, rel_mouths = crop.normalise(boxes[index], box), crop.normalise(mouths[index], box)
    masks = dub_samples.lower_face_mask(rel_faces, rel_mouths, size, size)
    paste = dub_samples.lower_face_mask(rel_faces, rel_mouths, side, side) > 0.5
    # The continuity reference: the frame before the segment as dubbed so far, in this window.
    references = [identity] + ([_window_image(out_frames[start - 1], window, size)] if start else [])
    segment_tokens = tokens[torch.from_numpy(index)][None].float()
    with pack.conditioning(segment_tokens, len(references)), torch.no_grad():
      generated = pipe(video=[_window_image(frames[i], window, size) for i in index],
                       mask=[Image.fromarray((m * 255).astype(np.uint8)).convert("RGB") for m in masks],
                       reference_images=references, prompt_embeds=prompt, height=size, width=size,
                       num_frames=f, num_inference_steps=steps, guidance_scale=guidance_scale,
                       generator=torch.Generator().manual_seed(seed + start), output_type="np").frames[0]
    generated = (np.clip(generated, 0, 1) * 255).round().astype(np.uint8)
    for k, i in enumerate(index):
      if i < start + k:
        break  # padding
      back = np.asarray(Image.fromarray(generated[k]).resize((side, side), Image.BICUBIC))
      region = out_frames[i][y0:y1, x0:x1]
      out_frames[i][y0:y1, x0:x1] = np.where(paste[k][..., None], back, region)
      regenerated[y0:y1, x0:x1] |= paste[k]
    windows.append([int(v) for v in window])
  encode.write_video(out, out_frames, audio, options={"crf": str(CRF)})
  rows, cols = np.nonzero(regenerated)
  return {"frames": n, "segments": len(windows), "windows": windows,
          "regenerated_box": [int(cols.min()), int(rows.min()), int(cols.max()) + 1,
                              int(rows.max()) + 1],
          "control": control, "trained_tokens": config.tokens}


def run() -> None:
  """Command line (`synclipmae-dub`)."""
  from absl import flags  # pylint: disable=import-outside-toplevel

  flags.DEFINE_string("run", None, "A synclipmae-dub-train workdir (its latest checkpoint).")
  flags.DEFINE_string("video", None, "The source video.")
  flags.DEFINE_string("speech", None, "The target speech (audio-driven dub, any run): any audio "
                      "or video file.")
  flags.DEFINE_string("driving_video", None, "The driving video (video-driven dub, any run): its "
                      "face's vocal motion drives the lips, its sound becomes the output's.")
  flags.DEFINE_string("out", None, "The dubbed video (.mp4).")
  flags.DEFINE_integer("size", 256, "Side of the face window WanVACE regenerates (multiple of 16).")
  flags.DEFINE_integer("steps", 30, "Denoising steps.")
  flags.DEFINE_float("guidance_scale", 1.0, "Classifier-free guidance (1: none).")
  flags.DEFINE_integer("seed", 0, "Seed of the noise.")
  flags.DEFINE_string("detector", face_detector.DEFAULT, "The preparation's face detector.")
  flags.DEFINE_enum("device", "auto", dub_train.DEVICES, "auto: a GPU when there is one.")
  flags.mark_flags_as_required(["run", "video", "out"])
  f = flags.FLAGS
  command_line.run(lambda argv: print(dub(f.run, f.video, f.out, speech=f.speech, driving_video=f.driving_video,
                                 size=f.size, steps=f.steps, guidance_scale=f.guidance_scale,
                                 seed=f.seed, detector=f.detector, device=f.device)), __name__)


if __name__ == "__main__":
  run()
