r"""`talking_faces`: raw talking-face videos prepared into TFDS, generated with Apache Beam (`tfds
build`, run as a module: the beam venv layers on .venv, whose bin/ holds the `tfds` script).

  python -m tensorflow_datasets.scripts.cli.main build data_pipelines/tfds_builder/talking_faces \
      --config=224px --manual_dir=videos/ --data_dir=/data/tfds --file_format=array_record \
      --beam_pipeline_options="runner=DirectRunner,direct_num_workers=2"

The manual directory holds the videos (a file directly in it is its own speaker, a file in a
subfolder belongs to the top subfolder, as `synclipmae-prepare --input_dir`), or a `manifest.csv` /
`manifest.jsonl` with the columns of `synclipmae-prepare --manifest` (paths relative to it), and
optionally the `labels.json` of the manifest's emotion and action names (data_pipelines/labels.py).
Speakers, splits (the manifest's, or speaker-disjoint hashed 5 % validation, as the preparation's
defaults) and clip ids come from `data_pipelines.prepare.plan`; every file goes through
`process.prepare_file`, the one per-file implementation of the preparation, in a Beam DoFn (the
detector loaded once per worker), so the clips are the ones `synclipmae-prepare` writes. Files
that give no clip, and rejected frame ranges, are a side output: JSON lines under
`<data_dir>/talking_faces_rejects/<config>/<version>/<split>-*.jsonl`. An infrastructure failure
(out of memory, a failing disk) fails the bundle, so Beam retries it.

Each example is one clip with the fields of data_pipelines/schema.py one to one (frames as their
encoded JPEG bytes), keyed by its clip id; a split's examples are stored in the order of their
clip ids (`disable_shuffling`: Grain shuffles the indices it reads). Each clip's id, number of
frames and identity are the dataset's metadata (metadata.json, `tfds_clips.METADATA`, in that
order), written by a second output of the pipeline, so the training pipeline opens a split without
reading an example. Read it with Grain through `tfds.data_source` (`data.source="tfds"`,
data_pipelines/tfds_clips.py). Configs: `224px` (configs/pretrain.py's crops, patch 16) and
`48px` (configs/demo.py's, patch 8).
"""

from __future__ import annotations

import dataclasses
import json
import os

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import labels as labels_lib
from data_pipelines import schema, tfds_clips
from data_pipelines.prepare import face_detector, plan, process
from data_pipelines.tfds_builder import beam_prepare


@dataclasses.dataclass
class TalkingFacesConfig(tfds.core.BuilderConfig):
  """How the clips are made (`process.PrepareOptions`) and split."""

  image_size: int = process.PrepareOptions.image_size
  margin: float = process.PrepareOptions.margin
  image_format: str = process.PrepareOptions.image_format
  detector: str = face_detector.DEFAULT
  seed: int = 0
  validation_fraction: float = plan.VALIDATION_FRACTION
  test_fraction: float = 0.0


