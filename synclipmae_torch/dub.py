r"""`synclipmae-dub`: a source video and a target speech track (audio-driven) or a driving video
(video-driven) -> the dubbed video, with a trained `synclipmae-dub-train` run (paper 4.4).

  synclipmae-dub --run=/tmp/dub --video=talk.mp4 --speech=new_speech.wav --out=dubbed.mp4
  synclipmae-dub --run=/tmp/dub --video=talk.mp4 --driving_video=actor.mp4 --out=dubbed.mp4

The source's face is tracked (the preparation's detector and tracking, `data_pipelines.prepare`);
one square window around the whole track (the preparation's crop margin) is cut from every frame
and resized to `--size`; WanVACE with the AudioPack regenerates its lower face (the training's
mask, `dub_samples.lower_face_mask`) in segments of 17 frames, each with the source's first frame
as the identity reference and the previous segment's last generated frame as the continuity
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

MARGIN = process.PrepareOptions.margin  # the preparation's crop margin around the face
CRF = 17  # x264's constant rate factor of the output: visually lossless, the source kept as it was


def face_window(video: str, detector: str = "mtcnn") -> tuple[list, np.ndarray, np.ndarray]:
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


def check_target(config, speech: str | None, driving_video: str | None) -> None:
  """The target the run can take: a speech track for audio tokens, a driving video for video."""
  if (speech is None) == (driving_video is None):
    raise ValueError("give either a speech track (audio-driven) or a driving video (video-driven)")
  if speech is not None and config.tokens != "audio":
    raise ValueError(f"this run was trained on {config.tokens!r} tokens: give a driving video")
  if driving_video is not None and config.tokens != "video":
    raise ValueError(f"this run was trained on {config.tokens!r} tokens: give a speech track")


def control_tokens(tokenizer, num_frames: int, speech: str | None, driving_video: str | None
                   ) -> tuple[torch.Tensor, np.ndarray]:
  """([num_frames, D] control tokens, the output's audio [640 num_frames]) of the target (one of
  the two, `check_target`)."""
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


def dub(run: str, video: str, out: str, *, speech: str | None = None, driving_video: str | None = None,
        size: int = 256, steps: int = 30, guidance_scale: float = 1.0, seed: int = 0,
        detector: str = "mtcnn", device: str = "auto") -> dict:
  """Writes the dubbed video to `out`; returns {"frames", "segments", "window": the face window
  (x0, y0, x1, y1), "regenerated_box": the bounding box of every pixel the mask regenerates}."""
  config, pipe, pack, tokenizer = load_run(run, device)
  base = pipe.vae_scale_factor_spatial * pipe.transformer.config.patch_size[1]
  if size % base:
    raise ValueError(f"size={size} must be a multiple of {base} (the VAE's and the DiT's patches)")
  check_target(config, speech, driving_video)
  frames, boxes, mouths = face_window(video, detector)
  n, (height, width) = len(frames), frames[0].shape[:2]
  tokens, audio = control_tokens(tokenizer, n, speech, driving_video)
  x0, y0, x1, y1 = window_of(boxes, MARGIN, width, height)
  side = x1 - x0
  rel_faces = crop.normalise(boxes, np.tile([[x0, y0, x1, y1]], (n, 1)).astype(np.float32))
  rel_mouths = crop.normalise(mouths, np.tile([[x0, y0, x1, y1]], (n, 1)).astype(np.float32))
  masks = dub_samples.lower_face_mask(rel_faces, rel_mouths, size, size)
  paste = dub_samples.lower_face_mask(rel_faces, rel_mouths, side, side) > 0.5
  windows = [np.asarray(Image.fromarray(f[y0:y1, x0:x1]).resize((size, size), Image.BICUBIC))
             for f in frames]
  prompt = torch.zeros(1, config.prompt_length, pipe.transformer.config.text_dim,
                       device=tokenizer.pixel_mean.device)
  f = dub_samples.TARGET_FRAMES
  out_frames = [fr.copy() for fr in frames]
  continuity, segments = None, 0
  for start in range(0, n, f):
    index = np.minimum(np.arange(start, start + f), n - 1)  # the last segment: its final frame repeated
    references = [Image.fromarray(windows[0])] + ([Image.fromarray(continuity)] if continuity is not None else [])
    segment_tokens = tokens[torch.from_numpy(index)][None].float()
    with pack.conditioning(segment_tokens, len(references)), torch.no_grad():
      generated = pipe(video=[Image.fromarray(windows[i]) for i in index],
                       mask=[Image.fromarray((masks[i] * 255).astype(np.uint8)).convert("RGB") for i in index],
                       reference_images=references, prompt_embeds=prompt, height=size, width=size,
                       num_frames=f, num_inference_steps=steps, guidance_scale=guidance_scale,
                       generator=torch.Generator().manual_seed(seed + start), output_type="np").frames[0]
    generated = (np.clip(generated, 0, 1) * 255).round().astype(np.uint8)
    for k, i in enumerate(index):
      if i < start + k:
        break  # padding
      back = np.asarray(Image.fromarray(generated[k]).resize((side, side), Image.BICUBIC))
      region = out_frames[i][y0:y1, x0:x1]
      out_frames[i][y0:y1, x0:x1] = np.where(paste[i][..., None], back, region)
    continuity = generated[min(f, n - start) - 1]
    segments += 1
  encode.write_video(out, out_frames, audio, options={"crf": str(CRF)})
  rows, cols = np.nonzero(paste.any(axis=0))
  return {"frames": n, "segments": segments, "window": [int(v) for v in (x0, y0, x1, y1)],
          "regenerated_box": [int(x0 + cols.min()), int(y0 + rows.min()), int(x0 + cols.max()) + 1,
                              int(y0 + rows.max()) + 1]}


def run() -> None:
  """Command line (`synclipmae-dub`)."""
  from absl import app, flags  # pylint: disable=import-outside-toplevel

  flags.DEFINE_string("run", None, "A synclipmae-dub-train workdir (its latest checkpoint).")
  flags.DEFINE_string("video", None, "The source video.")
  flags.DEFINE_string("speech", None, "The target speech (audio-driven runs): any audio or video file.")
  flags.DEFINE_string("driving_video", None, "The driving video (video-driven runs).")
  flags.DEFINE_string("out", None, "The dubbed video (.mp4).")
  flags.DEFINE_integer("size", 256, "Side of the face window WanVACE regenerates (multiple of 16).")
  flags.DEFINE_integer("steps", 30, "Denoising steps.")
  flags.DEFINE_float("guidance_scale", 1.0, "Classifier-free guidance (1: none).")
  flags.DEFINE_integer("seed", 0, "Seed of the noise.")
  flags.DEFINE_string("detector", "mtcnn", "The preparation's face detector.")
  flags.DEFINE_enum("device", "auto", dub_train.DEVICES, "auto: a GPU when there is one.")
  flags.mark_flags_as_required(["run", "video", "out"])
  f = flags.FLAGS
  app.run(lambda argv: print(dub(f.run, f.video, f.out, speech=f.speech, driving_video=f.driving_video,
                                 size=f.size, steps=f.steps, guidance_scale=f.guidance_scale,
                                 seed=f.seed, detector=f.detector, device=f.device)))


if __name__ == "__main__":
  run()
