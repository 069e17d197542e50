"""The per-file work of the `talking_faces` TFDS builder, in an importable module: Beam's worker
processes unpickle it by this name (the `tfds build` command loads the builder itself from its
folder, under a name workers cannot import)."""

from __future__ import annotations

import json

from data_pipelines import schema, tfds_clips
from data_pipelines.prepare import face_detector, process

REJECTS = "rejects"
SUMMARIES = "clip-summaries"  # the name of the files of a split's clip summaries


def summary_line(key_example: tuple) -> str:
  """A (key, example) of the pipeline's clips as a JSON line of `tfds_clips.summary`."""
  return json.dumps(tfds_clips.summary(key_example[1]))


def example_of(clip: schema.Clip, image_format: str) -> dict:
  """A clip as a `talking_faces` example."""
  return {"clip_id": clip.clip_id, "identity_id": clip.identity_id, "split": clip.split,
          "image_format": image_format,
          "frames": [schema.encode_image(f, image_format) for f in clip.frames],
          "audio": clip.audio, "face_boxes": clip.face_boxes, "mouth_boxes": clip.mouth_boxes,
          "transcript": clip.transcript, "emotion": clip.emotion, "actions": clip.stored_actions}


class PrepareFile:
  """A Beam FlatMap body: one source file (`plan`'s source dict) -> its clips, keyed by clip id,
  and its rejects, tagged REJECTS (JSON lines); the detector is loaded once per worker."""

  def __init__(self, options: process.PrepareOptions, detector: str):
    self.options, self.detector_name = options, detector
    self.detector = None

  def __getstate__(self):
    return {"options": self.options, "detector_name": self.detector_name, "detector": None}

  def __call__(self, source: dict):
    import apache_beam as beam  # pylint: disable=import-outside-toplevel
    if self.detector is None:
      self.detector = face_detector.load_detector(self.detector_name)
    clips = []
    result = process.prepare_file(process.Source(**source), self.detector, self.options, clips.append)
    for clip in clips:
      yield clip.clip_id, example_of(clip, self.options.image_format)
    for reject in result.rejected:
      yield beam.pvalue.TaggedOutput(REJECTS, json.dumps({"path": source["path"], **reject}))
