"""Declared benchmarks: which tasks, on which corpus, under which downstream schedule, scored
against which baseline and reference (in the manner of mteb's benchmark declarations).

The leaderboard aggregates records against a benchmark: its columns are the benchmark's tasks,
a task without a result is shown as missing (and makes the score missing), and results of other
tasks stay out of its table. ``harness leaderboard`` picks the declared benchmark whose corpus and
schedule match the records (or the one named by ``--benchmark``); ``harness run`` declares its
own from ``--tasks``, ``--corpus`` and ``--preset``.

Torch-free: the leaderboard imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.registry import Registry

#: Rows that are the score's zero point: upstream names.
FBANK = "fbank"
#: The embedded benchmark (SynthSpeech, demo heads): what ``harness evaluate`` runs by default.
DEFAULT_BENCHMARK = "synthspeech-demo"


@dataclass(frozen=True)
class Benchmark:
    """One benchmark.

    Args:
        name: registry name, e.g. ``synthspeech-demo``.
        tasks: task names (``tasks.registry``), in column order.
        corpus: the name a prepared corpus declares in its ``corpus.json`` (``synthspeech``,
            ``librispeech``, ...); records are matched on it.
        schedule: the downstream preset the heads are trained with (``demo`` or ``paper``).
        corpus_spec: what ``--corpus`` takes to get this corpus, when it needs no path (``synth``).
        baseline: the upstream whose results are the score's zero point.
        reference: which rows are the score's 1000 per task: ``uncompressed`` (the best row that is
            neither compressed nor the baseline, i.e. the teachers).
        description: one line for ``--help`` and the docs.
        superb_points: the corpus is prepared with SUPERB's splits, so the table also shows SUPERB's
            own per-task points (:mod:`leaderboard.superb_points`), comparable with published numbers.
    """

    name: str
    tasks: tuple[str, ...]
    corpus: str
    schedule: str
    corpus_spec: str | None = None
    baseline: str = FBANK
    reference: str = "uncompressed"
    description: str = ""
    superb_points: bool = False

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError(f"benchmark {self.name!r} has no tasks")
        if self.reference != "uncompressed":
            raise ValueError(f"benchmark {self.name!r}: unknown reference rule {self.reference!r}; use 'uncompressed'")

    def matches(self, corpus: str, schedule: str | None) -> bool:
        """Whether records of ``corpus`` under ``schedule`` are results of this benchmark's kind."""
        return corpus == self.corpus and schedule == self.schedule


BENCHMARKS: Registry[Benchmark] = Registry("benchmark")
#: the name of the undeclared benchmark of ``harness run --tasks`` (and ``harness leaderboard --tasks``):
#: those tasks on the run's corpus and preset
RUN_BENCHMARK = "harness run"


def register_benchmark(benchmark: Benchmark) -> Benchmark:
    BENCHMARKS.register(benchmark.name, benchmark)
    return benchmark


def get_benchmark(name: str) -> Benchmark:
    """The declared benchmark ``name``; an unknown name raises with the known ones."""
    return BENCHMARKS.get(name)


def find_benchmark(corpus: str, schedule: str | None) -> Benchmark | None:
    """The declared benchmark for records of ``corpus`` under ``schedule``, if there is exactly one."""
    found = [BENCHMARKS.get(name) for name in BENCHMARKS.names() if BENCHMARKS.get(name).matches(corpus, schedule)]
    return found[0] if len(found) == 1 else None


register_benchmark(Benchmark(
    "synthspeech-demo", ("asr", "pr", "sid", "slu"), corpus="synthspeech", schedule="demo", corpus_spec="synth",
    description="the embedded benchmark: SynthSpeech tiny, all four tasks, the CPU demo heads",
))  # fmt: skip
register_benchmark(Benchmark(
    "synthspeech-paper", ("asr", "pr", "sid", "slu"), corpus="synthspeech", schedule="paper", corpus_spec="synth",
    description="SynthSpeech with SUPERB's heads and schedules",
))  # fmt: skip
register_benchmark(Benchmark(
    "librispeech-paper", ("asr", "pr"), corpus="librispeech", schedule="paper",
    description="SUPERB ASR and PR: LibriSpeech train-clean-100 / dev-clean / test-clean",
    superb_points=True,
))  # fmt: skip
register_benchmark(Benchmark(
    "voxceleb1-paper", ("sid",), corpus="voxceleb1", schedule="paper",
    description="SUPERB SID: VoxCeleb1 identification split",
    superb_points=True,
))  # fmt: skip
register_benchmark(Benchmark(
    "fluent_commands-paper", ("slu",), corpus="fluent_commands", schedule="paper",
    description="SUPERB IC: Fluent Speech Commands intents",
    superb_points=True,
))  # fmt: skip
