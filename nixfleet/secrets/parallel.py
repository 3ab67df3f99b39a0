"""Decrypting and encrypting many files on every CPU.

The workers are forked, so they inherit the function and its items as they are in memory
(unlocked keys included): nothing is pickled on the way in, and only the results (never a
value) come back through a pipe.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from itertools import pairwise
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Below this many files per CPU, forking workers costs more than it saves.
FILES_PER_WORKER = 16


def parallel_map(func: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """func over items, in order; in forked workers, one slice of items each, when that pays
    off. An exception in a worker is raised here."""
    workers = min(os.cpu_count() or 1, len(items) // FILES_PER_WORKER)
    if workers < 2:
        return [func(item) for item in items]
    # Buffered output would otherwise be written again by every worker.
    sys.stdout.flush()
    sys.stderr.flush()
    context = multiprocessing.get_context("fork")
    bounds = [len(items) * index // workers for index in range(workers + 1)]
    started: list[tuple[BaseProcess, Connection]] = []
    try:
        for start, stop in pairwise(bounds):
            receiver, sender = context.Pipe(duplex=False)
            worker = context.Process(target=_work, args=(func, items[start:stop], sender),
                                     daemon=True)
            worker.start()
            sender.close()
            started.append((worker, receiver))
        results: list[R] = []
        for process, receiver in started:
            try:
                done, outcome = receiver.recv()
            except EOFError:
                process.join()
                raise RuntimeError(f"a worker exited with status {process.exitcode} "
                                   "before it reported") from None
            if not done:
                raise outcome
            results += outcome
        return results
    finally:
        for process, receiver in started:
            receiver.close()
            if process.is_alive():
                process.terminate()
            process.join()


def _work(func: Callable[[T], R], items: Sequence[T], results: Connection) -> None:
    """In a worker: (True, [func(item)...]) or (False, the exception) back through `results`."""
    outcome: tuple[bool, object]
    try:
        outcome = True, [func(item) for item in items]
    except BaseException as error:
        outcome = False, error
    try:
        results.send(outcome)
    except Exception:
        # An exception that cannot be pickled: say which it was.
        failed = type(outcome[1]).__name__
        results.send((False, RuntimeError(f"a worker failed ({failed})")))
