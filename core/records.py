"""Run records: the one home of their format. One JSON file per (upstream, task) evaluation.

A record holds, at the top level of its JSON object (in this order)::

    record_version  int, RECORD_VERSION (a reader refuses a newer one, naming the file)
    date            ISO 8601 UTC time the record was made
    task            {"name", "metrics": [...], "main_metric", "higher_is_better"}
    main_score      {"name", "value", "higher_is_better", "split": "test"}
    metrics         {split: {metric: value}}
    upstream        {"name", "ckpt", "ckpt_sha256", "num_layers", "hidden_size", "downsample_rate",
                     "params", "macs", "input_seconds", "macs_per_second", "latency_s",
                     "real_time_factor", "cost_source", "checkpoint_metadata",
                     "compression": {"method", "teacher", "sparsity", "dir"}}   (compressed models;
                     the checkpoint's metadata may add "kept_layers", "teacher_layers", "selected", ...)
    corpus          {"name", "source", "root", "fingerprint", "utterances": {split: n}}
    config          {"preset", "head", "train", "lr", "lr_sweep", "max_steps", "extract_dtype", "labels"}
    seeds           {"train": the head's seed}
    timing, device, git, versions, platform, hostname
    per_utterance   {"metric", "ids": [test utterance ids], "numerator": [...], "denominator": [...]}:
                    per test utterance, the counts whose summed ratio x100 is the main metric
                    (errors and reference length for WER/PER, correct and 1 for accuracies), from
                    which confidence intervals are recomputed (leaderboard.intervals); older
                    records lack it
    ...             what else the writer adds (selection, lr_sweep, history, layer_weights, command)

Paths in a record (checkpoint, corpus root, compression dir and teacher, the command's arguments)
are relative to the root of the repository the run was made in when they lie inside it
(:func:`core.paths.portable_path`), so a record holds no absolute path of the machine that made it.

:class:`Record` is the typed view every reader goes through; :func:`write_record` is the one
writer and :func:`load_record` / :func:`load_records` the readers. :func:`identity` says which
evaluation a record is a result of; the leaderboard (latest record per identity) and the resume
logic of ``harness run`` (skip an identity that has a record) both use it.

Files are written atomically under names that embed a timestamp and a random suffix, so two
processes writing records into the same directory never overwrite each other.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.files import WriteError, write_json, write_or_rescue

logger = logging.getLogger(__name__)

RECORD_VERSION = 1
#: The sections a record must have, with the JSON type each must be.
REQUIRED = {
    "record_version": int, "date": str, "task": dict, "main_score": dict, "metrics": dict,
    "upstream": dict, "corpus": dict, "config": dict,
}  # fmt: skip
#: Sections after the required ones, in the order they are written.
SECTIONS = ("seeds", "timing", "device", "git", "versions", "platform", "hostname")


_NUMBER = (int, float, type(None))
_TEXT = (str, type(None))
#: Optional fields readers use, with the JSON types they may have (null: absent): a record whose
#: fields have other shapes is refused on reading, naming its file, instead of failing a reader later.
OPTIONAL_FIELDS = {
    **{("upstream", key): _NUMBER for key in (
        "params", "macs", "input_seconds", "macs_per_second", "latency_s", "real_time_factor",
        "num_layers", "hidden_size", "downsample_rate")},
    ("upstream", "ckpt"): _TEXT, ("upstream", "ckpt_sha256"): _TEXT, ("upstream", "cost_source"): _TEXT,
    ("upstream", "compression"): (dict, type(None)), ("upstream", "checkpoint_metadata"): (dict, type(None)),
    ("upstream", "compression", "method"): _TEXT, ("upstream", "compression", "teacher"): _TEXT,
    ("upstream", "compression", "sparsity"): _NUMBER, ("upstream", "compression", "kept_layers"): _NUMBER,
    ("corpus", "name"): _TEXT, ("corpus", "fingerprint"): _TEXT, ("corpus", "root"): _TEXT,
    ("config", "preset"): _TEXT, ("seeds",): (dict, type(None)), ("seeds", "train"): (int, type(None)),
    ("command",): _TEXT, ("per_utterance",): (dict, type(None)),
}  # fmt: skip


_JSON_NAMES = {str: "a string", int: "an integer", float: "a number", dict: "an object", type(None): "null"}


class RecordError(ValueError):
    """A record file (or object) that does not follow this format; the message names the file."""


@dataclass(frozen=True)
class TaskInfo:
    """The task a record is a result of, and how its main metric is read."""

    name: str
    metrics: tuple[str, ...]
    main_metric: str
    higher_is_better: bool


@dataclass(frozen=True)
class RecordIdentity:
    """What a record is a result of: an upstream checkpoint on one task of one corpus under one
    downstream preset, with one head seed. Two records with equal identities are results of the
    same evaluation; records that differ only in the seed are repeats of one comparison."""

    corpus: str
    corpus_fingerprint: str | None
    preset: str | None
    upstream: str
    checkpoint: str | None  # content hash (``ckpt_sha256``); None for an upstream with no checkpoint
    task: str
    seed: int | None = None

    @property
    def section(self) -> tuple[str, str | None, str | None]:
        """(corpus, fingerprint, preset): scores are only compared within one section."""
        return (self.corpus, self.corpus_fingerprint, self.preset)


@dataclass(frozen=True)
class Record:
    """One run record. Build it with :meth:`create`, read it with :func:`load_record`."""

    record_version: int
    date: str
    task: TaskInfo
    main_score: float
    metrics: dict[str, dict[str, float]]
    upstream: dict[str, Any]
    corpus: dict[str, Any]
    config: dict[str, Any]
    sections: dict[str, Any] = field(default_factory=dict)  # seeds, timing, device, git, versions, ...
    extra: dict[str, Any] = field(default_factory=dict)  # what else the writer added
    path: Path | None = field(default=None, compare=False)  # the file it was read from

    # ------------------------------------------------------------------ building and parsing
    @classmethod
    def create(
        cls,
        *,
        task: TaskInfo,
        metrics: dict[str, dict[str, float]],
        upstream: dict[str, Any],
        corpus: dict[str, Any],
        config: dict[str, Any],
        sections: dict[str, Any],
        extra: dict[str, Any] | None = None,
    ) -> Record:
        """A new record dated now. ``metrics`` maps split -> metric -> value; the main score is test's."""
        if task.main_metric not in metrics.get("test", {}):
            raise RecordError(
                f"record for task {task.name!r} lacks the test value of its main metric {task.main_metric!r}"
            )
        unknown = sorted(set(sections) - set(SECTIONS))
        if unknown:
            raise RecordError(f"unknown record sections {unknown}; known: {', '.join(SECTIONS)}")
        return cls(
            record_version=RECORD_VERSION,
            date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            task=task,
            main_score=float(metrics["test"][task.main_metric]),
            metrics=metrics,
            upstream=upstream,
            corpus=corpus,
            config=config,
            sections=dict(sections),
            extra=dict(extra or {}),
        )

    @classmethod
    def from_dict(cls, data: Any, source: str | os.PathLike | None = None) -> Record:
        """Parse and check a record object; ``source`` (its file) is named in every error."""
        where = str(source) if source is not None else "record"
        if not isinstance(data, Mapping):
            raise RecordError(f"{where}: a record is a JSON object, got {type(data).__name__}")
        version = data.get("record_version")
        if version is None:
            raise RecordError(f"{where}: no record_version; not a run record of this harness")
        if not isinstance(version, int) or version < 1:
            raise RecordError(f"{where}: record_version {version!r} is not a positive integer")
        if version > RECORD_VERSION:
            raise RecordError(
                f"{where}: record_version {version} is newer than this code reads ({RECORD_VERSION}); "
                "update speech-prune-harness"
            )
        for key, kind in REQUIRED.items():
            if not isinstance(data.get(key), kind):
                raise RecordError(f"{where}: {key!r} must be a JSON {kind.__name__}, got {data.get(key)!r:.60}")
        task, main = data["task"], data["main_score"]
        try:
            info = TaskInfo(
                name=str(task["name"]),
                metrics=tuple(str(m) for m in task.get("metrics", [main["name"]])),
                main_metric=str(main["name"]),
                higher_is_better=bool(main["higher_is_better"]),
            )
            value = float(main["value"])
            upstream_name = data["upstream"]["name"]
        except (KeyError, TypeError, ValueError) as err:
            raise RecordError(f"{where}: bad task, main_score or upstream section ({type(err).__name__}: {err})") from None
        if not isinstance(upstream_name, str):
            raise RecordError(f"{where}: upstream.name must be a string, got {upstream_name!r}")
        _check_fields(data, where)
        known = {*REQUIRED, *SECTIONS}
        return cls(
            record_version=version,
            date=data["date"],
            task=info,
            main_score=value,
            metrics=data["metrics"],
            upstream=dict(data["upstream"]),
            corpus=dict(data["corpus"]),
            config=dict(data["config"]),
            sections={k: data[k] for k in SECTIONS if k in data},
            extra={k: v for k, v in data.items() if k not in known},
            path=Path(source) if source is not None else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this record, sections in the documented order."""
        return {
            "record_version": self.record_version,
            "date": self.date,
            "task": {
                "name": self.task.name,
                "metrics": list(self.task.metrics),
                "main_metric": self.task.main_metric,
                "higher_is_better": self.task.higher_is_better,
            },
            "main_score": {
                "name": self.task.main_metric,
                "value": self.main_score,
                "higher_is_better": self.task.higher_is_better,
                "split": "test",
            },
            "metrics": self.metrics,
            "upstream": self.upstream,
            "corpus": self.corpus,
            "config": self.config,
            **{k: self.sections[k] for k in SECTIONS if k in self.sections},
            **self.extra,
        }

    # ------------------------------------------------------------------ what readers ask
    @property
    def compression(self) -> dict[str, Any]:
        """``upstream.compression`` (method, teacher, sparsity, dir) of a compressed model, else ``{}``."""
        value = self.upstream.get("compression")
        return value if isinstance(value, dict) else {}

    @property
    def preset(self) -> str | None:
        return self.config.get("preset")

    @property
    def command(self) -> str | None:
        value = self.extra.get("command")
        return str(value) if value else None

    @property
    def seed(self) -> int | None:
        """The head's seed (``seeds.train``)."""
        seeds = self.sections.get("seeds")
        return seeds.get("train") if isinstance(seeds, dict) else None

    @property
    def per_utterance(self) -> dict[str, Any] | None:
        """Per test utterance counts of the main metric (see the module docstring), if recorded."""
        value = self.extra.get("per_utterance")
        return value if isinstance(value, dict) else None

    @property
    def device(self) -> Any:
        return self.sections.get("device")

    def cost(self, key: str) -> float | None:
        """A cost figure of the upstream (``params``, ``macs``, ``input_seconds``, ``macs_per_second``,
        ``real_time_factor``), None when absent."""
        value = self.upstream.get(key)
        return None if value is None else float(value)

    def macs_per_second(self) -> float | None:
        value = self.cost("macs_per_second")
        if value is None and self.cost("macs") is not None:
            value = self.cost("macs") / (self.cost("input_seconds") or 1.0)
        return value


def _check_fields(data: Mapping[str, Any], where: str) -> None:
    """Raise :class:`RecordError` naming ``where`` and the field when a field has the wrong shape."""
    for path, kinds in OPTIONAL_FIELDS.items():
        value: Any = data
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if not isinstance(value, kinds) or isinstance(value, bool) and kinds is _NUMBER:
            wanted = " or ".join(dict.fromkeys(_JSON_NAMES[k] for k in kinds if kinds is not _NUMBER or k is not int))
            raise RecordError(f"{where}: {'.'.join(path)} must be {wanted}, got {value!r:.60}; fix or remove the file")
    for split, values in data["metrics"].items():
        if not isinstance(values, Mapping) or not all(isinstance(v, _NUMBER) for v in values.values()):
            raise RecordError(f"{where}: metrics.{split} must map metric names to numbers, got {values!r:.60}; fix or remove the file")
    counts = data.get("per_utterance")
    if counts:
        lists = [counts.get(key) for key in ("ids", "numerator", "denominator")]
        if not all(isinstance(v, list) for v in lists) or len({len(v) for v in lists}) != 1:
            raise RecordError(f"{where}: per_utterance must hold lists ids, numerator, denominator of one length; fix or remove the file")


def identity(record: Record) -> RecordIdentity:
    """The evaluation ``record`` is a result of (see :class:`RecordIdentity`)."""
    return RecordIdentity(
        corpus=str(record.corpus.get("name", "unknown corpus")),
        corpus_fingerprint=record.corpus.get("fingerprint"),
        preset=record.preset,
        upstream=str(record.upstream["name"]),
        checkpoint=record.upstream.get("ckpt_sha256"),
        task=record.task.name,
        seed=record.seed,
    )


def write_record(record: Record, directory: str | os.PathLike) -> Path:
    """Write ``record`` atomically as ``<upstream>__<task>__<UTC time>__<random>.json``; returns the path.

    Raises:
        core.files.WriteError: ``directory`` cannot be written (a file, a full disk, ...); the record
            was then saved under the system's temporary directory, and the message says where.
    """
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    name = f"{_safe(record.upstream['name'])}__{_safe(record.task.name)}__{stamp}__{uuid.uuid4().hex[:8]}.json"

    def write(target: Path) -> Path:
        if target.exists() and not target.is_dir():
            raise WriteError(f"cannot write into records directory {target}: it is a file; give a directory", errno.ENOTDIR)
        write_json(target / name, record.to_dict())
        return target / name

    return write_or_rescue(write, directory, "record")


def load_record(path: str | os.PathLike) -> Record:
    """Read one record file; any problem raises :class:`RecordError` naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordError(f"{path}: cannot read the record ({err})") from None
    return Record.from_dict(data, source=path)


def load_records(directory: str | os.PathLike, strict: bool = False) -> list[Record]:
    """Every record in ``directory`` (``*.json``, sorted by file name, which starts with the UTC time).

    A directory that does not exist holds no records. A file that is not a valid record is skipped
    with a warning naming it and why, or, with ``strict``, raises :class:`RecordError`.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise RecordError(f"records directory {directory} is a file; give a directory")
    records = []
    for path in sorted(directory.glob("*.json")):
        try:
            records.append(load_record(path))
        except RecordError as err:
            if strict:
                raise
            logger.warning("skipping %s", err)
    return records


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", text)[:80]
