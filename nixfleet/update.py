"""`nixfleet update`: the update flow in one command (the original's `just update`,
`update-flake` and `update-input`).

1. move the flake's lock file (every input, or those named: nixfleet.flake_inputs.update_lock);
2. build every selected host with it, activating nothing (the `build` deploy), and show per
   host what changes: packages added, removed, upgraded or downgraded, from the closure
   difference each host's build recorded (`nix store diff-closures`), and the closure's size;
3. with `deploy`, switch the hosts (the `switch` deploy: health gate, rollback, verification;
   `--canary` passed on);
4. commit the lock file alone with git, the message naming each input's revision before and
   after and the hosts.

On any failure (build, deploy, verification, an interrupt) the previous lock file is put back
and nothing is committed; the hosts stay as the deploy's gate left them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from nixfleet.errors import NixfleetError
from nixfleet.files import write_atomic
from nixfleet.flake_inputs import LOCK_FILE, InputChange, LockedInput, update_lock

# Results of a host that leave the lock unusable (the summary's `result`).
FAILED = {"failed", "rolled-back", "rollback-failed", "locked", "unreachable", "not-attempted"}


# --- what changes on a host -----------------------------------------------------------------


class ChangeKind(StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    UPGRADED = "upgraded"
    DOWNGRADED = "downgraded"
    CHANGED = "changed"  # the same versions (or none), another build or size


@dataclass(frozen=True)
class PackageChange:
    """One line of `nix store diff-closures`: `go: ∅ → 1.23.4, +11.1 KiB`."""

    name: str
    before: tuple[str, ...]
    after: tuple[str, ...]
    size: str = ""  # "+11.1 KiB"; diff-closures leaves out changes under 8 KiB

    @property
    def kind(self) -> ChangeKind:
        if not self.before and self.after:
            return ChangeKind.ADDED
        if self.before and not self.after:
            return ChangeKind.REMOVED
        if self.before and self.after:
            order = compare_versions(max_version(self.before), max_version(self.after))
            if order < 0:
                return ChangeKind.UPGRADED
            if order > 0:
                return ChangeKind.DOWNGRADED
        return ChangeKind.CHANGED

    def describe(self) -> str:
        before, after = ", ".join(self.before), ", ".join(self.after)
        text = {ChangeKind.ADDED: f"{self.name} {after}",
                ChangeKind.REMOVED: f"{self.name} {before}"}.get(
            self.kind, f"{self.name} {before} -> {after}" if before or after else self.name)
        return f"{text} ({self.size})" if self.size else text


_SIZE = re.compile(r"(?:^|, )([+-]\d+(?:\.\d+)? [KMGT]?i?B)$")
_EMPTY = "∅"  # diff-closures' "no version"


def parse_diff_line(line: str) -> PackageChange | None:
    """A `nix store diff-closures` line as a change (None for a line that is not one)."""
    name, separator, rest = line.strip().partition(": ")
    if not separator or not name:
        return None
    size = ""
    if found := _SIZE.search(rest):
        size, rest = found[1], rest[:found.start()]
    if "→" not in rest:
        return PackageChange(name, (), (), size) if size and not rest else None
    before, _, after = rest.partition("→")
    return PackageChange(name, _versions(before), _versions(after), size)


def _versions(text: str) -> tuple[str, ...]:
    return tuple(v for v in (v.strip() for v in text.split(", ")) if v and v != _EMPTY)


def compare_versions(a: str, b: str) -> int:
    """Nix's builtins.compareVersions: components split at . and - and between digits and
    letters; numbers compare as numbers and above words, except that "pre" is below all."""
    def parts(version: str) -> list[str]:
        return re.findall(r"\d+|[^\d.\-]+", version)

    def key(part: str) -> tuple[int, int, str]:
        if part.isdigit():
            return (2, int(part), "")
        return (0, 0, "") if part == "pre" else (1, 0, part)

    left, right = parts(a), parts(b)
    for i in range(max(len(left), len(right))):
        x = key(left[i]) if i < len(left) else (1, 0, "")
        y = key(right[i]) if i < len(right) else (1, 0, "")
        if x != y:
            return -1 if x < y else 1
    return 0


def max_version(versions: Iterable[str]) -> str:
    newest = ""
    for version in versions:
        if not newest or compare_versions(newest, version) < 0:
            newest = version
    return newest


@dataclass
class HostChanges:
    """What a host's build changes, from its row of the deploy's summary.json."""

    host: str
    result: str
    reason: str = ""
    packages: list[PackageChange] = field(default_factory=list)
    closure_before: int | None = None
    closure_after: int | None = None
    closure_delta: str | None = None

    @classmethod
    def from_summary(cls, row: dict[str, Any]) -> HostChanges:
        packages = [c for c in map(parse_diff_line, row.get("diff") or []) if c is not None]
        return cls(str(row["host"]), str(row.get("result")), str(row.get("reason") or ""),
                   packages, row.get("closure_before"), row.get("closure_after"),
                   row.get("closure_delta"))

    @property
    def failed(self) -> bool:
        return self.result in FAILED

    def by_kind(self) -> dict[ChangeKind, list[PackageChange]]:
        kinds: dict[ChangeKind, list[PackageChange]] = {}
        for change in self.packages:
            kinds.setdefault(change.kind, []).append(change)
        return {kind: kinds[kind] for kind in ChangeKind if kind in kinds}

    def size(self) -> str:
        if self.closure_before is None or self.closure_after is None:
            return ""
        return (f"closure {human_size(self.closure_before)} -> {human_size(self.closure_after)}"
                f" ({self.closure_delta or '+0.0 KiB'})")

    def lines(self) -> list[str]:
        """`HOST: N packages changed, closure A -> B (+D)`, then one line per kind."""
        if self.failed:
            return [f"{self.host}: {self.result}: {self.reason}"]
        count = len(self.packages)
        head = f"{count} package{'s' if count != 1 else ''} changed" if count \
            else "no package changes"
        size = self.size()
        lines = [f"{self.host}: {head}{', ' + size if size else ''}"]
        for kind, changes in self.by_kind().items():
            lines.append(f"  {kind}: {', '.join(c.describe() for c in changes)}")
        return lines


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # not reached


# --- the commit -------------------------------------------------------------------------------


def revision(locked: LockedInput | None) -> str:
    """An input's full revision (a git input's commit, else its narHash), or "-" for none."""
    if locked is None or (locked.rev is None and locked.nar_hash is None):
        return "-"
    return locked.rev or locked.nar_hash or "-"


def commit_message(lock: str, changes: Sequence[InputChange], hosts: Sequence[HostChanges],
                   deployed: str | None) -> str:
    """`nix/flake.lock: update nixpkgs, home-manager`, then each changed input's revision
    before and after, the hosts built (and deployed) and what changed on each."""
    changed = [c for c in changes if c.changed]
    lines = [f"{lock}: update {', '.join(c.name for c in changed)}", "", "Inputs:"]
    lines += [f"  {c.name}: {revision(c.before)} -> {revision(c.after)}" for c in changed]
    names = ", ".join(h.host for h in hosts) or "none"
    lines += ["", f"Built on: {names}"]
    if deployed:
        lines.append(f"Deployed ({deployed}): {names}")
    changes_lines = [line for h in hosts for line in h.lines()]
    if changes_lines:
        lines += ["", *changes_lines]
    return "\n".join(lines) + "\n"


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=120)
    except FileNotFoundError:
        raise NixfleetError("git not found: `nixfleet update` commits the lock file with "
                            "git (Debian: git)") from None


def repository(root: Path) -> Path:
    """The git work tree holding the configuration."""
    result = git(root, "rev-parse", "--show-toplevel")
    if result.returncode != 0:
        raise NixfleetError(f"{root} is not in a git repository: `nixfleet update` commits the "
                            f"lock file with git (git init, and commit the configuration)")
    return Path(result.stdout.strip())


def check_lock_committed(repo: Path, lock: Path, shown: str) -> None:
    """The lock file is as committed (or absent and unknown to git): a restore then loses
    nothing, and the commit holds only this update."""
    status = git(repo, "status", "--porcelain", "--", str(lock))
    if status.returncode != 0:
        raise NixfleetError(f"git status failed in {repo}: {status.stderr.strip()}")
    if status.stdout.strip().startswith("??"):
        raise NixfleetError(f"{shown} is not committed: commit it (or remove it) first")
    if status.stdout.strip():
        raise NixfleetError(f"{shown} has uncommitted changes: commit or discard them first "
                            "(`git diff -- " + shown + "`)")
    ident = git(repo, "var", "GIT_COMMITTER_IDENT")
    if ident.returncode != 0:
        raise NixfleetError("git has no committer identity to commit the lock file with: set "
                            "user.name and user.email (git config)")


def commit_lock(repo: Path, lock: Path, message: str) -> str:
    """Commit the lock file alone (whatever else is staged stays staged); its commit hash."""
    added = git(repo, "add", "--", str(lock))
    commit = git(repo, "commit", "-q", "-m", message, "--", str(lock)) \
        if added.returncode == 0 else added
    if commit.returncode != 0:
        raise NixfleetError(f"git commit failed: {(commit.stderr or commit.stdout).strip()}")
    return git(repo, "rev-parse", "--short", "HEAD").stdout.strip()


def restore(lock: Path, before: bytes | None) -> None:
    """The lock file as it was (removed if there was none)."""
    if before is None:
        lock.unlink(missing_ok=True)
    else:
        write_atomic(lock, before)


# --- the flow ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeployRun:
    """A deploy's exit status and its summary rows (summary.json)."""

    returncode: int
    rows: list[dict[str, Any]]


