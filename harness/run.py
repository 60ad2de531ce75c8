"""``harness run``: compress, register, evaluate, compare, publish, as one resumable pipeline.

1. the corpus (SynthSpeech tiny by default, generated on first use) and the teacher (the embedded
   SynthSpeech HuBERT by default; any spec ``upstreams.load_upstream`` takes);
2. each compression method writes compact checkpoints under ``OUT/``: one per target size for a
   method that takes one (DPHuBERT: ``OUT/dphubert-0.75``, one per ``--sparsity``), one for a method
   whose size is an outcome (convexity: ``OUT/convexity``), as each method's registry entry
   declares (``harness.compression.registry``); a finished checkpoint is reused. With ``--budgets
   matched`` the sweeping methods write every size they can make (convexity: ``OUT/convexity/layers-K``
   for every depth) and the targeting methods run at each of those sizes as well (DPHuBERT within
   1 % of each depth's parameters), so that methods are compared at equal budgets;
3. every compact model is evaluated as the s3prl upstream ``--upstream`` (``pruned_hubert``, ...),
   together with the unpruned teacher (converted to a compact checkpoint, the reference) and FBANK
   (the score's zero point); an (upstream, checkpoint, task, corpus, preset) with a record made with
   the preset's current head and schedule is skipped;
4. the leaderboard is regenerated from all records against the run's benchmark (its tasks, corpus
   and preset) and printed.

With ``jobs`` > 1 the steps run in that many spawned worker processes, each with an equal share of
the CPU threads: compressions start first and each compressed model's evaluation is queued as soon
as its checkpoint exists, while the references are evaluated beside them. The result does not
depend on the number of jobs (every step is seeded on its own).

Every option, name, output directory, the teacher and each compression's options are checked
before any work (:func:`check_config`), and the teacher is converted first: a run that cannot
finish says so at once. A failure in one method or one evaluation is logged with its cause and the
pipeline goes on; the run ends with a list of what failed and a non-zero exit code, and keeps
everything that worked (a record or checkpoint whose directory cannot be written is saved under the
system's temporary directory, and the failure says where).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from core.paths import CACHE_DIR, EMBEDDED_TEACHER, LEADERBOARD_DIR, RECORDS_DIR, RUN_OUT_DIR
from harness.compression.registry import METHODS, default_run_methods, finished_checkpoints, matched_targets
from harness.compression.sparsity import check_sparsity
from harness.devices import DEFAULT_DEVICE
from harness.workers import Workers
from tasks.benchmarks import FBANK, RUN_BENCHMARK, Benchmark
from tasks.corpora.resolve import DEFAULT_CORPUS
from tasks.schedules import DEFAULT_SCHEDULE

logger = logging.getLogger(__name__)


@dataclass
class RunConfig:
    """One ``harness run``; see ``harness run --help``."""

    upstream: str = "pruned_hubert"
    tasks: list[str] = field(default_factory=lambda: ["asr", "sid"])
    methods: list[str] = field(default_factory=default_run_methods)  # those declared in_default_run
    teacher: str = str(EMBEDDED_TEACHER)
    corpus: str = DEFAULT_CORPUS
    preset: str = DEFAULT_SCHEDULE
    sparsities: list[float] | None = None  # target sizes; None: each method's own default
    budgets: str = "default"  # or "matched": every swept size, and the targeting methods at each
    device: str = DEFAULT_DEVICE
    out: Path = RUN_OUT_DIR
    records_dir: Path = RECORDS_DIR
    leaderboard_dir: Path = LEADERBOARD_DIR
    cache_dir: Path = CACHE_DIR
    seed: int = 0  # of every method, and of the heads unless head_seeds is given
    head_seeds: list[int] | None = None  # one evaluation per seed and (upstream, task); None: [seed]
    max_steps: int | None = None
    jobs: int = 1  # parallel worker processes (compressions and evaluations overlap)
    cache_budget_gb: float | None = None  # per evaluation; None: harness.evaluation.plan's default share of the free space
    task_cuts: bool = True  # with convexity: one cut per task from its own label's curve (OUT/convexity-cuts/TASK)
    cut_labels: dict[str, str] | None = None  # task -> label type, overriding Task.convexity_labels
    average: str | None = None  # convexity over classes (None: the harness's default) or over pairs (nnconvexity)
    command: str | None = None

    def evaluation_seeds(self) -> list[int]:
        return list(self.head_seeds) if self.head_seeds else [self.seed]

    def benchmark(self, corpus: Path) -> Benchmark:
        """The benchmark this run declares: its tasks, on its (prepared) corpus, under its preset."""
        from tasks.corpora.manifest import CorpusInfo

        name = CorpusInfo.read(corpus).name
        return Benchmark(RUN_BENCHMARK, tuple(self.tasks), corpus=name, schedule=self.preset, corpus_spec=self.corpus)


@dataclass
class Candidate:
    """One upstream to evaluate: an s3prl hub name and its checkpoint (None for FBANK)."""

    label: str
    upstream: str
    ckpt: str | None
    tasks: tuple[str, ...] | None = None  # a per-task cut is evaluated on its task only; None: the run's tasks
    features_from: str | None = None  # the teacher, when this is its first layers: it reads the teacher's features

    def tasks_of(self, config: RunConfig) -> list[str]:
        return list(self.tasks) if self.tasks else list(config.tasks)


def run(config: RunConfig) -> int:
    """Run the pipeline; returns 0 when every step worked, 1 when some failed (the rest is kept)."""
    from tasks.corpora.resolve import resolve_corpus

    check_config(config)
    # every step needs the teacher: a teacher that cannot be read (or fetched) ends the run here
    references = [Candidate("fbank", FBANK, None), Candidate("teacher", config.upstream, str(_teacher_checkpoint(config)))]
    corpus = resolve_corpus(config.corpus)
    failures: list[str] = []
    compressions, compressed = [], []
    teacher_hash = _teacher_hash(config)
    for job in _compression_jobs(config):
        finished = finished_checkpoints(job.out)
        if finished is not None:
            _check_same_teacher(job.out, teacher_hash)
            logger.info("%s: reusing the finished compression in %s", job.out.name, job.out)
            compressed.extend(_candidates(config, finished) + _task_cuts(config, job))
        else:
            compressions.append(job)

    with Workers(config.jobs) as workers:
        # longest first: compressions (the compressed models' evaluations wait for them), then references
        for job in compressions:
            workers.submit(("compress", job.method, job.out), _compress, config, job, corpus, teacher_hash)
        submitted = {candidate.label: _submit_evaluation(workers, config, candidate, corpus) for candidate in references}
        teacher_running = submitted["teacher"]
        waiting: list[Candidate] = []  # cuts of the teacher: they read its features once its evaluation made them
        for candidate in compressed:
            _submit_or_wait(workers, config, candidate, corpus, waiting if teacher_running else None)
        for (kind, *what), outcome in workers.results():
            if isinstance(outcome, Exception):
                step = f"compression {what[1].name}" if kind == "compress" else f"evaluation {what[0]}"
                failures.append(_failed(step, outcome))
            elif kind == "compress":
                job = next(j for j in compressions if j.out == what[1])
                for candidate in _candidates(config, outcome) + _task_cuts(config, job):
                    _submit_or_wait(workers, config, candidate, corpus, waiting if teacher_running else None)
            else:
                failures.extend(outcome)
            if kind == "evaluate" and what[0] == "teacher":  # done or failed: the cuts go (extracting if they must)
                teacher_running = False
                for candidate in waiting:
                    _submit_evaluation(workers, config, candidate, corpus)
                waiting.clear()

    _publish(config, corpus)
    if failures:
        logger.error("%d step(s) failed; everything else is kept:\n  %s", len(failures), "\n  ".join(failures))
        return 1
    return 0


def plan_run(config: RunConfig) -> str:
    """What :func:`run` would do, as text, doing none of it: the compressions (finished ones are
    reused), the evaluations without a record, and the teacher's feature plan (``harness evaluate
    --plan``), which bounds every compact model's (same width, at most as many layers)."""
    from harness.evaluation.config import EvaluateConfig
    from harness.evaluation.engine import plan
    from tasks.corpora.resolve import resolve_corpus

    check_config(config)
    corpus = resolve_corpus(config.corpus)  # SynthSpeech is generated on first use (a minute on a CPU)
    lines = ["## compressions", ""]
    jobs = _compression_jobs(config)
    for job in jobs:
        state = "finished, reused" if finished_checkpoints(job.out) is not None else "to run"
        options = ", ".join(f"{k}={v}" for k, v in job.options.items()) or "its defaults"
        lines.append(f"- {job.method} -> {job.out} ({options}): {state}")
    teacher = str(_teacher_checkpoint(config))
    per_model = len(config.tasks) * len(config.evaluation_seeds())
    references = [Candidate("fbank", FBANK, None), Candidate("teacher", config.upstream, teacher)]
    pending = sum(per_model - len(_recorded_tasks(config, candidate, corpus)) for candidate in references)
    lines += ["", "## evaluations", "",
              f"- references (FBANK, teacher): {pending} of {2 * per_model} without a record",
              f"- each compact model: {len(config.tasks)} task(s) x {len(config.evaluation_seeds())} head seed(s) = "
              f"{per_model}, for {len(jobs)} compression(s) (more with --budgets matched: one per depth)",
              "", "## features of the teacher (each compact model reads at most as much)", ""]  # fmt: skip
    teacher_config = EvaluateConfig(upstream=config.upstream, ckpt=teacher, tasks=list(config.tasks), corpus=corpus,
                                    preset=config.preset, device=config.device, cache_dir=config.cache_dir,
                                    max_steps=config.max_steps, cache_budget_gb=config.cache_budget_gb)  # fmt: skip
    lines.append(plan(teacher_config))
    return "\n".join(lines)