class Builder(tfds.core.GeneratorBasedBuilder):
  """Talking-face clips prepared from raw videos (data_pipelines/prepare), generated with Beam."""

  VERSION = tfds.core.Version(tfds_clips.METADATA_VERSION)
  RELEASE_NOTES = {
      "1.0.0": "Clips of data_pipelines/schema.py, prepared by process.prepare_file.",
      tfds_clips.METADATA_VERSION: "Examples in the order of their clip ids; the clips' ids, "
                                   "lengths and identities as metadata (tfds_clips.METADATA).",
  }
  BUILDER_CONFIGS = [
      TalkingFacesConfig(name="224px", description="224 px crops (configs/pretrain.py)"),
      TalkingFacesConfig(name="48px", image_size=48, description="48 px crops (configs/demo.py)"),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Put the talking-face videos in the manual directory (speakers: one subfolder each, or a file
  directly in it is its own speaker), or a manifest.csv / manifest.jsonl with the columns path,
  speaker, split, transcript, emotion, actions (and a labels.json naming the emotions and actions).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    tensor = tfds.features.Tensor
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "clip_id": tfds.features.Scalar(np.int64),
            "identity_id": tfds.features.Scalar(np.int64),
            "split": tfds.features.Text(),
            "image_format": tfds.features.Text(),
            "frames": tfds.features.Sequence(tensor(shape=(), dtype=np.object_)),
            "audio": tensor(shape=(None,), dtype=np.int16),
            "face_boxes": tensor(shape=(None, 4), dtype=np.float32),
            "mouth_boxes": tensor(shape=(None, 4), dtype=np.float32),
            "transcript": tfds.features.Text(),
            "emotion": tfds.features.Scalar(np.int64),
            "actions": tensor(shape=(None, None), dtype=np.uint8,
                              encoding=tfds.features.Encoding.ZLIB),
        }),
        supervised_keys=None,
        disable_shuffling=True,  # stored in key (clip id) order: the order of the metadata
        metadata=tfds.core.MetadataDict(),
        homepage="https://github.com/synclipmae/synclipmae-jax",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual = os.fspath(dl_manager.manual_dir)
    manifests = [os.path.join(manual, m) for m in ("manifest.csv", "manifest.jsonl")
                 if os.path.exists(os.path.join(manual, m))]
    rows = plan.read_manifest(manifests[0]) if manifests else plan.scan_folder(manual)
    c = self.builder_config
    stored = plan.make_plan(rows, root=None if manifests else manual, seed=c.seed,
                            validation_fraction=c.validation_fraction, test_fraction=c.test_fraction,
                            files_per_shard=1, labels=labels_lib.read(manual))
    return {split: self._generate_examples([s for s in stored["sources"] if s["split"] == split],
                                           split)
            for split in schema.SPLITS if any(s["split"] == split for s in stored["sources"])}

  def _generate_examples(self, sources: list[dict], split: str):
    import apache_beam as beam  # pylint: disable=import-outside-toplevel
    rejects = os.path.join(os.fspath(self.data_dir_root), f"{self.name}_rejects",
                           self.builder_config.name, str(self.version), split)
    c = self.builder_config
    prepare_file = beam_prepare.PrepareFile(
        process.PrepareOptions(image_size=c.image_size, margin=c.margin, image_format=c.image_format),
        c.detector)

    @beam.ptransform_fn
    def generate(pipeline):
      results = (pipeline | "Sources" >> beam.Create(sources)
                 | "Prepare" >> beam.FlatMap(prepare_file).with_outputs(beam_prepare.REJECTS,
                                                                        main="clips"))
      _ = (results[beam_prepare.REJECTS]
           | "Rejects" >> beam.io.WriteToText(rejects, file_name_suffix=".jsonl"))
      _ = (results.clips | "Summaries" >> beam.Map(beam_prepare.summary_line)
           | "WriteSummaries" >> beam.io.WriteToText(self._summaries(split),
                                                     file_name_suffix=".jsonl"))
      return results.clips

    return generate()  # pylint: disable=no-value-for-parameter

  def _summaries(self, split: str) -> str:
    """The prefix of the files of a split's clip summaries (`beam_prepare.summary_line`), in the
    dataset's folder while it is generated (the folder is still the temporary one then)."""
    return os.path.join(os.fspath(self.data_dir), f"{split}-{beam_prepare.SUMMARIES}")

  def _download_and_prepare(self, dl_manager, download_config):
    """Generates the splits (the Beam pipeline), then turns each split's clip summaries into its
    metadata entry (`tfds_clips.split_metadata`), checked against the split's example count, and
    deletes them; TFDS writes the metadata as metadata.json with dataset_info.json."""
    if download_config.nondeterministic_order:
      raise ValueError("talking_faces cannot be built with nondeterministic_order: its metadata "
                       "lists the clips in the order of their ids, the order TFDS stores them in "
                       "only when it sorts them")
    super()._download_and_prepare(dl_manager, download_config)
    clips = {}
    for split, info in self.info.splits.items():
      files = sorted(epath.Path(self.data_dir).glob(f"{split}-{beam_prepare.SUMMARIES}*.jsonl"))
      entry = tfds_clips.split_metadata(
          json.loads(line) for f in files for line in f.read_text().splitlines() if line)
      if len(entry["clip_ids"]) != info.num_examples:
        raise ValueError(f"split {split!r}: {info.num_examples} examples written, "
                         f"{len(entry['clip_ids'])} clip summaries")
      clips[split] = entry
      for f in files:
        f.unlink()
    self.info.metadata[tfds_clips.METADATA] = clips
