"""The `talking_faces` TFDS builder (data_pipelines/tfds_builder), generated with Apache Beam's
DirectRunner from the HDTF fixtures and a broken file: the same clips (frames, audio, boxes, ids,
splits) as the multiprocessing preparation of the same manifest, the broken file in the rejects
side output, the clips' ids, lengths and identities as metadata (what a scan of the examples gives,
in `tfds.data_source`'s order) so that opening a split reads no example, and a short training run
reading the dataset through Grain (`data.source="tfds"`). Runs in the beam venv (scripts/test.sh).
"""

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.beam
pytest.importorskip("apache_beam")

from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=wrong-import-position
from array_record.python import array_record_data_source  # pylint: disable=wrong-import-position
import tensorflow_datasets as tfds  # pylint: disable=wrong-import-position

from configs import demo  # pylint: disable=wrong-import-position
from data_pipelines import grain_pipeline, schema, tfds_clips  # pylint: disable=wrong-import-position
from data_pipelines.prepare import plan, prepare, process  # pylint: disable=wrong-import-position
from data_pipelines.tfds_builder.talking_faces import talking_faces_dataset_builder as builder_lib  # pylint: disable=wrong-import-position
from fixture_paths import HDTF  # pylint: disable=wrong-import-position
from synclipmae_jax import train  # pylint: disable=wrong-import-position

NAME = "talking_faces/48px"
VERSION = str(builder_lib.Builder.VERSION)
SPLITS = ("train", "validation", "train+validation", "validation[:1]+train")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """(TFDS data_dir, the multiprocessing preparation's output) of one manifest."""
  root = tmp_path_factory.mktemp("tfds")
  manual = root / "manual"
  manual.mkdir()
  (manual / "broken.mp4").write_bytes(b"not a video" * 100)
  (manual / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in (
      {"path": os.path.join(HDTF, "WDA_AlexandriaOcasioCortez_000.mp4"), "speaker": "aoc",
       "split": "train"},
      {"path": os.path.join(HDTF, "WDA_KatieHill_000.mp4"), "speaker": "katie", "split": "validation",
       "transcript": "the whole clip", "emotion": "happy"},
      {"path": "broken.mp4", "speaker": "nobody", "split": "train"})) + "\n")
  data_dir = str(root / "data")
  builder = builder_lib.Builder(config="48px", data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual), beam_options=PipelineOptions(["--runner=DirectRunner"])))
  prepared = str(root / "prepared")
  prepare.prepare(plan.read_manifest(str(manual / "manifest.jsonl")), prepared,
                  process.PrepareOptions(image_size=48), progress=False)
  return data_dir, prepared


def test_the_same_clips_as_the_multiprocessing_preparation(built):
  data_dir, prepared = built
  for split in ("train", "validation"):
    ours = tfds_clips.TfdsClipSource(NAME, split, data_dir)
    theirs = grain_pipeline.open_clips(sorted(glob.glob(os.path.join(prepared, f"{split}-*"))))
    assert len(ours) == len(theirs) == 1
    assert ours.num_frames.tolist() == theirs.num_frames.tolist() == [200]
    assert ours.identity_ids.tolist() == theirs.identity_ids.tolist()
    a, b = ours.clip(0), theirs.clip(0)
    for key in ("clip_id", "identity_id", "split", "transcript", "emotion", "image_format", "num_frames"):
      assert a[key] == b[key], key
    assert a["frames"] == b["frames"]  # the same JPEG bytes
    for key in ("audio", "face_boxes", "mouth_boxes"):
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert schema.decode_frames(a, 0, 2).shape == (2, 48, 48, 3)
  assert ours.clip(0)["emotion"] == 1 and ours.clip(0)["transcript"] == "the whole clip"


def scan(name: str, split: str, data_dir: str) -> list[list[int]]:
  """`tfds_clips.summary` of every example of a split, read in `tfds.data_source`'s order."""
  examples = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  return [tfds_clips.summary(examples[i]) for i in range(len(examples))]


def metadata_rows(source: tfds_clips.TfdsClipSource) -> list[list[int]]:
  return np.stack([source.clip_ids, source.num_frames, source.identity_ids], 1).tolist()


@pytest.fixture(name="reads")
def count_reads(monkeypatch):
  """The number of records read so far through any array-record data source (TFDS's
  `data_source` reads every example through array_record's `ArrayRecordDataSource`)."""
  count = [0]
  cls = array_record_data_source.ArrayRecordDataSource
  get, gets, it = cls.__getitem__, cls.__getitems__, cls.__iter__

  def getitem(self, key):
    count[0] += 1
    return get(self, key)

  def getitems(self, keys):
    count[0] += len(keys)
    return gets(self, keys)

  def iterate(self):
    for record in it(self):
      count[0] += 1
      yield record

  monkeypatch.setattr(cls, "__getitem__", getitem)
  monkeypatch.setattr(cls, "__getitems__", getitems)
  monkeypatch.setattr(cls, "__iter__", iterate)
  return lambda: count[0]


