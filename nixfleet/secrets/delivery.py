"""Whether each host holds exactly its secrets, proven without moving a value.

Per host, the rules say which secrets /run/agenix must hold and with which owner, group and
mode; the locally decrypted value gives the sha256 the content must have. The host answers
with one SSH command (the nixfleet.facts.secrets.AgenixFiles fact, through pyinfra): sha256, owner,
group and mode of each /run/agenix entry. Only hashes travel, and hashes are never printed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nixfleet.errors import NixfleetError
from nixfleet.inventory import Fleet
from nixfleet.pyinfra_run import host_failures, pyinfra_error, run_pyinfra
from nixfleet.secrets.rules import SecretSpec
from nixfleet.secrets.store import SecretStore

FACT = "nixfleet.facts.secrets.AgenixFiles"
NO_HOSTS_LEFT = "No hosts remaining!"


@dataclass(frozen=True)
class Expected:
    """A secret as the host must hold it; sha256 None where it cannot be decrypted here
    (unchecked says why)."""

    spec: SecretSpec
    sha256: str | None
    unchecked: str | None = None


@dataclass(frozen=True)
class Problem:
    host: str
    secret: str  # "" for a problem of the whole host
    kind: str  # missing | unexpected | content | owner | group | mode | unchecked | unreachable
    detail: str

    @property
    def line(self) -> str:
        return f"{self.host}: {self.secret}: {self.detail}" if self.secret \
            else f"{self.host}: {self.detail}"


@dataclass
class HostDelivery:
    host: str
    reachable: bool
    generation: int | None = None  # /run/agenix.d/<N> the host points at
    ok: list[str] = field(default_factory=list)  # secrets that match in every respect
    problems: list[Problem] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "problems": [asdict(p) for p in self.problems]}


class ValueHashes:
    """sha256 of each secret's value, decrypted once per run whatever the number of hosts."""

    def __init__(self, store: SecretStore) -> None:
        self.store = store
        self._known: dict[str, tuple[str | None, str | None]] = {}

    def get(self, name: str) -> tuple[str | None, str | None]:
        """(sha256, None), or (None, why it cannot be checked)."""
        if name not in self._known:
            try:
                self._known[name] = (self.store.sha256(name), None)
            except NixfleetError as error:
                self._known[name] = (None, str(error))
        return self._known[name]


def expected_secrets(store: SecretStore, host: str, hashes: ValueHashes) -> list[Expected]:
    """What /run/agenix on `host` must hold, from the rules and the local values."""
    result = []
    for rule in store.rules.secrets.values():
        if host in rule.owners:
            sha256, why = hashes.get(rule.name)
            result.append(Expected(rule.spec(host), sha256, why))
    return result


def compare(host: str, expected: Sequence[Expected], actual: dict[str, Any]) -> HostDelivery:
    """The AgenixFiles fact of a host (as pyinfra's JSON gives it) against what it must hold."""
    files: dict[str, dict[str, Any]] = actual.get("files") or {}
    delivery = HostDelivery(host, True, actual.get("generation"))
    for item in expected:
        spec = item.spec
        found = files.get(spec.name)
        if found is None:
            delivery.problems.append(Problem(host, spec.name, "missing",
                                             f"missing from /run/agenix (expected "
                                             f"{spec.owner}:{spec.group} {spec.mode})"))
            continue
        problems = _differences(host, item, found)
        delivery.problems += problems
        if not problems:
            delivery.ok.append(spec.name)
    wanted = {item.spec.name for item in expected}
    for name in sorted(set(files) - wanted):
        delivery.problems.append(Problem(host, name, "unexpected",
                                         "in /run/agenix but the host is not a recipient"))
    return delivery


def _differences(host: str, item: Expected, found: dict[str, Any]) -> list[Problem]:
    spec = item.spec
    problems = []
    if item.sha256 is None:
        problems.append(Problem(host, spec.name, "unchecked",
                                f"content not checked: {item.unchecked}"))
    elif found.get("sha256") is None:
        problems.append(Problem(host, spec.name, "content", "not a readable file on the host"))
    elif found["sha256"] != item.sha256:
        problems.append(Problem(host, spec.name, "content",
                                "content differs from the local value (sha256 mismatch)"))
    for kind, want in (("owner", spec.owner), ("group", spec.group)):
        if found.get(kind) != want:
            problems.append(Problem(host, spec.name, kind,
                                    f"{kind} is {found.get(kind)}, expected {want}"))
    if int(str(found.get("mode", "0")), 8) != int(spec.mode, 8):
        problems.append(Problem(host, spec.name, "mode",
                                f"mode is {found.get('mode')}, expected {spec.mode}"))
    return problems


def check_delivery(store: SecretStore, fleet: Fleet, inventory: Path,
                   limits: Sequence[str] = ()) -> list[HostDelivery]:
    """Every selected host's /run/agenix against the rules: one SSH command per host."""
    selected = fleet.select(limits)
    result = run_pyinfra(inventory, ["fact", FACT, "--json"], limits)
    problem = pyinfra_error(result.stderr)
    if problem and problem != NO_HOSTS_LEFT:  # every host unreachable: one line each, below
        raise NixfleetError(problem)
    try:
        answers = json.loads(result.stdout).get(FACT, {}) if result.stdout.strip() else {}
    except json.JSONDecodeError:
        answers = {}
    failures = host_failures(result.stderr)
    hashes = ValueHashes(store)
    deliveries = []
    for name in selected:
        actual = answers.get(name)
        if actual is None:
            why = failures.get(name, "no answer (see pyinfra's output)")
            deliveries.append(HostDelivery(name, False, problems=[
                Problem(name, "", "unreachable", f"unreachable: {why}")]))
            continue
        deliveries.append(compare(name, expected_secrets(store, name, hashes), actual))
    return deliveries
