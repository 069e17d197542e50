"""Running an absl command from its console script so that `--help` explains the command.

A console script's `__main__` is the wrapper pip writes, not the command's module: absl's `--help`
shows the key flags of `__main__` (none) and its docstring (none), so `synclipmae-export --help`
printed only "USAGE: ... Try --helpfull". `run` makes the command module's flags key flags of the
main module and its docstring the usage text, then runs `main` with absl.
"""

from __future__ import annotations

import sys
from typing import Callable

from absl import app, flags

_PACKAGES = ("data_pipelines", "synclipmae_jax", "synclipmae_torch")


def run(main: Callable, module_name: str) -> None:
  """`app.run(main)` with `--help` listing the flags (and the docstring) of `module_name`."""
  module = sys.modules[module_name]
  key = list(flags.FLAGS.get_key_flags_for_module(module))
  # Flags this project's other modules define for the command: helpers it calls
  # (`prepare.define_video_preparation_flags(flags)`) and commands it builds on (aot-remat on aot).
  for name, defined in flags.FLAGS.flags_by_module_dict().items():
    if name != module_name and name.split(".")[0] in _PACKAGES:
      key += defined
  for flag in key:
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  main_module = sys.modules["__main__"]
  if main_module is not module and not main_module.__doc__:
    main_module.__doc__ = module.__doc__
  app.run(main)