def check_config(config: RunConfig) -> None:
    """Refuse, before any work, everything the run would refuse later: names (methods, tasks,
    upstream entry), numbers, the device, the output directories, the teacher and every
    compression's options."""
    from core.registry import UnknownNameError
    from harness.commands import check_directories
    from harness.devices import resolve_device
    from tasks.registry import get_task
    from upstreams.importers import check_source
    from upstreams.s3prl_hub import ENTRIES, entry_family

    if not config.methods or not config.tasks:
        raise ValueError("--methods and --tasks must each name at least one")
    for name in config.methods:
        METHODS.get(name)  # unknown names fail before any work, with the known ones listed
    for name in config.tasks:
        get_task(name).preset(config.preset)
    if config.upstream not in ENTRIES:
        raise UnknownNameError(
            f"--upstream {config.upstream!r}: harness run evaluates its compact checkpoints through one of "
            f"{', '.join(sorted(ENTRIES))}"
        )
    if config.jobs < 1:
        raise ValueError(f"--jobs {config.jobs}: give 1 or more parallel workers")
    methods = [METHODS.get(name) for name in METHODS.names()]
    averages = list(dict.fromkeys(a for m in methods for a in m.averages))
    if config.average is not None and config.average not in averages:
        raise ValueError(f"--average {config.average!r}: choose one of {', '.join(averages)}")
    label_types = list(dict.fromkeys(label for m in methods for label in m.cut_label_types))
    for task, label in (config.cut_labels or {}).items():
        if task not in config.tasks or label not in label_types:
            raise ValueError(f"--cut-labels {task}={label}: give a task of --tasks ({', '.join(config.tasks)}) and a "
                             f"label type ({', '.join(label_types)})")  # fmt: skip
    if config.max_steps is not None and config.max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1, got {config.max_steps}")
    if config.sparsities is not None:
        check_sparsity(config.sparsities)
    resolve_device(config.device)
    check_directories(out=config.out, records=config.records_dir, leaderboard=config.leaderboard_dir, cache=config.cache_dir)
    from harness.evaluation.plan import resolve_budget

    resolve_budget(config.cache_dir, config.cache_budget_gb)  # a budget larger than the free space fails here
    teacher = check_source(config.teacher, "--teacher", family=entry_family(config.upstream))
    for job in _compression_jobs(config):
        METHODS.get(job.method).check(config.preset, {"seed": config.seed, **job.options}, teacher)


