"""Every command the docs show exists and takes the flags they give it (issue 31).

Reads the fenced shell blocks of README.md, docs/*.md and launch/README.md; finds each console
script of pyproject.toml, each `python -m MODULE` (also `torchrun ... -m MODULE`) and each launch
script (`launch/tpu_pod.sh`, whose flags after `--` go to synclipmae_jax.main, and
`launch/slurm_gpu.sbatch`, whose flags all do); checks that the module exists and that every
`--flag` given to it is one the module declares (tests/command_flags.py; tests/test_command_help.py
checks that `--help` lists each of those, so every documented flag is in `--help`), and every
`--config.a.b=...` override a field of the config the command names (configs/*.py[:variant], read
with its `get_config`). Values are not checked: placeholders like WORKDIR are fine. Also: every
relative link of these files reaches a file (and heading) of the repository, and README.md stays
a front page."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import re
import shlex

import ml_collections
import pytest

from command_flags import PACKAGES, REPO, SCRIPTS, declared_flags, is_absl, module_path

DOCS = ["README.md", *sorted(f"docs/{n}" for n in os.listdir(os.path.join(REPO, "docs"))
                            if n.endswith(".md")), "launch/README.md"]
README_MAX_LINES = 250
SHELL = {"", "bash", "sh", "shell", "console"}  # fence languages read as command lines
SEPARATORS = {"|", "||", "&&", ";", "&"}
# modules outside the project that the docs run (their flags are theirs to check)
EXTERNAL_MODULES = {"tensorflow_datasets.scripts.cli.main", "pytest"}
# flags absl defines in every absl program
ABSL_OWN = {"help", "helpfull", "helpshort", "helpxml", "flagfile", "undefok", "alsologtostderr",
            "logtostderr", "log_dir", "verbosity", "v", "stderrthreshold", "showprefixforinfo",
            "only_check_args", "pdb_post_mortem", "run_with_pdb", "run_with_profiling"}
TPU_POD = os.path.join(REPO, "launch", "tpu_pod.sh")
SLURM = os.path.join(REPO, "launch", "slurm_gpu.sbatch")
MAIN = "synclipmae_jax.main"
LAUNCHED = {*SCRIPTS, "-m", "tpu_pod.sh", "slurm_gpu.sbatch"}  # the words that start a command


@dataclasses.dataclass
class Command:
  where: str           # doc:line
  module: str          # what runs the flags: a python module, or a launch script's path
  args: list[str]      # the tokens after the command's name
  default_config: str | None = None  # the config a launcher passes when the args name none


def fenced_blocks(text: str):
  """(first line number, language, lines) of each fenced code block of a Markdown text."""
  block, start, language = None, 0, ""
  for number, line in enumerate(text.split("\n"), 1):
    if line.startswith("```"):
      if block is None:
        block, start, language = [], number + 1, line[3:].strip()
      else:
        yield start, language, block
        block = None
    elif block is not None:
      block.append(line)


def logical_lines(start: int, lines: list[str]):
  """(line number, text) of each command line: backslash continuations joined, `$ ` prompts
  dropped."""
  pending, first = "", start
  for number, line in enumerate(lines, start):
    if not pending:
      first = number
    if line.endswith("\\"):
      pending += line[:-1] + " "
      continue
    text = (pending + line).strip()
    pending = ""
    yield first, text[2:] if text.startswith("$ ") else text


def _launcher_default_config(path: str) -> str:
  """The config a launch script passes when none is given, read from the script."""
  with open(path) as f:
    match = re.search(r'config="(?:\$\{CONFIG:-)?(configs/[^"}]+)', f.read())
  assert match, f"{path}: no default config found"
  return match.group(1)


def commands_of(line: str, where: str) -> list[Command]:
  """The commands on one command line (lines without one, e.g. a command's printed output, are
  not parsed)."""
  if not any(os.path.basename(w) in LAUNCHED for w in line.split()):
    return []
  try:
    tokens = shlex.split(line, comments=True)
  except ValueError as error:
    raise AssertionError(f"{where}: not a shell command line ({error}): {line}") from error
  segments, segment = [], []
  for token in tokens:
    if token in SEPARATORS:
      segments.append(segment)
      segment = []
    else:
      segment.append(token)
  segments.append(segment)
  found = []
  for segment in segments:
    for i, token in enumerate(segment):
      name = os.path.basename(token)
      if name in SCRIPTS:
        found.append(Command(where, SCRIPTS[name].split(":")[0], segment[i + 1:]))
      elif token == "-m" and i + 1 < len(segment):
        found.append(Command(where, segment[i + 1], segment[i + 2:]))
      elif name == "tpu_pod.sh":
        found.append(Command(where, TPU_POD, segment[i + 1:], _launcher_default_config(TPU_POD)))
      elif name == "slurm_gpu.sbatch":
        found.append(Command(where, SLURM, segment[i + 1:], _launcher_default_config(SLURM)))
      else:
        continue
      break
  return found


def documented_commands() -> list[Command]:
  found = []
  for doc in DOCS:
    with open(os.path.join(REPO, doc)) as f:
      text = f.read()
    for start, language, lines in fenced_blocks(text):
      if language in SHELL:
        for number, line in logical_lines(start, lines):
          found += commands_of(line, f"{doc}:{number}")
  return found


def _flag(token: str) -> tuple[str, str | None] | None:
  """(name, value) of a `--name[=value]` token (optional-argument brackets stripped), else None;
  ("", None) for a bare `--`."""
  token = token.strip("[]")
  if not token.startswith("--"):
    return None
  name, _, value = token[2:].partition("=")
  return name, value or None


@functools.cache
def _config(spec: str) -> ml_collections.ConfigDict:
  """The config of `configs/NAME.py[:variant]`, as config_flags builds it."""
  path, _, variant = spec.partition(":")
  match = re.fullmatch(r"configs/(\w+)\.py", path)
  assert match, f"not a config file of configs/: {spec}"
  return importlib.import_module(f"configs.{match.group(1)}").get_config(variant or None)


def _has_field(config: ml_collections.ConfigDict, path: str) -> bool:
  node = config
  for part in path.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return False
    node = node[part]
  return True


def python_problems(module: str, args: list[str], where: str,
                    default_config: str | None = None) -> list[str]:
  """What is wrong with running `python -m module args` as the docs write it."""
  declared = declared_flags(module)
  absl = is_absl(module)
  known = declared | (ABSL_OWN if absl else {"help"})
  flags = [f for f in map(_flag, args) if f and f[0]]
  configs = [value for name, value in flags if name == "config"]
  config = configs[-1] if configs else default_config
  problems = []
  for name, _ in flags:
    if name.startswith("config."):
      if "config" not in declared:
        problems.append(f"{where}: {module} has no --config for --{name}")
      elif config is None or "$" in config:
        problems.append(f"{where}: --{name} without a --config to check it against")
      elif not _has_field(_config(config), name[len("config."):]):
        problems.append(f"{where}: {config} has no field {name[len('config.'):]}")
    elif name not in known and not (absl and name.startswith("no") and name[2:] in declared):
      problems.append(f"{where}: {module} declares no --{name}")
  return problems


def tpu_pod_problems(command: Command) -> list[str]:
  """launch/tpu_pod.sh: its own options (its `case` patterns), then after `--` main's flags."""
  with open(TPU_POD) as f:
    own = set(re.findall(r"^\s*--([a-z_]+)(?:=\*)?\)", f.read(), re.MULTILINE))
  args = command.args
  ends = [i for i, token in enumerate(args) if token.strip("[]") == "--"]  # `[-- FLAGS]` in a usage
  split = ends[0] if ends else len(args)
  own_args = [f for f in map(_flag, args[:split]) if f and f[0]]
  problems = [f"{command.where}: tpu_pod.sh takes no --{name}" for name, _ in own_args
              if name not in own]
  configs = [value for name, value in own_args if name == "config"]
  return problems + python_problems(MAIN, args[split + 1:], command.where,
                                    configs[-1] if configs else command.default_config)


