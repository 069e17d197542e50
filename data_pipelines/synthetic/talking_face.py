"""One synthetic talking-face clip: a speaker's speech and ambient motion, rendered.

The speech (`speech`, from `speech_seed`) drives the audio and the mouth; everything else
that moves (`ambient`, from `ambient_seed`) is independent of it; `render` draws both.
"""

from __future__ import annotations

import numpy as np

from data_pipelines import schema
from data_pipelines.synthetic import ambient
from data_pipelines.synthetic import render
from data_pipelines.synthetic import speech
from data_pipelines.synthetic.identity import Identity


def generate_clip(identity: Identity, *, clip_id: int, num_frames: int, image_size: int = 48,
                  speech_seed: int, ambient_seed: int, split: str = "train",
                  emotion: int | None = None) -> schema.Clip:
  """Generates one talking-face clip of `num_frames` frames at 25 fps with 16 kHz audio.

  Args:
    identity: the speaker (see `identity.make_identity`).
    clip_id: id stored in the clip.
    num_frames: number of video frames; the audio has exactly 640 * num_frames samples.
    image_size: frame height and width in pixels.
    speech_seed: seeds the words, their timing and the voice's prosody; drives audio and mouth.
    ambient_seed: seeds blinks, gaze, head motion and (unless given) the emotion.
    split: schema split name stored in the clip.
    emotion: index into schema.EMOTION_NAMES, or None to draw it from `ambient_seed`.

  Returns:
    A schema.Clip with frames, audio, face/mouth boxes, transcript, emotion and actions.
  """
  if num_frames < 1:
    raise ValueError(f"num_frames must be >= 1, got {num_frames}")
  if image_size < 16:
    raise ValueError(f"image_size must be >= 16, got {image_size}")
  if emotion is not None and not 0 <= emotion < len(schema.EMOTION_NAMES):
    raise ValueError(f"emotion must be in [0, {len(schema.EMOTION_NAMES)}), got {emotion}")
  spoken = speech.speak(identity, num_frames, np.random.default_rng([speech_seed, 0x5EEC]))
  motion = ambient.draw(num_frames, np.random.default_rng([ambient_seed, 0xA3B1]), emotion)
  frames, face_boxes, mouth_boxes = render.draw_frames(identity, spoken, motion, image_size)
  return schema.Clip(
      clip_id=clip_id, identity_id=identity.identity_id, split=split, frames=frames,
      audio=spoken.audio, face_boxes=face_boxes, mouth_boxes=mouth_boxes,
      transcript=spoken.transcript, emotion=motion.emotion, actions=motion.action_flags())
