"""The figures of the linear probes (paper 4.2, Table 3): emotion (single-label) accuracy and
macro AUC, facial actions (multi-label) mean accuracy and mean AUC, one row per video (the
paper's video-level scoring; `evaluators/probe/__init__.py` makes the rows).

AUCs are scikit-learn's `roc_auc_score`, one class (or one action) against the rest, averaged
over the classes that the evaluated videos hold both with and without (a class absent from the
split, or present in every video, has no AUC and is left out of the mean; `classes_scored` says
how many entered it). All figures are percentages.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as sk_metrics


def mean_auc(scores: np.ndarray, targets: np.ndarray) -> tuple[float, int]:
  """(mean one-vs-rest AUC over the columns of targets [V, K] in {0, 1} that hold both values,
  in %; how many columns that is). scores [V, K]: higher = more likely. NaN when none qualifies."""
  targets = np.asarray(targets).astype(bool)
  aucs = [sk_metrics.roc_auc_score(targets[:, k], scores[:, k]) for k in range(targets.shape[1])
          if 0 < targets[:, k].sum() < len(targets)]
  return (100.0 * float(np.mean(aucs)) if aucs else float("nan")), len(aucs)


def single_label(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  """Emotion: logits [V, K], labels [V] in [0, K) -> {"acc", "auc", "classes_scored"}."""
  logits, labels = np.asarray(logits), np.asarray(labels)
  if labels.min(initial=0) < 0 or labels.max(initial=0) >= logits.shape[1]:
    raise ValueError(f"labels must be in [0, {logits.shape[1]}), got [{labels.min()}, {labels.max()}]")
  auc, scored = mean_auc(logits, np.eye(logits.shape[1], dtype=bool)[labels])
  return {"acc": 100.0 * float(np.mean(logits.argmax(1) == labels)), "auc": auc,
          "classes_scored": scored}


def multi_label(logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
  """Actions: logits [V, A] (an action is predicted where its logit > 0), targets [V, A] in {0, 1}
  -> {"acc": accuracy per action averaged over actions, "auc", "classes_scored"}."""
  logits, targets = np.asarray(logits), np.asarray(targets).astype(bool)
  auc, scored = mean_auc(logits, targets)
  return {"acc": 100.0 * float(np.mean((logits > 0) == targets)), "auc": auc,
          "classes_scored": scored}
