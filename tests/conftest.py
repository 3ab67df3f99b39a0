"""Shared fixtures: the repository root and the real inventory's host entries."""

from __future__ import annotations

import copy
import runpy
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def host_entries() -> list[tuple[str, dict[str, Any]]]:
    """A private copy of inventory.py's host entries, to break in tests."""
    return copy.deepcopy(runpy.run_path(str(ROOT / "inventory.py"))["_HOSTS"])
