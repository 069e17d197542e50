"""The linear probes (paper 4.2): metrics against hand-computed cases, the probe trainer on
separable data, the labelled synthetic set, the per-video samples, and `synclipmae-probe` on the
shared tiny run. (The sampling of a video's frames and per-video against per-window scoring:
test_probe_video.py.)"""

import json
import os
import types

import numpy as np
import pytest

from configs import demo
from data_pipelines import grain_pipeline, labels, schema, synthetic_dataset
from synclipmae_jax import frame_features, input_pipeline
from synclipmae_jax.evaluators.probe import linear as linear_probe
from synclipmae_jax.evaluators.probe import metrics as probe_metrics
from synclipmae_jax.evaluators import common as evaluators
from synclipmae_jax.evaluators import probe as probe_evaluator
from synclipmae_jax.models import synclipmae
from synclipmae_jax.tools import probe as probe_tool

# The tiny run's labelled set: 5 speakers (3 train, 1 validation, 1 test) of 3 clips of 8 frames.
SMALL = {"synthetic": {"num_identities": 5, "clips_per_identity": 3, "clip_frames": 8, "seed": 0},
         "frames": [4, 8], "steps": 20, "learning_rates": [0.01, 0.1], "weight_decays": [0.0]}


def test_auc_of_a_constructed_ranking():
  # Positives score 0.35 and 0.8, negatives 0.1 and 0.4: 3 of the 4 (positive, negative) pairs
  # are ordered correctly.
  auc, scored = probe_metrics.mean_auc(np.array([[0.1], [0.4], [0.35], [0.8]]), np.array([[0], [0], [1], [1]]))
  assert auc == pytest.approx(75.0) and scored == 1


def test_single_label_accuracy_and_macro_auc():
  logits = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [2.5, 0.0, 1.0], [0.0, 0.5, 0.1]])
  labels = np.array([0, 1, 2, 1])
  out = probe_metrics.single_label(logits, labels)
  assert out["acc"] == pytest.approx(75.0)  # the third clip is predicted 0
  # Class 0: positive 3.0 over negatives 0, 2.5, 0: 1. Class 1: positives 2.0, 0.5 over negatives
  # 1.0, 0.0: 3 of 4 pairs. Class 2: positive 1.0 over negatives 0.0, 1.0 (a tie: 1/2), 0.1: 2.5 / 3.
  assert out["auc"] == pytest.approx(100 * (1 + 0.75 + 2.5 / 3) / 3)
  assert out["classes_scored"] == 3
  # A class no clip holds has no AUC and stays out of the mean.
  assert probe_metrics.single_label(logits[:2], labels[:2])["classes_scored"] == 2
  with pytest.raises(ValueError, match="labels must be in"):
    probe_metrics.single_label(logits, np.array([0, 1, 3, 1]))


def test_multi_label_mean_accuracy_and_auc():
  logits = np.array([[1.0, -1.0], [-2.0, 0.5], [0.5, 2.0], [-1.0, -0.5]])
  targets = np.array([[1, 0], [0, 0], [0, 1], [1, 1]])
  out = probe_metrics.multi_label(logits, targets)
  # Action 0: predictions 1,0,1,0 vs 1,0,0,1 (2 of 4); action 1: 0,1,1,0 vs 0,0,1,1 (2 of 4).
  assert out["acc"] == pytest.approx(50.0)
  # Action 0: positives 1.0, -1.0 over negatives -2.0, 0.5: 1.0 beats both, -1.0 beats -2.0 only:
  # 3 / 4. Action 1: positives 2.0, -0.5 over negatives -1.0, 0.5: the same, 3 / 4.
  assert out["auc"] == pytest.approx(75.0) and out["classes_scored"] == 2


def _blobs(rng, n, num_classes, dim=6):
  labels = np.arange(n) % num_classes
  centres = 4.0 * np.eye(num_classes, dim)
  return linear_probe.Split(centres[labels] + rng.normal(0, 0.5, (n, dim)), labels)


