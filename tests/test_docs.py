"""The README and docs/ say only what is true of the tree: every Python snippet runs, every
`python -m` command names an entry point, config file, flags and config fields that exist, and
every relative link and repository path points at a file that is there.

The entry points' flags are read in one subprocess (absl flags are process-global, and several
entry points define the same flag name), the rest in this process.
"""

import functools
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from typing import Dict, List, NamedTuple, Tuple

import ml_collections
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The repository's `data/` and `launch/` install as `flaxflow.data` and `flaxflow.launch`.
INSTALLED_AS = {"launch": "flaxflow.launch", "data": "flaxflow.data"}
REPOSITORY_PATH = re.compile(r"^(?:flaxflow|data|launch|tests|docs)/[\w./-]*$")


def markdown_files(repo: str = REPO) -> List[str]:
  """README.md and every page under docs/, as paths relative to `repo`."""
  pages = ["README.md"]
  for folder, _, names in sorted(os.walk(os.path.join(repo, "docs"))):
    pages += sorted(os.path.relpath(os.path.join(folder, name), repo)
                    for name in names if name.endswith(".md"))
  return pages


class Block(NamedTuple):
  page: str
  line: int  # 1-based line of the block's first content line
  language: str
  text: str


def fenced_blocks(page: str, repo: str = REPO) -> List[Block]:
  blocks, language, start, body = [], None, 0, []
  with open(os.path.join(repo, page), encoding="utf-8") as file:
    for number, line in enumerate(file.read().split("\n"), 1):
      if line.startswith("```"):
        if language is None:
          language, start, body = line[3:].strip(), number + 1, []
        else:
          blocks.append(Block(page, start, language, "\n".join(body)))
          language = None
      elif language is not None:
        body.append(line)
  return blocks


def prose(page: str, repo: str = REPO) -> List[Tuple[int, str]]:
  """(line number, line) of the page outside fenced blocks."""
  lines, fenced = [], False
  with open(os.path.join(repo, page), encoding="utf-8") as file:
    for number, line in enumerate(file.read().split("\n"), 1):
      if line.startswith("```"):
        fenced = not fenced
      elif not fenced:
        lines.append((number, line))
  return lines


class Command(NamedTuple):
  where: str  # page:line
  words: Tuple[str, ...]


def shell_commands(repo: str = REPO) -> List[Command]:
  """Each command of the ```bash blocks, continuation lines joined and comments dropped."""
  commands = []
  for page in markdown_files(repo):
    for block in fenced_blocks(page, repo):
      if block.language not in ("bash", "sh", "shell"):
        continue
      joined, first = "", None
      for offset, line in enumerate(block.text.split("\n")):
        first = block.line + offset if first is None else first
        if line.rstrip().endswith("\\"):
          joined += line.rstrip()[:-1] + " "
          continue
        words = tuple(shlex.split(joined + line, comments=True))
        if words:
          commands.append(Command(f"{page}:{first}", words))
        joined, first = "", None
  return commands


def module_file(module: str, repo: str = REPO):
  """The file `python -m module` runs from the repository root, or None if there is none."""
  for folder, installed in INSTALLED_AS.items():
    if module.startswith(installed + ".") or module == installed:
      module = folder + module[len(installed):]
  path = os.path.join(repo, *module.split("."))
  for candidate in (path + ".py", os.path.join(path, "__main__.py")):
    if os.path.isfile(candidate):
      return candidate
  return None


def importable_name(module: str) -> str:
  """The installed name of a repository module (`launch.train` -> `flaxflow.launch.train`); a
  package's entry point is its `__main__`."""
  top = module.split(".")[0]
  name = INSTALLED_AS[top] + module[len(top):] if top in INSTALLED_AS else module
  path = module_file(module)
  return name + ".__main__" if path and path.endswith("__main__.py") else name


