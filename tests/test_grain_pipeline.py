"""Tests of data_pipelines.grain_pipeline and data_pipelines.synthetic_dataset."""

from __future__ import annotations

import json
import os

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from data_pipelines import grain_pipeline as gp
from data_pipelines import schema
from data_pipelines import synthetic_dataset as sd
from synclipmae_jax import objective

T = 5
DATASET = dict(num_train_clips=8, num_eval_clips=3, num_identities=4, num_eval_identities=2,
               clip_frames=12, eval_clip_frames=10, image_size=32, seed=0, num_shards=2)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[str, dict[str, list[str]]]:
  directory = str(tmp_path_factory.mktemp("data") / "synthetic")
  return directory, sd.ensure_synthetic_dataset(directory, **DATASET)


@pytest.fixture(scope="module")
def records(dataset) -> dict[int, dict]:
  """Every clip (both splits), fully decoded, by clip id."""
  _, paths = dataset
  return {c["clip_id"]: c for c in gp.load_eval_clips(paths["train"] + paths["validation"])}


def _batches(iterator, n: int) -> list[dict]:
  return [next(iterator) for _ in range(n)]


def _assert_same(a: list[dict], b: list[dict]):
  for x, y in zip(a, b, strict=True):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_dataset_layout(dataset, records):
  directory, paths = dataset
  assert [len(paths[s]) for s in ("train", "validation")] == [2, 2]
  with open(os.path.join(directory, sd.INFO_FILE)) as f:
    info = json.load(f)
  assert info["counts"] == {"train": 8, "validation": 3}
  train = [c for c in records.values() if c["clip_id"] < 8]
  validation = [c for c in records.values() if c["clip_id"] >= 8]
  assert sorted(records) == list(range(11))
  assert {c["identity_id"] for c in train} == set(range(4))
  assert {c["identity_id"] for c in validation} == {4, 5}  # unseen speakers
  assert all(c["frames"].shape == (12, 32, 32, 3) for c in train)
  assert all(c["frames"].shape == (10, 32, 32, 3) for c in validation)
  assert all(c["audio"].shape == (10 * 640,) and c["audio"].dtype == np.float32
             for c in validation)
  assert all(c["actions"].shape == (10, len(schema.ACTION_NAMES)) for c in validation)
  assert [c["clip_id"] for c in gp.load_eval_clips(paths["validation"], max_clips=2)] == [8, 9]


def test_ensure_is_idempotent_and_regenerates_on_change(dataset, tmp_path):
  directory, paths = dataset
  mtimes = {p: os.stat(p).st_mtime_ns for p in paths["train"] + paths["validation"]}
  info = os.path.join(directory, sd.INFO_FILE)
  info_mtime = os.stat(info).st_mtime_ns
  assert sd.ensure_synthetic_dataset(directory, **DATASET) == paths
  assert {p: os.stat(p).st_mtime_ns for p in mtimes} == mtimes
  assert os.stat(info).st_mtime_ns == info_mtime

  other = str(tmp_path / "other")
  first = sd.ensure_synthetic_dataset(other, **(DATASET | dict(num_eval_clips=1)))
  second = sd.ensure_synthetic_dataset(other, **(DATASET | dict(num_eval_clips=2)))
  assert len(first["validation"]) == 1 and len(second["validation"]) == 2
  assert len(gp.load_eval_clips(second["validation"])) == 2
  assert sorted(os.listdir(tmp_path)) == ["other"]  # no staging directory left behind

  (tmp_path / "foreign").mkdir()
  (tmp_path / "foreign" / "notes.txt").write_text("not a dataset")
  with pytest.raises(ValueError, match="refusing"):
    sd.ensure_synthetic_dataset(str(tmp_path / "foreign"), **DATASET)


