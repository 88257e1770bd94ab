"""Where cells run: this process, a local process pool, or Ray (``ray_backend.py``).

A backend takes the pending cells as payloads and yields events as they
happen: ``("start", i)``, ``("done", i, result)`` or ``("error", i, message)``.
Results travel back to the driver, which alone writes the store. After an
error a backend submits nothing new, lets the cells in flight finish (their
results are still yielded, so nothing done is lost) and stops.

At most ``workers`` cells are in flight at once, so a killed driver loses at
most that many unfinished cells, and the progress display's "current cell"
is the truth.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any, Protocol

from .execute import execute_cell

__all__ = ["Backend", "PoolBackend", "SerialBackend", "available_cores", "make_backend"]

Event = tuple


class Backend(Protocol):
    name: str
    workers: int

    def run(self, payloads: list[dict[str, Any]]) -> Iterator[Event]: ...


def available_cores() -> int:
    """CPU cores this process may use (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".splitlines()[0]


class SerialBackend:
    """Every cell in this process, one after the other (``--workers 1``)."""

    name = "local"
    workers = 1

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads

    def run(self, payloads: list[dict[str, Any]]) -> Iterator[Event]:
        import torch

        previous = torch.get_num_threads()  # the caller's setting, given back at the end
        try:
            for i, payload in enumerate(payloads):
                yield ("start", i)
                try:
                    result = execute_cell(payload, self.threads)
                except Exception as err:  # noqa: BLE001 - reported with the cell by the driver
                    yield ("error", i, _error_text(err))
                    return
                yield ("done", i, result)
        finally:
            torch.set_num_threads(previous)


def _init_worker(threads: int, parent_pid: int) -> None:
    """Pool worker set-up: torch threads, and exit if the driver dies (a SIGKILLed driver
    cannot shut its pool down; without this, workers would finish their cell as orphans)."""
    import torch

    torch.set_num_threads(threads)

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True, name="mlmm-parent-watch").start()


class PoolBackend:
    """A pool of ``workers`` spawned processes, ``threads`` torch threads each.

    Spawned (not forked): a fork of a process that already runs torch's thread
    pools can deadlock, and spawn behaves the same on every OS.
    """

    name = "local"

    def __init__(self, workers: int, threads: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.threads = threads

    def run(self, payloads: list[dict[str, Any]]) -> Iterator[Event]:
        todo = iter(enumerate(payloads))
        running: dict[Future, int] = {}
        failed = False
        with ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                 initargs=(self.threads, os.getpid())) as pool:
            while True:
                while not failed and len(running) < self.workers:
                    nxt = next(todo, None)
                    if nxt is None:
                        break
                    running[pool.submit(execute_cell, nxt[1], self.threads)] = nxt[0]
                    yield ("start", nxt[0])
                if not running:
                    return
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    i = running.pop(future)
                    err = future.exception()
                    if err is None:
                        yield ("done", i, future.result())
                    else:
                        failed = True
                        yield ("error", i, _error_text(err))


def make_backend(name: str, workers: int | None, n_cells: int, threads: int = 1,
                 ray_address: str | None = None) -> Backend:
    """``local`` -> a pool of ``workers`` (default min(cores, cells); 1 means in-process);
    ``ray`` -> Ray tasks on the cluster at ``ray_address`` (a local instance if None)."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if name == "local":
        n = workers if workers is not None else max(1, min(available_cores() // threads, n_cells))
        return SerialBackend(threads) if n == 1 else PoolBackend(n, threads)
    if name == "ray":
        from .ray_backend import RayBackend

        return RayBackend(address=ray_address, workers=workers, threads=threads)
    raise ValueError(f"unknown backend {name!r}; known: local, ray")