# Run in a subprocess: for each entry point, the flags it accepts. absl entry points define their
# flags on import (their `launch` modules are imported afresh each time, and the flags of the one
# before removed); argparse ones build their parser in `main`, whose `parse_args` is stopped.
_FLAG_READER = r"""
import argparse, importlib, json, sys
from absl import app, flags, logging  # app and logging: the flags every absl program has
from ml_collections import config_flags

class Parsed(Exception):
  "Raised instead of parsing: carries the entry point's parser."

def stop_parsing(parser, args=None, namespace=None):
  raise Parsed(parser)

argparse.ArgumentParser.parse_args = stop_parsing
built_in = set(flags.FLAGS)
table = {}
for name, path in json.loads(sys.argv[1]).items():
  for flag in set(flags.FLAGS) - built_in:
    delattr(flags.FLAGS, flag)
  for loaded in [m for m in sys.modules if m.startswith("flaxflow.launch")]:
    del sys.modules[loaded]
  if "ArgumentParser" in open(path).read():
    try:
      importlib.import_module(name).main([])
      raise SystemExit(f"{name}: main() never parsed its arguments")
    except Parsed as parsed:
      parser = parsed.args[0]
    table[name] = {"flags": sorted(o[2:] for o in parser._option_string_actions
                                   if o.startswith("--")), "booleans": [], "config_file": None}
  else:
    importlib.import_module(name)
    config, config_file = flags.FLAGS["config"] if "config" in flags.FLAGS else None, None
    if type(config).__name__ == "_ConfigFlag":
      try:
        config_file = config_flags.get_config_filename(config)
      except Exception:  # UnparsedFlagError: no default file, --config is required
        config_file = ""
    table[name] = {"flags": sorted(flags.FLAGS), "config_file": config_file,
                   "booleans": sorted(f for f in flags.FLAGS if flags.FLAGS[f].boolean)}
print("FLAGS " + json.dumps(table))
"""