def test_interrupted_generation_keeps_the_old_dataset(tmp_path, monkeypatch):
  directory = str(tmp_path / "d")
  paths = sd.ensure_synthetic_dataset(directory, **(DATASET | dict(num_train_clips=2)))
  before = {p: open(p, "rb").read() for p in paths["train"] + paths["validation"]}
  generate = sd.talking_face.generate_clip
  calls = []

  def interrupted(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
      raise KeyboardInterrupt
    return generate(*args, **kwargs)

  monkeypatch.setattr(sd.talking_face, "generate_clip", interrupted)
  with pytest.raises(KeyboardInterrupt):
    sd.ensure_synthetic_dataset(directory, **DATASET)
  assert os.listdir(tmp_path) == ["d"]
  assert {p: open(p, "rb").read() for p in before} == before
  calls.clear()
  with pytest.raises(KeyboardInterrupt):
    sd.ensure_synthetic_dataset(str(tmp_path / "new"), **DATASET)
  assert os.listdir(tmp_path) == ["d"]


def test_command_line(tmp_path, capsys):
  sd.main(["--directory", str(tmp_path / "cli"), "--num_train_clips", "2", "--num_eval_clips", "1",
           "--num_identities", "1", "--num_eval_identities", "1", "--clip_frames", "3",
           "--eval_clip_frames", "3", "--image_size", "16"])
  summary = json.loads(capsys.readouterr().out)
  assert summary["counts"] == {"train": 2, "validation": 1}
  assert len(gp.load_eval_clips(summary["paths"]["train"])) == 2


def test_batch_shapes_and_alignment(dataset, records):
  _, paths = dataset
  it = gp.make_train_iterator(gp.make_train_dataset(paths["train"], global_batch_size=4,
                                                    window_frames=T, seed=1))
  starts = set()
  for batch in _batches(it, 4):
    assert batch["frames"].dtype == np.uint8 and batch["frames"].shape == (4, T, 32, 32, 3)
    assert batch["audio"].dtype == np.float32 and batch["audio"].shape == (4, T * 640)
    for k in ("face_boxes", "mouth_boxes"):
      assert batch[k].dtype == np.float32 and batch[k].shape == (4, T, 4)
    for k in ("identity_id", "clip_id", "start_frame"):
      assert batch[k].dtype == np.int32 and batch[k].shape == (4,)
    for i in range(4):
      clip = records[int(batch["clip_id"][i])]
      s = int(batch["start_frame"][i])
      assert 0 <= s <= 12 - T and clip["clip_id"] < 8
      starts.add(s)
      np.testing.assert_array_equal(batch["frames"][i], clip["frames"][s:s + T])
      np.testing.assert_array_equal(batch["audio"][i], clip["audio"][640 * s:640 * (s + T)])
      np.testing.assert_array_equal(batch["mouth_boxes"][i], clip["mouth_boxes"][s:s + T])
      assert batch["identity_id"][i] == clip["identity_id"]
  assert len(starts) > 1


def test_horizontal_flip(dataset, records):
  _, paths = dataset
  batch = next(gp.make_train_iterator(gp.make_train_dataset(
      paths["train"], global_batch_size=2, window_frames=T, seed=1, horizontal_flip=1.0)))
  for i in range(2):
    clip = records[int(batch["clip_id"][i])]
    s = int(batch["start_frame"][i])
    np.testing.assert_array_equal(batch["frames"][i], clip["frames"][s:s + T, :, ::-1])
    box = clip["face_boxes"][s:s + T]
    np.testing.assert_allclose(batch["face_boxes"][i][:, [0, 2]], 1 - box[:, [2, 0]])
    np.testing.assert_array_equal(batch["face_boxes"][i][:, [1, 3]], box[:, [1, 3]])


def test_read_threads_change_nothing_but_speed(dataset):
  """Half the clips mirrored: each batch decoded into one array, mirrored rows where drawn, the
  same with or without read threads; a negative count is refused."""
  _, paths = dataset
  batches = []
  for threads in (0, 2):
    it = gp.make_train_iterator(gp.make_train_dataset(
        paths["train"], global_batch_size=8, window_frames=T, seed=5, horizontal_flip=0.5,
        read_threads=threads))
    batches.append([next(it) for _ in range(3)])
  for a, b in zip(*batches):
    assert a.keys() == b.keys() and a["frames"].dtype == np.uint8
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  with pytest.raises(ValueError, match="read_threads must be >= 0"):
    gp.make_train_dataset(paths["train"], global_batch_size=8, window_frames=T, seed=5,
                          read_threads=-1)


def test_processes_read_disjoint_clips(dataset):
  _, paths = dataset
  its = [gp.make_train_iterator(gp.make_train_dataset(
      paths["train"], global_batch_size=4, window_frames=T, seed=2, process_index=p,
      process_count=2)) for p in range(2)]
  seen = set()
  for _ in range(4):  # two epochs of 8 clips
    a, b = next(its[0]), next(its[1])
    assert a["frames"].shape[0] == 2
    assert not set(a["clip_id"].tolist()) & set(b["clip_id"].tolist())
    seen |= set(a["clip_id"].tolist()) | set(b["clip_id"].tolist())
  assert seen == set(range(8))
  with pytest.raises(ValueError, match="process_count"):
    gp.make_train_dataset(paths["train"], global_batch_size=5, window_frames=T, seed=0,
                          process_count=2)


def test_process_blocks_concatenate_to_the_single_process_batch(dataset):
  """Multi-host feeding: process i holds block i of every global batch, so the assembled
  global batch equals what one process sees (same clips, windows and order)."""
  _, paths = dataset
  kwargs = dict(global_batch_size=4, window_frames=T, seed=3)
  single = gp.make_train_iterator(gp.make_train_dataset(paths["train"], **kwargs))
  parts = [gp.make_train_iterator(gp.make_train_dataset(
      paths["train"], process_index=p, process_count=2, **kwargs)) for p in range(2)]
  for _ in range(3):
    whole, a, b = next(single), next(parts[0]), next(parts[1])
    for key in whole:
      np.testing.assert_array_equal(whole[key], np.concatenate([a[key], b[key]]), err_msg=key)


def test_epochs_are_reshuffled(dataset):
  _, paths = dataset
  it = gp.make_train_iterator(gp.make_train_dataset(paths["train"], global_batch_size=8,
                                                    window_frames=T, seed=3))
  epochs = [next(it)["clip_id"].tolist() for _ in range(3)]
  assert all(sorted(e) == list(range(8)) for e in epochs)
  assert len({tuple(e) for e in epochs}) > 1


@pytest.mark.parametrize("worker_count", [0, 1])
def test_iterator_state_restores_the_same_batches(dataset, worker_count):
  _, paths = dataset
  ds = gp.make_train_dataset(paths["train"], global_batch_size=2, window_frames=T, seed=4)
  it = gp.make_train_iterator(ds, worker_count=worker_count)
  _batches(it, 3)
  state = it.get_state()
  expected = _batches(it, 4)
  restored = gp.make_train_iterator(ds, worker_count=worker_count)
  restored.set_state(state)
  _assert_same(_batches(restored, 4), expected)
  if worker_count:
    it.close()
    restored.close()


def _assert_orbax_round_trip(ds, it, tmp_path):
  """Saves iterator `it` (over `ds`) with orbax, restores a fresh one: the next 3 batches agree."""
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    manager.save(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    manager.wait_until_finished()
    expected = _batches(it, 3)
    fresh = gp.make_train_iterator(ds)
    manager.restore(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
  _assert_same(_batches(fresh, 3), expected)


def test_orbax_checkpoint_of_the_iterator(dataset, tmp_path):
  _, paths = dataset
  ds = gp.make_train_dataset(paths["train"], global_batch_size=2, window_frames=T, seed=5)
  it = gp.make_train_iterator(ds)
  _batches(it, 2)
  _assert_orbax_round_trip(ds, it, tmp_path)


def test_window_longer_than_clip_raises(dataset):
  """When the dataset is made, before any batch is read."""
  _, paths = dataset
  with pytest.raises(ValueError, match=r"clip \d+ has 10 frames, fewer than window_frames=11"):
    gp.make_train_dataset(paths["validation"], global_batch_size=1, window_frames=11, seed=0)


def test_identity_aware_batches_swap_across_clips(dataset, tmp_path):
  """Runs of K = 2 clips of one identity (different clips: each identity has two here); the
  objective's identity shuffle on such batches takes at least half its partners from another clip
  (with a global shuffle, almost none); the iterator state round-trips through a checkpoint."""
  _, paths = dataset
  ds = gp.make_train_dataset(paths["train"], global_batch_size=4, window_frames=T, seed=6,
                             clips_per_identity=2)
  it = gp.make_train_iterator(ds)
  batches = _batches(it, 6)  # 24 clips: three epochs of the 8 training clips
  fractions = []
  for step, batch in enumerate(batches):
    ids, clips = batch["identity_id"], batch["clip_id"]
    assert (ids[0::2] == ids[1::2]).all() and (clips[0::2] != clips[1::2]).all()
    perm = objective.identity_permutation(jax.random.key(step), jnp.asarray(ids), T, 4)
    fractions.append(float(objective.cross_clip_fraction(perm, T)))
  assert np.mean(fractions) >= 0.5, fractions
  epoch = np.concatenate([b["clip_id"] for b in batches[:2]])
  assert sorted(epoch.tolist()) == sorted(set(epoch.tolist()))  # each clip once per epoch
  assert [b["clip_id"].tolist() for b in batches[:2]] != [b["clip_id"].tolist() for b in batches[2:4]]
  _assert_orbax_round_trip(ds, it, tmp_path)
  with pytest.raises(ValueError, match="clips_per_identity=3"):
    gp.make_train_dataset(paths["train"], global_batch_size=4, window_frames=T, seed=6,
                          clips_per_identity=3)