def _candidates(config: RunConfig, checkpoints: list[Path]) -> list[Candidate]:
    """The compact checkpoints of one compression as candidates, named by their place under ``OUT``.
    A checkpoint that is the teacher itself (a rule that keeps every layer) is not evaluated again:
    its row would repeat the teacher's."""
    out = Path(config.out)
    candidates = []
    for path in checkpoints:
        name = path.relative_to(out).as_posix() if path.is_relative_to(out) else path.name
        candidate = _teacher_cut(config, Candidate(name, config.upstream, str(path)))
        if candidate is not None:
            candidates.append(candidate)
    return candidates


def _teacher_cut(config: RunConfig, candidate: Candidate) -> Candidate | None:
    """``candidate`` reading the teacher's features when it is the teacher cut to its first layers
    (:func:`upstreams.checkpoint.truncation_depth`: no extraction of its own); None when it is the
    whole teacher unchanged (a rule that keeps every layer: its row would repeat the teacher's)."""
    from upstreams.checkpoint import read_compact_config, truncation_depth

    teacher = _teacher_checkpoint(config)
    depth = truncation_depth(candidate.ckpt, teacher)
    if depth is None:
        return candidate
    if depth == read_compact_config(teacher)[0].num_layers:
        logger.info("%s: keeps every weight of the teacher unchanged; its row is the teacher's, not evaluated again",
                    candidate.label)  # fmt: skip
        return None
    return dataclasses.replace(candidate, features_from=str(teacher))