def problems_of(command: Command) -> list[str]:
  if command.module == TPU_POD:
    return tpu_pod_problems(command)
  if command.module == SLURM:
    return python_problems(MAIN, command.args, command.where, command.default_config)
  if command.module.split(".")[0] not in PACKAGES:
    if command.module in EXTERNAL_MODULES:
      return []
    return [f"{command.where}: `-m {command.module}` is neither the project's nor a known tool"]
  if module_path(command.module) is None:
    return [f"{command.where}: no module {command.module}"]
  return python_problems(command.module, command.args, command.where)


@pytest.fixture(scope="module")
def commands():
  return documented_commands()


def test_the_docs_show_commands(commands):
  """The reader finds the commands: most console scripts, main, and both launchers appear."""
  modules = {c.module for c in commands}
  assert {MAIN, TPU_POD, SLURM} <= modules, sorted(modules)
  scripts = {m.split(":")[0] for m in SCRIPTS.values()}
  assert len(scripts & modules) >= len(scripts) // 2, sorted(scripts - modules)


def test_every_documented_command_and_flag_exists(commands):
  problems = [p for c in commands for p in problems_of(c)]
  assert not problems, "\n".join(problems)


def test_the_checker_catches_a_wrong_command():
  """A misspelled flag, config field, module or console script is reported."""
  wrong = [
      "synclipmae-export --workdir=W --out=O --dtyp=bfloat16",
      "python -m synclipmae_jax.main --config=configs/demo.py --workdir=W --config.optim.lr=1",
      "python -m synclipmae_jax.tool.aot --config=configs/pretrain.py",
      "bash launch/tpu_pod.sh train --name=p --zones=z -- --config.data.batch=2",
      "synclipmae-train --workdir=W --config.seed=1",  # an override with no config to check
  ]
  found = [commands_of(line, f"case {i}") for i, line in enumerate(wrong)]
  assert [len(f) for f in found] == [1, 1, 1, 1, 1]
  reported = [problems_of(f[0]) for f in found]
  assert ["dtyp" in p for p in reported[0]] == [True], reported[0]
  assert ["optim.lr" in p for p in reported[1]] == [True], reported[1]
  assert reported[2] == ["case 2: no module synclipmae_jax.tool.aot"]
  assert len(reported[3]) == 2 and "--zones" in reported[3][0] and "data.batch" in reported[3][1]
  assert ["without a --config" in p for p in reported[4]] == [True], reported[4]
  # and the right spellings pass, with continuation lines, brackets and comments
  lines = list(logical_lines(1, [
      "synclipmae-export --workdir=W --out=O \\",
      "    [--dtype=bfloat16]   # a comment --not_a_flag",
      "python -m synclipmae_jax.main --config=configs/demo.py:quick --workdir=W "
      "--config.optim.learning_rate=1e-3 && synclipmae-probe --workdir=W --random_init"]))
  assert [n for n, _ in lines] == [1, 3]
  good = [c for n, line in lines for c in commands_of(line, f"line {n}")]
  assert len(good) == 3 and not [p for c in good for p in problems_of(c)]


