"""What a checkpoint conversion did: every mapping, every unused key, every problem.

A converter never drops anything silently: each checkpoint key is either mapped to a parameter
(`Mapping`), reported as not used with a reason (`Unused`), or is a problem (an unknown key, a
missing key, a shape mismatch) that makes `LoadReport.check` raise one ValueError listing all
of them. Parameters the checkpoint does not provide are listed with the reason they keep their
initial values (`Kept`).
"""

from __future__ import annotations

import dataclasses

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Mapping:
  """Parameter `target` (a '/'-joined path) computed from checkpoint keys `sources`."""

  sources: tuple[str, ...]
  source_shapes: tuple[Shape, ...]
  target: str
  target_shape: Shape
  transform: str


@dataclasses.dataclass(frozen=True)
class Unused:
  """A checkpoint key that no parameter is computed from, and why."""

  key: str
  shape: Shape
  reason: str


@dataclasses.dataclass(frozen=True)
class Kept:
  """A parameter the checkpoint does not provide: it keeps its initial value."""

  target: str
  shape: Shape
  reason: str


@dataclasses.dataclass
class LoadReport:
  """The outcome of converting one checkpoint (`kind`: wav2vec2, sapiens or vitmae)."""

  kind: str
  path: str
  mappings: list[Mapping] = dataclasses.field(default_factory=list)
  unused: list[Unused] = dataclasses.field(default_factory=list)
  kept: list[Kept] = dataclasses.field(default_factory=list)
  notes: list[str] = dataclasses.field(default_factory=list)
  problems: list[str] = dataclasses.field(default_factory=list)

  def unknown_key(self, key: str, shape: Shape) -> None:
    self.problems.append(f"unknown key {key} {shape}")

  def missing_key(self, keys: tuple[str, ...], target: str, shape: Shape) -> None:
    self.problems.append(f"missing key {' + '.join(keys)} for {target} {shape}")

  def shape_mismatch(self, keys: tuple[str, ...], shapes: tuple[Shape, ...], target: str,
                     shape: Shape, detail: str = "") -> None:
    sources = ", ".join(f"{k} {s}" for k, s in zip(keys, shapes))
    self.problems.append(
        f"shape mismatch: {sources} -> {target} {shape}" + (f" ({detail})" if detail else ""))

  def check(self) -> None:
    """Raises ValueError listing every problem (unknown keys, missing keys, shape mismatches)."""
    if self.problems:
      raise ValueError(
          f"cannot load the {self.kind} checkpoint {self.path}: {len(self.problems)} problem(s)\n  "
          + "\n  ".join(self.problems))

  def summary(self) -> str:
    """One line: counts of mapped parameters, unused keys and parameters left at init."""
    return (f"{self.kind} checkpoint {self.path}: {len(self.mappings)} parameters loaded, "
            f"{len(self.unused)} checkpoint keys unused, {len(self.kept)} parameters kept at "
            f"their initial values, {len(self.problems)} problems")

  def format(self) -> str:
    """The full report: source key, shape -> target path, shape, transformation; then the rest."""
    lines = [self.summary()]
    lines += [f"  note: {note}" for note in self.notes]
    lines += [f"  PROBLEM: {problem}" for problem in self.problems]
    lines.append("  loaded:")
    for m in self.mappings:
      sources = " + ".join(f"{k} {s}" for k, s in zip(m.sources, m.source_shapes)) or "(none)"
      lines.append(f"    {sources} -> {m.target} {m.target_shape}: {m.transform}")
    lines.append("  unused checkpoint keys:")
    lines += [f"    {u.key} {u.shape}: {u.reason}" for u in self.unused] or ["    (none)"]
    lines.append("  parameters kept at their initial values:")
    lines += [f"    {k.target} {k.shape}: {k.reason}" for k in self.kept] or ["    (none)"]
    return "\n".join(lines)
