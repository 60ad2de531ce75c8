"""Where things go by default: the one home of every path default of the ``harness`` commands.

Relative paths are relative to the current directory, so a run's data, caches and results sit
beside the command that made them. The embedded teacher is found next to the installed code.
What is written down for others (records, published tables) names paths relative to the
repository instead (:func:`portable_path`), and readers find them again with :func:`locate`.
"""

import os
import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: Corpora (generated or prepared on first use) go under this folder.
DATA_DIR = Path("data")
#: The feature cache, shared by every run.
CACHE_DIR = DATA_DIR / "cache"
#: Run outputs: compact checkpoints of ``harness run``, records, leaderboards.
RUNS_DIR = Path("runs")
RUN_OUT_DIR = RUNS_DIR / "run"
RECORDS_DIR = RUNS_DIR / "records"
LEADERBOARD_DIR = RUNS_DIR / "leaderboard"

#: Written by convexity pruning beside its checkpoint (curves per layer), read by the leaderboard.
CONVEXITY_FILE = "convexity.json"
#: Beside a compression that wrote several compact checkpoints: their subfolders, written last.
CHECKPOINTS_FILE = "checkpoints.json"

#: The HuBERT teacher pretrained on SynthSpeech and shipped with the code (see its MODEL_CARD.md).
EMBEDDED_TEACHER = Path(__file__).resolve().parent.parent / "upstreams" / "teachers" / "synth-hubert-tiny"


# ------------------------------------------------------------------------------ portable paths
# Records and published tables name files relative to the repository they were made in, never by
# the absolute path of the machine that made them, so that they read the same on every clone.


def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The repository holding ``start`` (default: the working directory): the nearest folder at or
    above it with a ``.git`` entry; ``start`` itself when there is none."""
    here = Path(start if start is not None else Path.cwd()).absolute()
    return next((folder for folder in (here, *here.parents) if (folder / ".git").exists()), here)


def portable_path(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """``path`` relative to ``root`` (default: :func:`repo_root`) when it is an absolute path inside
    it, in POSIX form (``runs/run/convexity``); anything else (relative paths, paths outside the
    root, hub names) exactly as given."""
    text = os.fspath(path)
    if not os.path.isabs(text):
        return text
    base = Path(root) if root is not None else repo_root()
    for inside, folder in ((Path(text), base), (Path(text).resolve(), base.resolve())):
        try:
            return inside.relative_to(folder).as_posix()
        except ValueError:
            continue
    return text


def portable_command(command: str, root: str | os.PathLike | None = None) -> str:
    """A command line with each absolute path argument (``PATH``, ``--option=PATH``, ``NAME:PATH``)
    inside ``root`` made relative to it (:func:`portable_path`); unchanged when nothing is."""
    try:
        words = shlex.split(command)
    except ValueError:  # unbalanced quotes: not ours to rewrite
        return command
    changed = [_portable_word(word, root) for word in words]
    return command if changed == words else shlex.join(changed)


def _portable_word(word: str, root: str | os.PathLike | None) -> str:
    """One argument: ``PATH``, ``--option=PATH`` or a ``NAME:PATH`` corpus spec."""
    option, equals, value = word.partition("=")
    if equals and option.startswith("-"):
        return f"{option}={_portable_word(value, root)}"
    name, colon, rest = word.partition(":")
    if colon and name and "/" not in name and rest.startswith("/"):
        return f"{name}:{portable_path(rest, root)}"
    return portable_path(word, root)


def portable_tree(value: Any, root: str | os.PathLike | None = None) -> Any:
    """A copy of a JSON-like ``value`` with every string that is an absolute path inside ``root``
    made relative (:func:`portable_path`) and every ``command`` entry's paths too."""
    base = Path(root) if root is not None else repo_root()
    if isinstance(value, dict):
        return {k: portable_command(v, base) if k == "command" and isinstance(v, str) else portable_tree(v, base)
                for k, v in value.items()}  # fmt: skip
    if isinstance(value, list | tuple):
        return type(value)(portable_tree(v, base) for v in value)
    if isinstance(value, str) and value.startswith("/"):
        return portable_path(value, base)
    return value


def locate(path: str | os.PathLike, bases: Iterable[str | os.PathLike | None]) -> Path:
    """Where a path from a record lies: an absolute one as given; a relative one under the first of
    ``bases`` (e.g. the repository root, the records' folder) where it exists, else under the first."""
    given = Path(path)
    if given.is_absolute():
        return given
    folders = [Path(b) for b in bases if b is not None]
    return next((f / given for f in folders if (f / given).exists()), folders[0] / given if folders else given)