def _submit_or_wait(
    workers: Workers, config: RunConfig, candidate: Candidate, corpus: Path, waiting: list[Candidate] | None
) -> None:
    """Queue ``candidate``'s evaluations, or, for a cut of the teacher while the teacher's evaluation
    is still running (``waiting`` given), keep it in ``waiting`` until that evaluation has cached
    the features it reads."""
    if candidate.features_from is not None and waiting is not None:
        waiting.append(candidate)
    else:
        _submit_evaluation(workers, config, candidate, corpus)


def _submit_evaluation(workers: Workers, config: RunConfig, candidate: Candidate, corpus: Path) -> bool:
    """Queue the (task, head seed) evaluations of ``candidate`` that have no record yet, as one job
    (they share its features); returns whether there were any."""
    from upstreams.identity import checkpoint_hash

    ckpt_sha256 = checkpoint_hash(candidate.ckpt)  # once per candidate: the records' check and the evaluation share it
    recorded = _recorded_tasks(config, candidate, corpus, ckpt_sha256)
    pending = []
    for task in candidate.tasks_of(config):
        for seed in config.evaluation_seeds():
            if (task, seed) in recorded:
                logger.info("%s / %s%s: record exists, skipped", candidate.label, task, _seed_text(config, seed))
            else:
                pending.append((task, seed))
    if pending:
        workers.submit(("evaluate", candidate.label), _evaluate_candidate, config, candidate, pending, corpus, ckpt_sha256)
    return bool(pending)


def _task_cuts(config: RunConfig, job: CompressionJob) -> list[Candidate]:
    """After a compression whose method cuts per task (``Method.task_cuts``): one cut of the
    teacher per task, where the curve of the task's own label type (``Task.convexity_labels``, or
    ``--cut-labels``) says, each evaluated on its task only, beside the method's model
    (``OUT/NAME-cuts/TASK``). A task whose curve keeps every layer has no cut (it would be the teacher)."""
    from tasks.registry import get_task

    write_cuts = METHODS.get(job.method).write_task_cuts
    if write_cuts is None or not config.task_cuts:
        return []
    labels = {task: (config.cut_labels or {}).get(task) or get_task(task).convexity_labels for task in config.tasks}
    cuts_dir = f"{job.out.name}-cuts"  # convexity-cuts (convexity-pairs-cuts under --average pairs)
    cuts = []
    for task, folder in write_cuts(config.teacher, job.out, labels, config.out / cuts_dir).items():
        if folder is None:
            continue
        cut = _teacher_cut(config, Candidate(f"{cuts_dir}/{task}", config.upstream, str(folder), (task,)))
        if cut is not None:
            cuts.append(cut)
    return cuts


