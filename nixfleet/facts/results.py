"""A base for fact results, so `pyinfra ... fact X --json` can print them."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any


class FactResult:
    """Mixin for frozen dataclasses returned by facts (pyinfra's JSON output calls to_json)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]