# (action, limits, canary) -> the deploy run.
Deployer = Callable[[str, Sequence[str], bool], DeployRun]


class UpdateFailed(NixfleetError):
    def __init__(self, message: str, returncode: int = 1):
        super().__init__(message)
        self.returncode = returncode


@dataclass
class Update:
    """One `nixfleet update` in the configuration at `root`, moving `lock_dir`'s lock."""

    root: Path
    lock_dir: Path
    deployer: Deployer
    inputs: Sequence[str] = ()
    limits: Sequence[str] = ()
    deploy: bool = False
    canary: bool = False
    out: Callable[[str], None] = print

    @property
    def lock(self) -> Path:
        return self.lock_dir / LOCK_FILE

    @property
    def shown(self) -> str:
        return str(self.lock.relative_to(self.root)) if self.lock.is_relative_to(self.root) \
            else str(self.lock)

    def run(self) -> tuple[list[InputChange], str | None]:
        """Update, build, deploy, commit; (the inputs' changes, the commit or None when the
        lock did not move). Raises UpdateFailed after putting the lock back."""
        repo = repository(self.root)
        check_lock_committed(repo, self.lock, self.shown)
        before = self.lock.read_bytes() if self.lock.is_file() else None
        try:
            changes = update_lock(self.lock_dir, self.inputs, root=self.root)
            self.show_inputs(changes)
            if not any(c.changed for c in changes):
                self.out(f"{self.shown}: unchanged: nothing to build or commit")
                return changes, None
            built = self.step("build", "the build")
            for host in built:
                for line in host.lines():
                    self.out(line)
            if self.deploy:
                self.step("switch", "the deploy", canary=self.canary)
            message = commit_message(self.shown, changes, built,
                                     "switch" + (", canary" if self.canary else "")
                                     if self.deploy else None)
            commit = commit_lock(repo, self.lock, message)
        except BaseException as error:
            moved = self.read_lock() != before
            restore(self.lock, before)
            note = f"; {self.shown} restored, nothing committed" if moved else ""
            if isinstance(error, NixfleetError):
                raise UpdateFailed(f"{error}{note}",
                                   getattr(error, "returncode", 1)) from None
            if moved:
                print(f"nixfleet: {self.shown} restored, nothing committed", file=sys.stderr)
            raise
        self.out(f"{self.shown}: committed {commit}: "
                 + message.splitlines()[0].split(": ", 1)[1])
        return changes, commit

    def read_lock(self) -> bytes | None:
        return self.lock.read_bytes() if self.lock.is_file() else None

    def show_inputs(self, changes: Sequence[InputChange]) -> None:
        for change in changes:
            before = change.before.describe() if change.before else "-"
            after = change.after.describe() if change.after else "-"
            self.out(f"{change.name}: {before} -> {after}" if change.changed
                     else f"{change.name}: {before} (unchanged)")

    def step(self, action: str, what: str, canary: bool = False) -> list[HostChanges]:
        run = self.deployer(action, self.limits, canary)
        hosts = [HostChanges.from_summary(row) for row in run.rows]
        failed = [h for h in hosts if h.failed]
        if run.returncode != 0 or failed:
            names = ", ".join(f"{h.host} ({h.result})" for h in failed) or \
                f"exit status {run.returncode}"
            left = "; the hosts are as its gate left them" if action != "build" else ""
            raise UpdateFailed(f"{what} failed: {names}{left}",
                               run.returncode if run.returncode > 1 else 1)
        if not hosts:
            raise UpdateFailed(f"{what} reached no host (see --limit)")
        return hosts