def _seed_text(config: RunConfig, seed: int) -> str:
    return f" seed {seed}" if len(config.evaluation_seeds()) > 1 else ""


@dataclass(frozen=True)
class CompressionJob:
    """One checkpoint to make: the method, where it goes, and the options it is given (its target size)."""

    method: str
    out: Path
    options: dict = field(default_factory=dict)


def _compress(config: RunConfig, job: CompressionJob, corpus: Path, teacher_hash: str | None) -> list[Path]:
    """Run one compression; returns the compact checkpoints it wrote."""
    from core.files import write_json

    logger.info("%s: compressing %s into %s", job.method, config.teacher, job.out)
    method = METHODS.get(job.method)
    shared = {method.scores_cache_option: config.cache_dir / "convexity"} if method.scores_cache_option else {}
    method.compress(config.teacher, job.out, corpus=corpus, preset=config.preset, device=config.device,
                    seed=config.seed, **shared, **job.options)  # fmt: skip
    write_json(job.out / TEACHER_STAMP, {"teacher": config.teacher, "teacher_sha256": teacher_hash})
    finished = finished_checkpoints(job.out)
    if finished is None:
        raise RuntimeError(f"{job.method} returned without a finished compact checkpoint in {job.out}")
    return finished


#: Written beside each compact checkpoint the pipeline makes: which teacher (by content) it came from.
TEACHER_STAMP = "run_teacher.json"


def _teacher_hash(config: RunConfig) -> str | None:
    from upstreams.identity import checkpoint_hash

    try:
        return checkpoint_hash(config.teacher)
    except FileNotFoundError:
        return None  # a missing local path; check_config refuses it before this


def _check_same_teacher(out: Path, teacher_hash: str | None) -> None:
    """Refuse to reuse a checkpoint compressed from another teacher (a retrained one at the same path, say)."""
    import json

    stamp = out / TEACHER_STAMP
    if teacher_hash is None or not stamp.is_file():
        return
    recorded = json.loads(stamp.read_text(encoding="utf-8")).get("teacher_sha256")
    if recorded is not None and recorded != teacher_hash:
        raise ValueError(
            f"{out} was compressed from another teacher (its {TEACHER_STAMP} records sha256 {recorded[:12]}, "
            f"the teacher now is {teacher_hash[:12]}); give another --out or delete {out}"
        )


def _evaluate_candidate(
    config: RunConfig, candidate: Candidate, pending: list[tuple[str, int]], corpus: Path, ckpt_sha256: str | None
) -> list[str]:
    """Evaluate ``candidate`` on each (task, head seed) of ``pending`` in one evaluation session
    (the checkpoint hashed once, by the caller; the corpus read and the cost measured once);
    returns the failures (one failing spares the others)."""
    from harness.evaluation.config import EvaluateConfig
    from harness.evaluation.engine import evaluate_task, setup, split_plans
    from tasks.registry import get_task

    tasks = list(dict.fromkeys(task for task, _ in pending))
    seeds = sorted({seed for _, seed in pending})
    evaluation = EvaluateConfig(
        upstream=candidate.upstream, ckpt=candidate.ckpt, tasks=tasks, corpus=corpus, preset=config.preset,
        device=config.device, cache_dir=config.cache_dir, records_dir=config.records_dir, seed=seeds[0],
        head_seeds=seeds, max_steps=config.max_steps, cache_budget_gb=config.cache_budget_gb, command=config.command,
        ckpt_sha256=ckpt_sha256, features_from=candidate.features_from,
    )  # fmt: skip
    def step(task: str, seed: int) -> str:
        return f"evaluation {candidate.label} / {task}{_seed_text(config, seed)}"

    try:
        session = setup(evaluation)
        kinds = {(p.task, p.split): p.kind for p in split_plans(session)}  # before any work, as evaluate() plans
    except Exception as err:  # noqa: BLE001 - every pair of this candidate fails with it
        return [_failed(step(task, seed), err) for task, seed in pending]
    failures = []
    for task, seed in pending:
        try:
            evaluate_task(session, get_task(task), kinds, seed)
        except Exception as err:  # noqa: BLE001
            failures.append(_failed(step(task, seed), err))
    return failures