def test_select_learns_separable_classes_and_picks_on_validation():
  rng = np.random.default_rng(0)
  train, val, test = (_blobs(rng, n, 3) for n in (60, 30, 30))
  # A learning rate too small to move the weights from zero loses on validation.
  out = linear_probe.select(train, val, test, num_classes=3, multi_label=False,
                            learning_rates=(1e-9, 0.05), weight_decays=(0.0,), steps=200)
  assert out["learning_rate"] == pytest.approx(0.05)
  assert out["test"]["acc"] == 100.0 and out["test"]["auc"] == 100.0
  assert out["num_videos"] == {"train": 60, "validation": 30, "test": 30}
  flags = lambda s: np.stack([s.targets == 0, s.targets == 2], 1)  # noqa: E731
  multi = linear_probe.select(*(linear_probe.Split(s.features, flags(s)) for s in (train, val, test)),
                              num_classes=2, multi_label=True, learning_rates=(0.05,),
                              weight_decays=(0.0, 0.1), steps=200)
  assert multi["test"]["acc"] == 100.0 and multi["test"]["auc"] == 100.0
  with pytest.raises(ValueError, match="the validation split has no labelled videos"):
    linear_probe.select(train, linear_probe.Split(np.zeros((0, 6)), np.zeros(0, int)), test,
                        num_classes=3, multi_label=False, learning_rates=(0.1,),
                        weight_decays=(0.0,), steps=1)


def test_labelled_set_holds_unseen_speakers_split_by_speaker(tmp_path):
  paths = synthetic_dataset.ensure_labelled_dataset(
      str(tmp_path / "labelled"), num_identities=5, clips_per_identity=2, clip_frames=6,
      image_size=16, seed=0)
  with open(tmp_path / "labelled" / synthetic_dataset.INFO_FILE) as f:
    identities = json.load(f)["identities"]
  assert {s: len(v) for s, v in identities.items()} == {"train": 3, "validation": 1, "test": 1}
  assert min(min(v) for v in identities.values()) >= synthetic_dataset.LABELLED_FIRST_IDENTITY
  for split, shards in paths.items():
    for clip in grain_pipeline.load_eval_clips(shards):
      assert clip["split"] == split and clip["identity_id"] in identities[split]
      assert 0 <= clip["emotion"] < len(schema.EMOTION_NAMES)
      assert clip["actions"].shape == (6, len(schema.ACTION_NAMES))
  again = synthetic_dataset.ensure_labelled_dataset(
      str(tmp_path / "labelled"), num_identities=5, clips_per_identity=2, clip_frames=6,
      image_size=16, seed=0)
  assert again == paths
  with pytest.raises(ValueError, match="leaves a split without speakers"):
    synthetic_dataset.ensure_labelled_dataset(str(tmp_path / "x"), num_identities=4,
                                              clips_per_identity=2, clip_frames=6, image_size=16, seed=0)


def test_videos_average_sampled_frame_features_and_take_any_flagged_frame():
  config = demo.get_config("tiny")
  entry = probe_evaluator.entry_of(config)
  evaluators.override(entry, {"frames": [2], "feature": "prompts"}, config)
  actions = np.zeros((5, len(schema.ACTION_NAMES)), np.uint8)
  actions[4, 1] = 1  # on a frame the 2-frame sample does not read
  clip = {"emotion": 2, "actions": actions, "frames": np.zeros((5, 16, 16, 3), np.uint8)}
  unlabelled = dict(clip, emotion=-1, actions=None)
  evaluator = probe_evaluator.Evaluator(entry, config, model=synclipmae.build(config.model),
                                        clips={s: [clip, unlabelled] for s in schema.SPLITS})
  parts = np.arange(5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3)
  features = {s: [parts, parts] for s in schema.SPLITS}
  emotion = evaluator.videos(features, "emotion", 2)["test"]
  # One sample for the labelled video, none for the unlabelled one; 2 frames of 5 are the centres
  # of the halves [0, 2.5) and [2.5, 5): frames 1 and 3.
  assert emotion.targets.tolist() == [2]
  np.testing.assert_allclose(emotion.features[0], parts[[1, 3], :3].reshape(2, 9).mean(0))
  # The video shows action 1 (on frame 4), sampled or not.
  assert evaluator.videos(features, "actions", 2)["train"].targets.tolist() == [[0, 1, 0]]


