"""Fixtures the unit tests share: captured tool output and throwaway secrets repositories."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.unit import secrets_support as support

CAPTURED = support.ROOT / "tests" / "fixtures"


@pytest.fixture
def captured() -> Callable[[str], str]:
    """A tool's output captured on a real machine: ``captured("systemd/NAME")`` reads
    tests/fixtures/systemd/NAME (where each comes from: SOURCES.md beside it)."""
    return lambda name: (CAPTURED / name).read_text()


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, support.Key]:
    """A fresh SSH key for every user and host of the inventory, plus an outsider's."""
    return support.generate_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def repo(tmp_path: Path, keys: dict[str, support.Key]) -> Path:
    """A git repository with the real rules and group data, the keys above and
    `nixfleet secrets init` done."""
    return support.make_repo(tmp_path, keys)
