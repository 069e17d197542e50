"""The label vocabularies of a dataset: the emotion each `emotion` index names and the action each
column of `actions` flags (schema.py), so that the probes (paper 4.2) read users' labels with
their own classes.

A prepared dataset keeps them in `labels.json` beside its shards, `{"emotions": [...],
"actions": [...]}`, written by the preparation from `--emotions` / `--actions` (comma-separated
names, in index order). Without those flags, and for the synthetic sets, the vocabularies are the
synthetic renderer's (`schema.EMOTION_NAMES`, `schema.ACTION_NAMES`), which is also what a
dataset without the file is read as.

Manifest cells (`plan.read_manifest`): `emotion` is a name of the vocabulary or its index (empty:
unknown, -1); `actions` lists the names present in the clip, separated by ";" (JSON lines: a
list). Clip-level labels flag every frame of each clip kept from the file. An empty `actions` cell
is unknown (the clip leaves the actions probe); "none" (or an empty JSON list) is labelled with no
action present.

For orientation, the label sets the paper uses:
- CelebV-HQ (Table 3): 8 emotions (neutral, happy, sad, anger, fear, surprise, disgust,
  contempt) and 35 actions, one emotion and a set of actions per clip: give its emotion and action
  names as `--emotions` / `--actions` in the order of your annotation file and each clip's labels
  in the manifest.
- LRS3-style transcripts (Table 5, lip reading): the `transcript` cell of a file holds its
  sentence, as LRS3's `Text:` line does (upper-case words, no punctuation); the lip-reading task
  trains its SentencePiece units on the training split's transcripts, so no vocabulary is given.
"""

from __future__ import annotations

import dataclasses
import json
import os

from data_pipelines import schema

FILE = "labels.json"
NONE = "none"  # an actions cell saying: labelled, no action present
SEPARATOR = ";"  # between action names in a CSV cell


@dataclasses.dataclass(frozen=True)
class Labels:
  """The emotion and action names of a dataset, in index order."""

  emotions: tuple[str, ...] = schema.EMOTION_NAMES
  actions: tuple[str, ...] = schema.ACTION_NAMES

  def __post_init__(self):
    for kind, names in (("emotions", self.emotions), ("actions", self.actions)):
      if len(set(names)) != len(names) or any(not n or n != n.strip() or SEPARATOR in n
                                              or n == NONE for n in names):
        raise ValueError(f"{kind} {list(names)}: names must be unique, non-empty, without "
                         f"surrounding spaces or {SEPARATOR!r}, and not {NONE!r}")

  def emotion_index(self, value, where: str) -> int:
    """A manifest's emotion cell -> its index (-1 when empty)."""
    if value is None or (isinstance(value, str) and not value.strip()):
      return -1
    if isinstance(value, str) and value.strip() in self.emotions:
      return self.emotions.index(value.strip())
    try:
      index = int(value)
    except ValueError:
      raise ValueError(f"{where}: emotion {value!r} is neither an index nor one of {list(self.emotions)}"
                       " (give the dataset's names with --emotions)") from None
    if not -1 <= index < len(self.emotions):
      raise ValueError(f"{where}: emotion {index} out of range [-1, {len(self.emotions)})")
    return index

  def action_flags(self, value, where: str) -> tuple[int, ...]:
    """A manifest's actions cell -> one 0/1 flag per action, or () when unknown (empty)."""
    if value is None or (isinstance(value, str) and not value.strip()):
      return ()
    names = value if isinstance(value, list) else [
        n.strip() for n in str(value).split(SEPARATOR) if n.strip()]
    if names == [NONE]:
      names = []
    unknown = [n for n in names if n not in self.actions]
    if unknown:
      raise ValueError(f"{where}: actions {unknown} are not among {list(self.actions)} (give the "
                       "dataset's names with --actions)")
    return tuple(int(a in names) for a in self.actions)

  def to_json(self) -> dict:
    return {"emotions": list(self.emotions), "actions": list(self.actions)}


def parse_names(text: str | None) -> tuple[str, ...] | None:
  """A comma-separated flag value -> names (None for an absent flag)."""
  if text is None:
    return None
  return tuple(n.strip() for n in text.split(","))


def write(directory: str, labels: Labels) -> None:
  """Writes `labels.json` into `directory` (atomically)."""
  path = os.path.join(directory, FILE)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(labels.to_json(), f, indent=1)
  os.replace(path + ".tmp", path)


def read(directory: str) -> Labels:
  """The vocabularies of the dataset in `directory` (the synthetic ones without a labels.json)."""
  path = os.path.join(directory, FILE)
  if not os.path.exists(path):
    return Labels()
  with open(path, encoding="utf-8") as f:
    stored = json.load(f)
  return Labels(tuple(stored["emotions"]), tuple(stored["actions"]))