def _slug(heading: str) -> str:
  """GitHub's anchor of a heading."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _outside_code(text: str) -> list[str]:
  lines, fenced = [], False
  for line in text.split("\n"):
    if line.startswith("```"):
      fenced = not fenced
    elif not fenced:
      lines.append(line)
  return lines


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_reach_their_files_and_headings(doc):
  path = os.path.join(REPO, doc)
  with open(path) as f:
    lines = _outside_code(f.read())
  problems = []
  for target in re.findall(r"\]\(([^)\s]+)\)", "\n".join(lines)):
    if re.match(r"[a-z]+:", target):
      continue  # https:, mailto:
    file, _, anchor = target.partition("#")
    file = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
    if not file.startswith(REPO + os.sep):
      continue  # outside the repository (../shared/...): not shipped with it
    if not os.path.exists(file):
      problems.append(f"{target}: no file {os.path.relpath(file, REPO)}")
    elif anchor:
      with open(file) as f:
        headings = {_slug(line.lstrip("#")) for line in _outside_code(f.read())
                    if line.startswith("#")}
      if anchor not in headings:
        problems.append(f"{target}: no heading #{anchor} in {os.path.relpath(file, REPO)}")
  assert not problems, "\n".join(problems)


def test_readme_is_a_front_page():
  with open(os.path.join(REPO, "README.md")) as f:
    lines = f.read().split("\n")
  assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"
