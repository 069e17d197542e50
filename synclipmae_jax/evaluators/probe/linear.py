"""Linear probes on cached features (paper 4.2, Table 3): one linear layer on frozen features.

The paper's video logits are the mean of one linear layer's logits over the video's sampled
frames (or clips); a linear layer, and the standardisation before it, commute with the mean, so
a video's logits are the layer applied to its mean sampled feature, and the probe trains and
scores on one (standardised) feature vector per video (`evaluators/probe/__init__.py` samples them).
Emotion is single-label (softmax cross-entropy), facial actions multi-label (sigmoid
cross-entropy per action).

Training is full-batch Adam (optax) from zero weights for a fixed number of steps, with weight
decay as an L2 penalty on the weights (coupled: `add_decayed_weights` before Adam, the
regularised logistic regression of classic linear probing); the learning rate and the weight
decay come from a small grid, every point of which trains in the same
vmapped, jitted call, and the point with the best validation figure is the one reported on the
test split (`select`).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from synclipmae_jax.evaluators.probe import metrics as probe_metrics


def _train_one(x, y, learning_rate, weight_decay, *, multi_label: bool, steps: int):
  """Weights {"w": [D, K], "b": [K]} of one probe: x [V, D], y [V, K] (one-hot or flags)."""
  params = {"w": jnp.zeros((x.shape[1], y.shape[1]), x.dtype), "b": jnp.zeros((y.shape[1],), x.dtype)}
  tx = optax.chain(optax.add_decayed_weights(weight_decay, mask={"w": True, "b": False}),
                   optax.adam(learning_rate))

  def loss_fn(p):
    logits = x @ p["w"] + p["b"]
    if multi_label:
      return optax.sigmoid_binary_cross_entropy(logits, y).mean()
    return optax.softmax_cross_entropy(logits, y).mean()

  def step(carry, _):
    p, opt_state = carry
    grads = jax.grad(loss_fn)(p)
    updates, opt_state = tx.update(grads, opt_state, p)
    return (optax.apply_updates(p, updates), opt_state), None

  (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), length=steps)
  return params


@functools.partial(jax.jit, static_argnames=("multi_label", "steps"))
def fit(x, y, learning_rates, weight_decays, *, multi_label: bool, steps: int):
  """Probes for every (learning_rates[i], weight_decays[i]): {"w": [G, D, K], "b": [G, K]}."""
  return jax.vmap(functools.partial(_train_one, multi_label=multi_label, steps=steps),
                  in_axes=(None, None, 0, 0))(x, y, learning_rates, weight_decays)


@dataclasses.dataclass
class Split:
  """One split of a probe task: video features [V, D] and targets (labels [V] for a single-label
  task, flags [V, K] for a multi-label one)."""

  features: np.ndarray
  targets: np.ndarray


def select(train: Split, validation: Split, test: Split, *, num_classes: int, multi_label: bool,
           learning_rates, weight_decays, steps: int) -> dict:
  """Trains the grid on `train` (features standardised with train's statistics), picks the point
  with the best validation figure (accuracy for single-label, mean AUC for multi-label; ties:
  the other one) and returns its validation and test figures (`metrics.py`) and the number of
  videos of each split."""
  for name, split in (("train", train), ("validation", validation), ("test", test)):
    if len(split.features) == 0:
      raise ValueError(f"the {name} split has no labelled videos")
  mean, std = train.features.mean(0), train.features.std(0) + 1e-6
  scale = lambda f: jnp.asarray((f - mean) / std, jnp.float32)  # noqa: E731
  grid = list(itertools.product(learning_rates, weight_decays))
  y = (train.targets.astype(np.float32) if multi_label
       else np.eye(num_classes, dtype=np.float32)[train.targets])
  probes = jax.device_get(fit(scale(train.features), jnp.asarray(y),
                              jnp.asarray([g[0] for g in grid], jnp.float32),
                              jnp.asarray([g[1] for g in grid], jnp.float32),
                              multi_label=multi_label, steps=steps))
  score = probe_metrics.multi_label if multi_label else probe_metrics.single_label

  def figures(i, split):
    return score(np.asarray(scale(split.features)) @ probes["w"][i] + probes["b"][i], split.targets)

  def rank(i):
    f = figures(i, validation)
    keys = ("auc", "acc") if multi_label else ("acc", "auc")
    return tuple(-np.inf if np.isnan(f[k]) else f[k] for k in keys)

  best = max(range(len(grid)), key=rank)
  return {"learning_rate": float(grid[best][0]), "weight_decay": float(grid[best][1]),
          "validation": figures(best, validation), "test": figures(best, test),
          "num_videos": {"train": len(train.features), "validation": len(validation.features),
                        "test": len(test.features)}}