@functools.lru_cache(maxsize=None)
def accepted_flags(modules: Tuple[str, ...]) -> Dict[str, dict]:
  """{importable name: {"flags", "booleans", "config_file"}} of each repository entry point."""
  paths = {importable_name(module): module_file(module) for module in modules}
  result = subprocess.run([sys.executable, "-c", _FLAG_READER, json.dumps(paths)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
  lines = [line for line in result.stdout.split("\n") if line.startswith("FLAGS ")]
  assert result.returncode == 0 and lines, result.stderr[-3000:]
  return json.loads(lines[-1][len("FLAGS "):])


@functools.lru_cache(maxsize=None)
def load_config(path_and_argument: str):
  path, _, argument = path_and_argument.partition(":")
  spec = importlib.util.spec_from_file_location(f"docs_config_{abs(hash(path))}", path)
  config_module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(config_module)
  return config_module.get_config(argument) if argument else config_module.get_config()


def has_field(config: ml_collections.ConfigDict, dotted: str) -> bool:
  """Whether `--config.<dotted>=...` names a field of `config` (a value has no fields)."""
  for field in dotted.split("."):
    if not isinstance(config, ml_collections.ConfigDict) or field not in config:
      return False
    config = config[field]
  return True


def python_module(words: Tuple[str, ...]):
  """`python -m X ...`'s X, else None."""
  if len(words) >= 3 and words[0] in ("python", "python3") and words[1] == "-m":
    return words[2]
  return None


def command_errors(command: Command, table: Dict[str, dict], repo: str = REPO) -> List[str]:
  """What in one documented command names something that does not exist."""
  words, module = command.words, python_module(command.words)
  if module is None:
    # Another program (pip, tensorboard) is not checked; a script of the tree must exist.
    if REPOSITORY_PATH.match(words[0]) and not os.path.isfile(os.path.join(repo, words[0])):
      return [f"{words[0]}: no such file"]
    return []
  if module.split(".")[0] not in ("flaxflow", *INSTALLED_AS):
    return [] if importlib.util.find_spec(module) else [f"python -m {module}: no such module"]
  if module_file(module, repo) is None:
    return [f"python -m {module}: no such module in the repository"]
  entry = table[importable_name(module)]
  errors, config_file = [], entry["config_file"]
  flags = [word[2:] for word in words[3:] if word.startswith("--")]
  for flag in flags:
    name, _, value = flag.partition("=")
    if name == "config" and config_file is not None:
      config_file = value
      if not os.path.isfile(os.path.join(repo, value.split(":")[0])):
        errors.append(f"--config={value}: no such file")
  for flag in flags:
    name = flag.partition("=")[0]
    if name.startswith("config.") and config_file is not None:
      path = os.path.join(repo, config_file)
      if os.path.isfile(path.split(":")[0]) and not has_field(load_config(path), name[7:]):
        errors.append(f"--{name}: {config_file} has no field {name[7:]!r}")
    elif not (name in entry["flags"]
              or (name.startswith("no") and name[2:] in entry["booleans"])):
      errors.append(f"--{name}: python -m {module} has no such flag")
  return errors


def entry_points(commands: List[Command]) -> Tuple[str, ...]:
  return tuple(sorted({module for module in map(python_module, (c.words for c in commands))
                       if module and module.split(".")[0] in ("flaxflow", *INSTALLED_AS)
                       and module_file(module)}))


def link_errors(page: str, repo: str = REPO) -> List[str]:
  """Relative markdown links, and paths of the tree in code spans, that point at nothing."""
  errors, folder = [], os.path.dirname(os.path.join(repo, page))
  for number, line in prose(page, repo):
    for target in re.findall(r"\]\(([^)\s]+)\)", line):
      if re.match(r"^[a-z]+:", target):
        continue  # http:, https:, mailto:
      path, _, anchor = target.partition("#")
      resolved = os.path.join(folder, path) if path else os.path.join(repo, page)
      if not os.path.exists(resolved):
        errors.append(f"{page}:{number}: link {target}: no such file")
      elif anchor and resolved.endswith(".md") and anchor not in heading_anchors(resolved):
        errors.append(f"{page}:{number}: link {target}: no such heading")
    for span in re.findall(r"`([^`]+)`", line):
      if REPOSITORY_PATH.match(span) and not os.path.exists(os.path.join(repo, span)):
        errors.append(f"{page}:{number}: {span}: no such file")
  return errors


def heading_anchors(path: str) -> set:
  """GitHub's anchors of a page's headings."""
  with open(path, encoding="utf-8") as file:
    headings = [line.lstrip("#").strip() for line in file if line.startswith("#")]
  return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


SNIPPETS = [block for page in markdown_files() for block in fenced_blocks(page)
            if block.language == "python"]
COMMANDS = shell_commands()


def test_the_docs_hold_snippets_and_commands():
  assert len(SNIPPETS) >= 3 and len(COMMANDS) >= 40


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"{s.page}:{s.line}" for s in SNIPPETS])
def test_python_snippet_runs(snippet):
  exec(compile(snippet.text, f"{snippet.page}:{snippet.line}", "exec"), {})


def test_every_command_names_what_exists():
  table = accepted_flags(entry_points(COMMANDS))
  errors = [f"{command.where}: {error}" for command in COMMANDS
            for error in command_errors(command, table)]
  assert not errors, "\n".join(errors)


@pytest.mark.parametrize("page", markdown_files())
def test_links_point_at_files(page):
  errors = link_errors(page)
  assert not errors, "\n".join(errors)


def test_a_broken_command_is_caught():
  """The checks fail on a missing module, config file, flag, config field and script."""
  broken = [Command("x:1", tuple(shlex.split(text))) for text in (
      "python -m launch.no_such_entry_point --workdir=/tmp/w",
      "python -m launch.train --config=launch/configs/no_such.py --workdir=/tmp/w",
      "python -m launch.train --workdir=/tmp/w --no_such_flag=1",
      "python -m launch.train --workdir=/tmp/w --config.optimizer.no_such_field=1",
      "launch/no_such_script.sh 0 1")]
  table = accepted_flags(entry_points(COMMANDS))
  assert [len(command_errors(command, table)) for command in broken] == [1, 1, 1, 1, 1]
