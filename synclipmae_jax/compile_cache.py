"""JAX's persistent compilation cache for a run: where (`config.compilation_cache_dir`), and
whether a compile was served from it.

On a pod every host compiles the same unscanned step for minutes, again at every restart; with a
cache folder in the run's bucket (`gs://...`: JAX reads and writes it through etils.epath) the
first host to compile a program stores it and every later launch loads it. The training log says
which it was for the train step (`Lookups`, from JAX's own monitoring events).
"""

from __future__ import annotations

import collections

import jax
from jax import monitoring

_HIT = "/jax/compilation_cache/cache_hits"
_MISS = "/jax/compilation_cache/cache_misses"
_events = collections.Counter()


def _count(event: str, **_) -> None:
  if event in (_HIT, _MISS):
    _events[event] += 1


monitoring.register_event_listener(_count)


def configure(directory: str) -> None:
  """Uses `directory` as the persistent cache ("" keeps JAX's default: the
  JAX_COMPILATION_CACHE_DIR environment variable, else no cache). Call before anything compiles."""
  if directory:
    jax.config.update("jax_compilation_cache_dir", directory)


class Lookups:
  """The persistent cache's hits and misses from `start()` to `outcome()` (this process)."""

  def __init__(self):
    self.start()

  def start(self) -> None:
    self._before = collections.Counter(_events)

  def outcome(self) -> str:
    """"hit" (every lookup served from the cache), "miss" (compiled, and stored if it took
    longer than jax_persistent_cache_min_compile_time_secs), "partly" or "off" (no lookup)."""
    hits, misses = _events[_HIT] - self._before[_HIT], _events[_MISS] - self._before[_MISS]
    if not hits + misses:
      return "off"
    return "hit" if not misses else "miss" if not hits else "partly"
