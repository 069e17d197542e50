"""Flat '/'-joined views of Flax parameter trees, conversion rules, and checked replacement.

A converter describes each target parameter as a `Rule`: the checkpoint keys it reads and the
function that turns those arrays into the parameter. `run_rules` applies the rules against a
state dict and the target shapes, recording every mapping and every problem in a `LoadReport`.
Layers under `nn.scan` (`model.scan_layers=True`) have one stacked `blocks/layers` subtree with a
leading depth axis; `per_layer_shapes` and `stack_layers` translate between that layout and the
per-layer `blocks/layers_{i}` paths the rules are written for.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Mapping as MappingType

import numpy as np

from synclipmae_jax.weights import report as report_lib

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Rule:
  """target parameter = fn(*[state_dict[k] for k in sources]); `transform` describes fn."""

  target: str
  sources: tuple[str, ...]
  fn: Callable[..., np.ndarray]
  transform: str


def layer_norm_rules(target: str, source: str) -> list[Rule]:
  """PyTorch LayerNorm `source.weight` / `source.bias` -> flax `target/scale` / `target/bias`."""
  return [Rule(f"{target}/scale", (f"{source}.weight",), np.asarray, "norm weight -> scale"),
          Rule(f"{target}/bias", (f"{source}.bias",), np.asarray, "copy")]


def flatten(tree: MappingType[str, Any], prefix: str = "") -> dict[str, Any]:
  """{'a/b/c': leaf} for a nested dict tree."""
  flat = {}
  for name, value in tree.items():
    path = f"{prefix}{name}"
    if isinstance(value, MappingType):
      flat.update(flatten(value, path + "/"))
    else:
      flat[path] = value
  return flat


def shapes(tree: MappingType[str, Any]) -> dict[str, Shape]:
  """{'a/b/c': shape} for a nested dict tree of arrays or ShapeDtypeStructs."""
  return {path: tuple(leaf.shape) for path, leaf in flatten(tree).items()}


def unflatten(flat: MappingType[str, Any]) -> dict[str, Any]:
  """The nested dict tree of a {'a/b/c': leaf} dict."""
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    *parents, name = path.split("/")
    node = tree
    for parent in parents:
      node = node.setdefault(parent, {})
    node[name] = value
  return tree


def replace(tree: MappingType[str, Any], updates: MappingType[str, np.ndarray]) -> dict[str, Any]:
  """A copy of `tree` with the leaves at `updates`' paths replaced (cast to the leaf's dtype).

  Raises:
    ValueError: listing every update whose path is not a leaf of `tree` or whose shape differs.
  """
  flat = flatten(tree)
  problems = [f"{path}: no such parameter" for path in updates if path not in flat]
  problems += [f"{path}: shape {tuple(np.shape(value))} != parameter shape "
               f"{tuple(flat[path].shape)}"
               for path, value in updates.items()
               if path in flat and tuple(np.shape(value)) != tuple(flat[path].shape)]
  if problems:
    raise ValueError("cannot replace parameters:\n  " + "\n  ".join(problems))

  def rebuild(node, prefix):
    out = {}
    for name, value in node.items():
      path = f"{prefix}{name}"
      if isinstance(value, MappingType):
        out[name] = rebuild(value, path + "/")
      elif path in updates:
        out[name] = np.asarray(updates[path]).astype(value.dtype)
      else:
        out[name] = value
    return out

  return rebuild(tree, "")


_SCANNED = re.compile(r"^(.*?blocks)/layers/(.*)$")


def per_layer_shapes(target_shapes: MappingType[str, Shape]) -> dict[str, Shape]:
  """Rewrites scanned `.../blocks/layers/<rest>` [depth, ...] as `.../blocks/layers_{i}/<rest>`."""
  out = {}
  for path, shape in target_shapes.items():
    match = _SCANNED.match(path)
    if match:
      for i in range(shape[0]):
        out[f"{match.group(1)}/layers_{i}/{match.group(2)}"] = shape[1:]
    else:
      out[path] = shape
  return out


def stack_layers(updates: MappingType[str, np.ndarray],
                 target_shapes: MappingType[str, Shape]) -> dict[str, np.ndarray]:
  """Stacks per-layer updates into the scanned `.../blocks/layers/<rest>` leaves of `target_shapes`.

  Leaves that are not scanned pass through. A scanned leaf is updated only if every layer is.
  """
  out = {path: value for path, value in updates.items() if path in target_shapes}
  for path, shape in target_shapes.items():
    match = _SCANNED.match(path)
    if not match:
      continue
    names = [f"{match.group(1)}/layers_{i}/{match.group(2)}" for i in range(shape[0])]
    present = [name in updates for name in names]
    if all(present):
      out[path] = np.stack([updates[name] for name in names])
    elif any(present):
      raise ValueError(f"{path}: only layers {np.flatnonzero(present).tolist()} of {shape[0]} "
                       "were converted")
  return out


def unstack_layers(flat: MappingType[str, Any]) -> dict[str, Any]:
  """Inverse of `stack_layers`: scanned `.../blocks/layers/<rest>` leaves [depth, ...] become
  `.../blocks/layers_{i}/<rest>`; other leaves pass through."""
  out = {}
  for path, value in flat.items():
    match = _SCANNED.match(path)
    if match:
      for i in range(value.shape[0]):
        out[f"{match.group(1)}/layers_{i}/{match.group(2)}"] = value[i]
    else:
      out[path] = value
  return out


def run_rules(rules: list[Rule], state_dict: MappingType[str, np.ndarray],
              target_shapes: MappingType[str, Shape], report: report_lib.LoadReport,
              key_names: MappingType[str, str] | None = None
              ) -> dict[str, np.ndarray]:
  """Applies `rules`; records mappings and problems in `report`, and every checkpoint key
  that no rule read as unknown (nothing is dropped silently).

  Args:
    rules: one per target parameter.
    state_dict: canonical checkpoint key -> array.
    target_shapes: parameter path -> shape (per-layer paths).
    report: receives a Mapping per converted parameter and a problem per missing key, shape
      mismatch or unknown key.
    key_names: canonical key -> the key as written in the checkpoint (for the report).

  Returns:
    parameter path -> array.
  """
  key_names = key_names or {}
  updates, consumed = {}, set()
  for rule in rules:
    target_shape = target_shapes[rule.target]
    names = tuple(key_names.get(k, k) for k in rule.sources)
    consumed.update(k for k in rule.sources if k in state_dict)
    missing = [k for k in rule.sources if k not in state_dict]
    if missing:
      report.missing_key(tuple(key_names.get(k, k) for k in missing), rule.target, target_shape)
      continue
    arrays = [state_dict[k] for k in rule.sources]
    source_shapes = tuple(tuple(a.shape) for a in arrays)
    try:
      value = np.asarray(rule.fn(*arrays))
    except ValueError as e:
      report.shape_mismatch(names, source_shapes, rule.target, target_shape, str(e))
      continue
    if tuple(value.shape) != target_shape:
      report.shape_mismatch(names, source_shapes, rule.target, target_shape,
                            f"{rule.transform} gives {tuple(value.shape)}")
      continue
    updates[rule.target] = value
    report.mappings.append(report_lib.Mapping(names, source_shapes, rule.target, target_shape,
                                              rule.transform))
  for key in sorted(set(state_dict) - consumed):
    report.unknown_key(key_names.get(key, key), state_dict[key].shape)
  return updates
