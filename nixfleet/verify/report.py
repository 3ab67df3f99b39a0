"""The result of a verification: per host, the checks that ran and the ones that failed,
each failure in one line. Written as JSON by the pytest plugin, read by `nixfleet verify` and
by deploys; shown as one table."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nixfleet.errors import NixfleetError


@dataclass(frozen=True)
class Failure:
    check: str  # "ollama: the default model is present"
    line: str  # what was wrong, one line


@dataclass
class HostVerification:
    host: str
    passed: int = 0
    failures: list[Failure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. "reboot required"

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def total(self) -> int:
        return self.passed + len(self.failures)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass
class Verification:
    hosts: dict[str, HostVerification] = field(default_factory=dict)
    # Failures of no host (a broken suite, a collection error): they fail the run too.
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and all(h.ok for h in self.hosts.values())

    def host(self, name: str) -> HostVerification:
        return self.hosts.setdefault(name, HostVerification(name))

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "errors": self.errors,
                "hosts": [h.to_json() for h in self.hosts.values()]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Verification:
        result = cls(errors=list(data.get("errors", [])))
        for entry in data.get("hosts", []):
            result.hosts[entry["host"]] = HostVerification(
                entry["host"], entry["passed"], [Failure(**f) for f in entry["failures"]],
                list(entry.get("notes", [])))
        return result

    @classmethod
    def read(cls, path: Path) -> Verification:
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise NixfleetError(f"verification report {path}: cannot be read: {error}") from None

    def lines(self) -> list[str]:
        """The per-host table, then each failed check in one line (80 columns when piped)."""
        width = max([4, *(len(name) for name in self.hosts)])
        out = [f"{'host':<{width}}  {'checks':>6}  result"]
        for h in self.hosts.values():
            result = "ok" if h.ok else f"FAILED {len(h.failures)}"
            notes = f" ({', '.join(h.notes)})" if h.notes else ""
            out.append(f"{h.host:<{width}}  {h.total:>6}  {result}{notes}")
        for h in self.hosts.values():
            if len(h.failures) > 1 and not h.passed and len({f.line for f in h.failures}) == 1:
                out.append(f"  {h.host}: every check ({len(h.failures)}): {h.failures[0].line}")
                continue
            out += [f"  {h.host}: {f.check}: {f.line}" for f in h.failures]
        out += [f"  error: {e}" for e in self.errors]
        return out