#: ``--budgets``: each method at its own size(s), or every method at the sizes the sweeping ones make.
BUDGETS = ("default", "matched")


def _compression_jobs(config: RunConfig) -> list[CompressionJob]:
    """Every compression the run's methods do, as their registry entries declare (see ``Method.jobs``;
    ``--budgets matched``: sweeps, and the targeting methods at every swept size)."""
    if config.budgets not in BUDGETS:
        raise ValueError(f"--budgets {config.budgets!r}: choose one of {', '.join(BUDGETS)}")
    methods = [METHODS.get(name) for name in config.methods]
    sweep = config.budgets == "matched"
    targets = matched_targets(methods, config.teacher, config.sparsities) if sweep else config.sparsities
    return [CompressionJob(method.name, config.out / folder, options)
            for method in methods for folder, options in method.jobs(targets, sweep=sweep, average=config.average)]  # fmt: skip


def _teacher_checkpoint(config: RunConfig) -> Path:
    """The teacher as a compact checkpoint, so that it loads through the same s3prl entry."""
    from upstreams import load_upstream
    from upstreams.checkpoint import is_compact_checkpoint, is_complete_checkpoint, save_compact
    from upstreams.cost import measure_cost, record_cost

    if is_compact_checkpoint(config.teacher):
        return Path(config.teacher)
    out = config.out / "teacher"
    if not is_complete_checkpoint(out):
        teacher = load_upstream(config.teacher)
        save_compact(teacher, out, metadata={"source": config.teacher})
        record_cost(out, measure_cost(teacher))
    return out


def _recorded_tasks(
    config: RunConfig, candidate: Candidate, corpus: Path, ckpt_sha256: str | None = None
) -> set[tuple[str, int]]:
    """(task, head seed) pairs that already have a record for this (upstream, checkpoint, corpus,
    preset), made with the preset's current head and schedule (``ckpt_sha256``: the checkpoint's
    hash when the caller has it)."""
    from core.records import RecordIdentity, identity, load_records
    from harness.evaluation.engine import same_schedule
    from tasks.corpora.manifest import CorpusInfo
    from tasks.registry import get_task
    from upstreams.identity import checkpoint_hash

    info = CorpusInfo.read(corpus)
    ckpt_hash = ckpt_sha256 or checkpoint_hash(candidate.ckpt)
    wanted = {
        RecordIdentity(info.name, info.fingerprint, config.preset, candidate.upstream, ckpt_hash, task, seed): (task, seed)
        for task in candidate.tasks_of(config)
        for seed in config.evaluation_seeds()
    }
    done = set()
    for record in load_records(config.records_dir):
        key = wanted.get(identity(record))
        if key is not None and same_schedule(record, get_task(key[0]), config.preset, config.max_steps):
            done.add(key)
    return done


def _publish(config: RunConfig, corpus: Path) -> None:
    from core.records import load_records
    from leaderboard.aggregate import build_leaderboard
    from leaderboard.render import to_markdown, write_leaderboard

    records = load_records(config.records_dir)
    if not records:
        logger.error("no records in %s: nothing to put on the leaderboard", config.records_dir)
        return
    tables = build_leaderboard(records, config.benchmark(corpus))
    print(to_markdown(tables, config.command))  # noqa: T201 - the leaderboard is this command's output (first: it is shown even if writing fails)
    write_leaderboard(tables, config.leaderboard_dir, command=config.command)
    logger.info("leaderboard written to %s", os.fspath(config.leaderboard_dir))


def _failed(step: str, err: Exception) -> str:
    logger.error("%s failed: %s: %s", step, type(err).__name__, err, exc_info=logger.isEnabledFor(logging.DEBUG))
    return f"{step}: {type(err).__name__}: {err}"
