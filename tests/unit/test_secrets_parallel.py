"""Rekeying on every CPU: forked workers see the caller's state, results keep their order, and a
worker's error reaches the caller."""

from __future__ import annotations

import os

import pytest

from nixfleet.errors import NixfleetError
from nixfleet.secrets import parallel
from nixfleet.secrets.parallel import FILES_PER_WORKER, parallel_map


@pytest.fixture(autouse=True)
def four_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 4)


def test_workers_inherit_unpicklable_state_and_keep_the_order() -> None:
    unlocked = {"key": object()}  # like an unlocked identity: it cannot be pickled
    items = list(range(4 * FILES_PER_WORKER + 3))

    results = parallel_map(lambda item: (item, unlocked["key"] is not None, os.getpid()), items)

    assert [item for item, _, _ in results] == items
    assert all(seen for _, seen, _ in results)
    assert len({pid for *_, pid in results}) == 4
    assert os.getpid() not in {pid for *_, pid in results}


def test_few_items_stay_in_this_process() -> None:
    results = parallel_map(lambda _item: os.getpid(), range(2 * FILES_PER_WORKER - 1))
    assert set(results) == {os.getpid()}


def test_an_error_in_a_worker_is_raised_here() -> None:
    def fail_on_40(item: int) -> int:
        if item == 40:
            raise NixfleetError("secrets/x.age: cannot decrypt it")
        return item

    with pytest.raises(NixfleetError, match=r"secrets/x\.age: cannot decrypt it"):
        parallel_map(fail_on_40, range(3 * FILES_PER_WORKER))


def test_an_error_that_cannot_be_pickled_names_its_type() -> None:
    class Unpicklable(Exception):
        def __reduce__(self):
            raise TypeError("no")

    def fail(item: int) -> int:
        raise Unpicklable("the value")

    with pytest.raises(RuntimeError, match=r"^a worker failed \(Unpicklable\)$"):
        parallel_map(fail, range(2 * FILES_PER_WORKER))
