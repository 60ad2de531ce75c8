"""The processes ``harness run`` runs its jobs in: this one, or a pool of spawned workers.

:class:`Workers` hands each job's outcome (its result, or the exception it raised) back as jobs
finish, including jobs submitted while the results are read, so the pipeline can queue an
evaluation as soon as its checkpoint exists. Each worker gets an equal share of the CPU threads,
and dies with the ``harness run`` process, even when that is killed with SIGKILL.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

logger = logging.getLogger(__name__)


class Workers:
    """Runs jobs in this process (``jobs == 1``) or in a pool of spawned worker processes.

    Each worker gets an equal share of the CPU threads. ``results()`` yields ``(key, outcome)`` as
    jobs finish, including jobs submitted while iterating; a job's exception is its outcome.
    """

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self._pool = None
        self._pending: dict = {}
        self._inline: list = []

    def __enter__(self) -> Workers:
        if self.jobs > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            threads = max(1, (os.cpu_count() or 1) // self.jobs)
            logger.info("running jobs in %d worker processes, %d torch thread(s) each", self.jobs, threads)
            self._pool = ProcessPoolExecutor(
                self.jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                initargs=(threads, logging.getLogger().getEffectiveLevel()),
            )  # fmt: skip
            self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_on_sigterm)
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self._pool is None:
            return
        signal.signal(signal.SIGTERM, self._previous_sigterm)
        if exc_type is not None:
            # Interrupted (SIGTERM, Ctrl-C) or failed: stop the workers now rather than let them
            # finish their jobs unsupervised. Records are written then renamed, so a killed
            # worker leaves none half-written, and a rerun resumes from the records that exist.
            for process in list(getattr(self._pool, "_processes", {}).values()):
                process.terminate()
            self._pool.shutdown(wait=True, cancel_futures=True)
            return
        self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, key: tuple, fn, *args) -> None:
        if self._pool is None:
            self._inline.append((key, fn, args))
        else:
            self._pending[self._pool.submit(fn, *args)] = key

    def results(self):
        while self._inline:
            key, fn, args = self._inline.pop(0)
            try:
                outcome = fn(*args)
            except Exception as err:  # noqa: BLE001 - handed to the caller as the outcome
                outcome = err
            yield key, outcome
        from concurrent.futures import FIRST_COMPLETED, wait

        while self._pending:
            done, _ = wait(list(self._pending), return_when=FIRST_COMPLETED)
            for future in done:
                key = self._pending.pop(future)
                error = future.exception()
                yield key, error if error is not None else future.result()


def _raise_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _init_worker(threads: int, level: int) -> None:
    """Give a fresh worker its share of threads, for torch and for the BLAS/OpenMP pools that
    numpy, scipy and scikit-learn load later (they read these variables when first loaded)."""
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(threads)
    import torch

    torch.set_num_threads(threads)
    _die_with_parent()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def _die_with_parent() -> None:
    """On Linux, have the kernel send this worker SIGTERM when the ``harness run`` process dies,
    even by SIGKILL, so no orphaned worker goes on writing records."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        logger.debug("prctl(PR_SET_PDEATHSIG) unavailable; workers outlive a killed parent")
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)