def test_opening_a_split_reads_no_example(built, reads):
  data_dir, _ = built
  sources = [tfds_clips.TfdsClipSource(NAME, split, data_dir) for split in SPLITS]
  assert reads() == 0
  assert [len(s) for s in sources] == [1, 1, 2, 2]
  sources[2].header(1)  # the counter counts: a clip's header reads its example
  assert reads() == 1


def test_the_metadata_is_what_a_scan_of_the_examples_gives(built):
  data_dir, _ = built
  for split in SPLITS:
    assert metadata_rows(tfds_clips.TfdsClipSource(NAME, split, data_dir)) == scan(
        NAME, split, data_dir), split
  folder = os.path.join(data_dir, "talking_faces", "48px", VERSION)
  assert os.path.exists(os.path.join(folder, "metadata.json"))
  assert not glob.glob(os.path.join(folder, "*summaries*"))  # the pipeline's summaries deleted


def test_a_dataset_without_metadata_is_refused(built, tmp_path):
  data_dir, _ = built
  shutil.copytree(os.path.join(data_dir, "talking_faces"), tmp_path / "talking_faces")
  os.remove(tmp_path / "talking_faces" / "48px" / VERSION / "metadata.json")
  with pytest.raises(ValueError, match=r"no clip metadata.*Regenerate.*cli.main build"):
    tfds_clips.TfdsClipSource(NAME, "train", str(tmp_path))


def test_split_metadata_sorts_by_clip_id_and_refuses_a_clip_twice():
  assert tfds_clips.split_metadata([[7, 200, 1], [3, 150, 0]]) == {
      "clip_ids": [3, 7], "num_frames": [150, 200], "identity_ids": [0, 1]}
  with pytest.raises(ValueError, match=r"more than once: \[3\]"):
    tfds_clips.split_metadata([[3, 200, 1], [3, 150, 0]])


def test_a_nondeterministic_order_is_refused(tmp_path):
  builder = builder_lib.Builder(config="48px", data_dir=str(tmp_path), file_format="array_record")
  with pytest.raises(ValueError, match="cannot be built with nondeterministic_order"):
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=HDTF, nondeterministic_order=True,
        beam_options=PipelineOptions(["--runner=DirectRunner"])))


def test_rejects_are_a_side_output(built):
  data_dir, _ = built
  lines = [json.loads(line) for path in glob.glob(os.path.join(
      data_dir, "talking_faces_rejects", "48px", VERSION, "train*.jsonl")) for line in open(path)]
  assert [(os.path.basename(r["path"]), r["reason"]) for r in lines] == [("broken.mp4", "unreadable")]


def test_a_training_run_reads_it_through_grain(built, tmp_path):
  data_dir, _ = built
  config = demo.get_config()
  config.data.update(source="tfds", tfds_name=NAME, tfds_data_dir=data_dir, global_batch_size=8,
                     window_frames=8)
  config.update(num_train_steps=2, log_every_steps=1, checkpoint_every_steps=2, image_every_steps=2)
  config.evals.sync.update(every_steps=2, num_clips=1, trials_per_clip=2, pool_size=8)
  train.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "metrics.json") as f:
    metrics = json.load(f)
  assert metrics["step"] == 2 and np.isfinite(metrics["loss/total"])
  assert "sync/acc_k5" in metrics


def test_the_readme_command_line_builds_it_with_two_worker_processes(tmp_path):
  """`tfds build` as docs/data.md gives it (DirectRunner, 2 worker processes), on the fixture folder."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(
      [sys.executable, "-m", "tensorflow_datasets.scripts.cli.main", "build",
       "data_pipelines/tfds_builder/talking_faces", "--config=48px", f"--manual_dir={HDTF}",
       f"--data_dir={tmp_path}", "--file_format=array_record",
       "--beam_pipeline_options=runner=DirectRunner,direct_num_workers=2,"
       "direct_running_mode=multi_processing"],
      cwd=repo, capture_output=True, text=True, timeout=900,
      env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=repo))
  assert result.returncode == 0, result.stderr[-3000:]
  source = tfds_clips.TfdsClipSource(NAME, "train", str(tmp_path))
  assert len(source) == 2 and source.num_frames.tolist() == [200, 200]
  # two clips of two speakers, written by two worker processes: the metadata's order is the
  # examples' order (TFDS's default hashed order puts clip 1024 before clip 0: without the
  # builder's disable_shuffling this fails)
  rows = scan(NAME, "train", str(tmp_path))
  assert metadata_rows(source) == rows and len({r[2] for r in rows}) == 2
  # and a reader catches metadata that is not in the examples' order
  path = os.path.join(tmp_path, "talking_faces", "48px", VERSION, "metadata.json")
  with open(path) as f:
    metadata = json.load(f)
  for values in metadata[tfds_clips.METADATA]["train"].values():
    values.reverse()
  with open(path, "w") as f:
    json.dump(metadata, f)
  with pytest.raises(ValueError, match="not in the order of its clip ids"):
    tfds_clips.TfdsClipSource(NAME, "train", str(tmp_path)).header(0)
