"""Label vocabularies from the data (data_pipelines/labels.py): manifest cells against the
dataset's names, the plan's sources, labels.json written and read back, bad names refused."""

import json

import pytest

from data_pipelines import labels, schema
from data_pipelines.prepare import plan, prepare

CELEBV_EMOTIONS = ("neutral", "happy", "sad", "anger", "fear", "surprise", "disgust", "contempt")


def test_cells_against_the_vocabularies():
  l = labels.Labels(CELEBV_EMOTIONS, ("talk", "nod", "smile"))
  assert [l.emotion_index(v, "x") for v in ("contempt", " anger ", "3", 7, "", None, -1)] == [
      7, 3, 3, 7, -1, -1, -1]
  assert l.action_flags("smile;talk", "x") == (1, 0, 1)
  assert l.action_flags(["nod"], "x") == (0, 1, 0)
  assert l.action_flags("none", "x") == l.action_flags([], "x") == (0, 0, 0)  # labelled, none
  assert l.action_flags("", "x") == l.action_flags(None, "x") == ()  # unknown
  with pytest.raises(ValueError, match=r"row 3: emotion 'bored' is neither an index nor one of"):
    l.emotion_index("bored", "row 3")
  with pytest.raises(ValueError, match=r"emotion 8 out of range \[-1, 8\)"):
    l.emotion_index(8, "row 3")
  with pytest.raises(ValueError, match=r"actions \['wink'\] are not among"):
    l.action_flags("talk;wink", "row 3")
  # The synthetic set's names are the default.
  assert labels.Labels().emotions == schema.EMOTION_NAMES
  assert labels.Labels().actions == schema.ACTION_NAMES


@pytest.mark.parametrize("names", [("a", "a"), ("a", ""), ("a;b",), (" a",), ("none",)])
def test_bad_names_are_refused(names):
  with pytest.raises(ValueError, match="names must be unique"):
    labels.Labels(emotions=names)


def test_plan_sources_carry_the_datasets_labels(tmp_path):
  (tmp_path / "m.csv").write_text("path,speaker,emotion,actions\n"
                                  "a.mp4,s1,contempt,talk;smile\n"
                                  "b.mp4,s2,,none\n"
                                  "c.mp4,s3,fear,\n")
  l = labels.Labels(CELEBV_EMOTIONS, ("talk", "nod", "smile"))
  p = plan.make_plan(plan.read_manifest(str(tmp_path / "m.csv")), root=None, seed=0,
                     validation_fraction=0, test_fraction=0, files_per_shard=4, labels=l)
  assert [(s["emotion"], s["actions"]) for s in p["sources"]] == [
      (7, [1, 0, 1]), (-1, [0, 0, 0]), (4, [])]
  with pytest.raises(ValueError, match="give the dataset's names with --emotions"):
    plan.make_plan(plan.read_manifest(str(tmp_path / "m.csv")), root=None, seed=0,
                   validation_fraction=0, test_fraction=0, files_per_shard=4)


def test_written_and_read_back_and_the_synthetic_names_without_a_file(tmp_path):
  assert labels.read(str(tmp_path)) == labels.Labels()
  l = labels.Labels(CELEBV_EMOTIONS, ("talk",))
  labels.write(str(tmp_path), l)
  assert labels.read(str(tmp_path)) == l
  assert json.loads((tmp_path / labels.FILE).read_text()) == {
      "emotions": list(CELEBV_EMOTIONS), "actions": ["talk"]}


def test_the_command_takes_the_names_and_refuses_bad_ones(tmp_path, capsys):
  (tmp_path / "m.csv").write_text("path,emotion\nmissing.mp4,bored\n")
  with pytest.raises(ValueError, match="emotion 'bored'"):  # checked before any file is read
    prepare.main(["--manifest", str(tmp_path / "m.csv"), "--output", str(tmp_path / "out"),
                  "--emotions", "calm,happy", "--no_progress", "--workers", "0"])
  with pytest.raises(SystemExit):
    prepare.main(["--manifest", str(tmp_path / "m.csv"), "--output", str(tmp_path / "out"),
                  "--actions", "talk,,nod"])
  assert "names must be unique" in capsys.readouterr().err