def test_classes_come_from_the_datasets_labels(tmp_path):
  """A prepared dataset's labels.json sets the classes (8 emotions where the synthetic set has 5),
  and records whose action columns it does not name are refused with both counts."""
  config = demo.get_config("tiny")
  entry = probe_evaluator.entry_of(config)
  evaluators.override(entry, {"frames": [2], "feature": "vocal",
                              "pattern": str(tmp_path / "train-*.array_record")}, config)
  names = ("neutral", "happy", "sad", "anger", "fear", "surprise", "disgust", "contempt")
  labels.write(str(tmp_path), labels.Labels(names, ("talk", "nod")))
  rng = np.random.default_rng(0)
  clips = {s: [{"emotion": int(e), "actions": rng.integers(0, 2, (4, 2)).astype(np.uint8),
                "frames": np.zeros((4, 16, 16, 3), np.uint8)} for e in (7, 6, 0, 7, 6, 0)]
           for s in schema.SPLITS}
  evaluator = probe_evaluator.Evaluator(entry, config, model=synclipmae.build(config.model),
                                        clips=clips)
  features = {s: [rng.normal(size=(4, 4, 3)).astype(np.float32) for _ in clips[s]]
              for s in schema.SPLITS}
  _, details = evaluator.fit(features)
  assert details["emotion@2"]["classes"] == list(names)
  assert details["actions@2"]["classes"] == ["talk", "nod"]
  # Emotion 7 (contempt) is a class of its own: its one-vs-rest AUC is scored.
  assert details["emotion@2"]["test"]["classes_scored"] == 3
  labels.write(str(tmp_path), labels.Labels(names, ("talk", "nod", "smile")))
  evaluator = probe_evaluator.Evaluator(entry, config, model=synclipmae.build(config.model),
                                        clips=clips)
  with pytest.raises(ValueError, match=r"the records flag 2 actions, the dataset's labels name 3"):
    evaluator.fit(features)


def test_bad_options_are_refused_before_anything_loads():
  config = demo.get_config("tiny")
  entry = probe_evaluator.entry_of(config)
  with pytest.raises(ValueError, match="unknown probe evaluator option 'features'"):
    evaluators.override(entry, {"features": "vocal"}, config)
  with pytest.raises(ValueError, match="feature='lips' must be one of"):
    evaluators.override(entry, {"feature": "lips"}, config)
  with pytest.raises(ValueError, match="protocol='windows' must be one of"):
    evaluators.override(entry, {"protocol": "windows"}, config)
  with pytest.raises(ValueError, match=r"frames=\(16, 40\) must be multiples of clip_length=16"):
    evaluators.override(probe_evaluator.entry_of(demo.get_config("tiny")),
                        {"protocol": "clips", "frames": [16, 40]}, config)
  with pytest.raises(ValueError, match=r"frames=\(0, 16\) must be counts >= 1"):
    evaluators.override(probe_evaluator.entry_of(demo.get_config("tiny")), {"frames": [0, 16]},
                        config)
  # A training config with an older version's probe options is refused (config validation runs
  # this validate), naming the renamed option.
  from synclipmae_jax import config_defaults  # pylint: disable=import-outside-toplevel
  old = config_defaults.probe_eval_config()
  del old["frames"]
  old.clip_frames = (16, 80)
  problems = probe_evaluator.validate(old, config)
  assert problems == [
      "options unknown ['clip_frames'], missing ['frames']: the options are those of "
      "config_defaults.probe_eval_config (clip_frames is now frames: the frames sampled per video)"]


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory):
  _, workdir, _ = tiny_run
  out = str(tmp_path_factory.mktemp("probe"))
  probe_tool.main(types.SimpleNamespace(workdir=[workdir], step=None, random_init=True, out=out,
                                        option=[f"{k}={json.dumps(v)}" for k, v in SMALL.items()]))
  with open(os.path.join(out, probe_tool.REPORT_JSON)) as f:
    return json.load(f), out


def test_command_probes_the_checkpoint_and_the_random_encoder(report):
  report, out = report
  names = [row["name"] for row in report["rows"]]
  assert names[1] == f"random init ({names[0]})"
  assert [row["step"] for row in report["rows"]] == [4, 0]
  for row in report["rows"]:
    assert set(row["metrics"]) == {f"probe/{t}_{f}@{n}" for t in ("emotion", "actions")
                                   for f in ("acc", "auc") for n in (4, 8)}
    for name, value in row["metrics"].items():
      assert np.isnan(value) or 0 <= value <= 100, name
    # 3 videos per speaker (3 / 1 / 1 speakers): one sample each at every frame count.
    for count in (4, 8):
      assert row["details"][f"emotion@{count}"]["num_videos"] == {
          "train": 9, "validation": 3, "test": 3}
    assert row["frames"] == 15 * 8 and row["extract_seconds"] > 0
    assert row["details"]["emotion@4"]["classes"] == list(schema.EMOTION_NAMES)
  with open(os.path.join(out, probe_tool.REPORT_MD)) as f:
    table = f.read().splitlines()
  assert table[0].endswith("scored per video: 4 / 8 frames sampled uniformly, frame predictions "
                           "averaged")
  header = [c.strip() for c in table[2].strip("|").split("|")]
  assert header[:4] == ["encoder", "step", "emotion ACC @4", "emotion AUC @4"] and len(header) == 10
  assert [line.split("|")[1].strip() for line in table[4:6]] == names


