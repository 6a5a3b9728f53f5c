"""A force field whose batches of displaced cells are shared with worker processes.

A phonon calculation's displaced cells are independent, and one torch thread per process is
the fastest way to run the compiled network on a CPU core (two threads in one process were
slower than one), so a machine's idle cores are used by more processes, not more threads.
Relaxation stays in the calling process: its steps depend on one another. Workers start the
first time a batch is large enough to share, each loading (and, when asked, compiling) the
potential once; until they are ready the calling process takes the work itself, chunk by chunk
from the back of the queue, so small hosts never wait for a worker to start.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from defectnet.datagen.calculators import ForceField
from defectnet.errors import UserError

log = logging.getLogger(__name__)

_worker_forcefield: ForceField | None = None


def force_workers(value) -> int:
    """How many processes share a batch: a positive integer, or ``auto`` for the CPU cores this
    process may run on."""
    if value == "auto":
        return len(os.sched_getaffinity(0))
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(
            f"force_workers={value!r}: give a number of processes (1: none besides this one) "
            "or auto (one per CPU core)."
        )
    return value


def _exit_with(parent: int) -> None:
    """End this worker when the process that started it is gone (killed, say): a worker
    otherwise waits for work forever."""
    while os.getppid() == parent:
        time.sleep(2)
    os._exit(1)


def _start_worker(calculator: dict, compile_potential: bool, parent: int) -> None:
    import torch
    from hydra.utils import instantiate

    global _worker_forcefield
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    torch.set_num_threads(1)
    _worker_forcefield = instantiate(calculator)
    if compile_potential:
        _worker_forcefield.compile()


def _worker_forces(structures: list[Atoms]) -> list[np.ndarray]:
    return _worker_forcefield.forces(structures)


class ForcePool(ForceField):
    """``inner``'s forces over ``processes`` processes (this one and ``processes - 1`` workers
    made from ``calculator``, a resolved ``calculator`` config section)."""

    def __init__(
        self,
        inner: ForceField,
        calculator: dict,
        processes: int,
        compile_potential: bool = False,
        min_batch: int = 8,
    ):
        self.inner = inner
        self.name = inner.name
        self.calculator_config = calculator
        self.processes = processes
        self.compile_potential = compile_potential
        self.min_batch = min_batch
        self._pool: ProcessPoolExecutor | None = None

    @property
    def version(self) -> str:
        return self.inner.version

    def calculator(self) -> Calculator:
        return self.inner.calculator()

    def compile(self) -> None:
        self.compile_potential = True
        self.inner.compile()

    def pressure(self, atoms: Atoms) -> float:
        return self.inner.pressure(atoms)

    def describe(self) -> dict:
        return self.inner.describe()

    def _workers(self) -> ProcessPoolExecutor:
        if self._pool is None:
            log.info("force calls shared by %d processes (force_workers)", self.processes)
            self._pool = ProcessPoolExecutor(
                self.processes - 1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(self.calculator_config, self.compile_potential, os.getpid()),
            )
            atexit.register(self.close)
        return self._pool

    def forces(self, structures: list[Atoms]) -> list[np.ndarray]:
        if self.processes < 2 or len(structures) < self.min_batch:
            return self.inner.forces(structures)
        try:
            return self._shared(structures)
        except BrokenProcessPool as exc:  # a worker could not start or died: go on alone
            log.warning("force_workers: a worker process stopped (%s); going on in one", exc)
            self.close()
            self.processes = 1
            return self.inner.forces(structures)
        except BaseException:  # Ctrl-C, say: stop now, not after the workers' chunks
            self.close(at_once=True)
            raise

    def _shared(self, structures: list[Atoms]) -> list[np.ndarray]:
        size = max(1, len(structures) // (4 * self.processes))
        chunks = [structures[i : i + size] for i in range(0, len(structures), size)]
        pool = self._workers()
        futures = [pool.submit(_worker_forces, chunk) for chunk in chunks]
        results: list[list[np.ndarray] | Future] = list(futures)
        for i in reversed(range(len(futures))):  # take back what no worker has begun
            if futures[i].cancel():
                results[i] = self.inner.forces(chunks[i])
        wait([f for f in futures if not f.cancelled()])
        return [
            forces
            for part in results
            for forces in (part.result() if isinstance(part, Future) else part)
        ]

    def close(self, at_once: bool = False) -> None:
        """Stop the workers: after their running chunks, or ``at_once`` (terminated)."""
        if self._pool is not None:
            if at_once:
                for process in list(self._pool._processes.values()):
                    process.terminate()
            self._pool.shutdown(wait=not at_once, cancel_futures=True)
            self._pool = None