def test_extraction_does_not_depend_on_the_call_size(tiny_run):
  _, workdir, _ = tiny_run
  from synclipmae_jax import checkpointing  # pylint: disable=import-outside-toplevel
  restored = checkpointing.load(workdir)
  entry = probe_evaluator.entry_of(checkpointing.read_config(workdir))
  evaluators.override(entry, SMALL, restored.config)
  model = synclipmae.build(restored.config.model)
  clips = input_pipeline.labelled_clips(restored.config, pattern=entry.pattern,
                                        synthetic=entry.synthetic.to_dict())
  small = {s: c[:2] for s, c in clips.items()}
  whole = probe_evaluator.Evaluator(entry, restored.config, model=model, clips=small).extract(restored.params)
  entry.frames_per_call = 3
  pieces = probe_evaluator.Evaluator(entry, restored.config, model=model, clips=small).extract(restored.params)
  for split in small:
    for a, b in zip(whole[split], pieces[split]):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  # The command's random-init row (checkpointing.initial) is another encoder: 4 AdamW steps of
  # about the learning rate each moved every weight the loss reaches, which moves the features
  # far beyond the 1e-5 that chunking changes them by. (Whether a probe on 6 test clips then
  # scores differently is not guaranteed, so the report test does not ask it.)
  initial = checkpointing.initial(workdir)
  untrained = probe_evaluator.Evaluator(entry, restored.config, model=model, clips=small).extract(initial.params)
  moved = max(np.abs(a - b).max() for a, b in zip(whole["test"], untrained["test"]))
  assert moved > 1e-3 * max(np.abs(a).max() for a in whole["test"])
  # identity, vocal, ambient rows are the encoder's prompts; the last row the patch-token mean.
  frames = small["test"][0]["frames"]
  fn = frame_features.frame_features_fn(model)
  direct = np.asarray(fn(restored.params, frames))
  np.testing.assert_allclose(direct, whole["test"][0], rtol=1e-5, atol=1e-5)
  _, prompts = model.apply({"params": restored.params}, *_all_patches(model, frames), method=model.encode)
  np.testing.assert_allclose(direct[:, :3], prompts, rtol=1e-5, atol=1e-5)


def _all_patches(model, frames):
  from synclipmae_jax import objective  # pylint: disable=import-outside-toplevel
  patches = objective.images_to_patches(objective.frames_to_unit(frames), model.patch_size)
  n = model.grid * model.grid
  return patches, np.broadcast_to(np.arange(n), (len(frames), n))


def test_downstream_table_probes_per_video_and_redoes_an_older_report(tiny_run, tmp_path):
  """`synclipmae-downstream` probes with the per-video protocol by default, and a probe report
  kept in its root from other options (an older version's per-window one: `clip_frames`, no
  `protocol`) is made again rather than reused."""
  from synclipmae_jax.tools import downstream_table  # pylint: disable=import-outside-toplevel
  _, workdir, _ = tiny_run
  wanted = json.loads(json.dumps(probe_tool.probe_options(workdir, {}).to_dict()))
  assert wanted["protocol"] == "frames" and wanted["frames"] == [16, 80]
  assert downstream_table.cached_probes(str(tmp_path), wanted) is None
  older = {k: v for k, v in wanted.items() if k not in ("frames", "protocol", "clip_length")}
  for options, kept in ((dict(older, clip_frames=[16, 80]), False),
                        (dict(wanted, protocol="clips"), False), (wanted, True)):
    with open(tmp_path / probe_tool.REPORT_JSON, "w") as f:
      json.dump({"options": options, "rows": []}, f)
    assert (downstream_table.cached_probes(str(tmp_path), wanted) is not None) == kept
  assert downstream_table.markdown({"probe_options": wanted, "rows": []}).startswith(
      "Probes scored per video: 16 / 80 frames sampled uniformly, frame predictions averaged; "
      "feature: motion.")
