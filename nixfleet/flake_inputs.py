"""What needs the flake's inputs (nixpkgs, home-manager, agenix) fetched: `nix flake check` and
updating nix/flake.lock.

Where the inputs cannot be fetched (no network, as on the machines nixfleet is developed on)
both say so in one line with Nix's own reason, instead of Nix's retries and warnings;
`nixfleet check-nix` checks what can be checked without them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from nixfleet.errors import NixfleetError

LOCK_FILE = "flake.lock"
# Nix's words when a download fails (curl's reasons included).
_UNREACHABLE = re.compile(
    r"unable to download|unable to fetch|could(n't| not) resolve|failed to connect|"
    r"couldn't connect|connection refused|network is unreachable|timeout was reached|"
    r"SSL connect error|cannot connect", re.I)


def nix_argv(*args: str) -> list[str]:
    """`nix` with flakes on, one download attempt (no minute of retries offline)."""
    return ["nix", "--extra-experimental-features", "nix-command flakes",
            "--option", "download-attempts", "1", *args]


def _run_nix(args: Sequence[str], timeout: float, cwd: Path | None = None
             ) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(nix_argv(*args), capture_output=True, text=True, timeout=timeout,
                              cwd=cwd, env={**os.environ, "NO_COLOR": "1"},
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise NixfleetError("nix not found: install Nix 2.4 or later (Debian: nix-bin)") from None
    except subprocess.TimeoutExpired:
        raise NixfleetError(f"nix {' '.join(args[:2])} took over {timeout:g} s") from None


def nix_error(stderr: str) -> str:
    """Nix's error in one line (its last `error:` line; warnings and hints left out)."""
    errors = [line.removeprefix("error:").strip() for line in stderr.splitlines()
              if line.startswith("error:")]
    if errors:
        return errors[-1]
    lines = [line.strip() for line in stderr.splitlines()
             if line.strip() and not line.startswith(("warning:", "(use '--show-trace'"))]
    return lines[-1] if lines else "nix failed"


def unreachable(stderr: str) -> bool:
    """Nix failed because an input could not be downloaded."""
    return bool(_UNREACHABLE.search(nix_error(stderr)))


class CheckState(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    UNREACHABLE = "unreachable"  # not run: the inputs cannot be fetched here


@dataclass(frozen=True)
class FlakeCheck:
    state: CheckState
    message: str
    reason: str = ""  # Nix's error, when it failed or could not fetch

    def line(self) -> str:
        return f"{self.message}: {self.reason}" if self.reason else self.message


def flake_check(nix_dir: Path, build: bool = False, timeout: float = 1800) -> FlakeCheck:
    """`nix flake check` of the flake in `nix_dir` (`--no-build` unless `build`); never writes
    the lock file (without one, the inputs' newest revisions are checked)."""
    args = ["flake", "check", str(nix_dir), "--no-write-lock-file"]
    if not build:
        args.append("--no-build")
    result = _run_nix(args, timeout)
    unlocked = "" if (nix_dir / LOCK_FILE).is_file() else \
        f" (no {LOCK_FILE}: the inputs' newest revisions; `nixfleet update-flake` pins them)"
    if result.returncode == 0:
        return FlakeCheck(CheckState.PASSED, f"nix flake check{' --no-build' * (not build)} "
                          f"passed{unlocked}")
    if unreachable(result.stderr):
        return FlakeCheck(CheckState.UNREACHABLE, "not run: the flake's inputs (nixpkgs, ...) "
                          "cannot be fetched here; run it where GitHub is reachable",
                          nix_error(result.stderr))
    return FlakeCheck(CheckState.FAILED, "nix flake check failed", nix_error(result.stderr))


# --- the lock file -------------------------------------------------------------------------


@dataclass(frozen=True)
class LockedInput:
    name: str
    rev: str | None
    last_modified: int | None
    nar_hash: str | None

    def describe(self) -> str:
        if self.rev is None and self.nar_hash is None:
            return "-"
        # A path input's lastModified is 1 where its files came from the store (no date).
        when = datetime.fromtimestamp(self.last_modified, UTC).strftime("%Y-%m-%d") \
            if self.last_modified and self.last_modified > 1 else "?"
        return f"{(self.rev or (self.nar_hash or '').removeprefix('sha256-'))[:12]} ({when})"


def read_lock(path: Path) -> dict[str, LockedInput]:
    """The locked inputs of a flake.lock by name ({} when there is none)."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise NixfleetError(f"{path}: cannot be read: {error}") from None
    nodes = data.get("nodes", {})
    root = nodes.get(data.get("root", "root"), {})
    inputs = {}
    for name, node_name in root.get("inputs", {}).items():
        locked = nodes.get(node_name if isinstance(node_name, str) else "", {}).get("locked", {})
        inputs[name] = LockedInput(name, locked.get("rev"), locked.get("lastModified"),
                                   locked.get("narHash"))
    return inputs


@dataclass(frozen=True)
class InputChange:
    name: str
    before: LockedInput | None
    after: LockedInput | None

    @property
    def changed(self) -> bool:
        return self.before != self.after


def flake_inputs(nix_dir: Path) -> list[str]:
    """The names of the flake's inputs, read from flake.nix (no fetching)."""
    from nixfleet.nixcheck import evaluate

    names = evaluate(f"builtins.attrNames ((import {nix_dir / 'flake.nix'}).inputs or {{}})")
    return [str(n) for n in names]


def update_lock(nix_dir: Path, inputs: Sequence[str] = (), timeout: float = 1800,
                root: Path | None = None) -> list[InputChange]:
    """Update every input of the flake in `nix_dir` (or only `inputs`) in its flake.lock;
    return each input's lock before and after. Errors name files relative to `root` (the
    configuration; default: nix_dir's parent)."""
    root = root or nix_dir.parent
    known = flake_inputs(nix_dir)
    unknown = [name for name in inputs if name not in known]
    if unknown:
        raise NixfleetError(f"no input {', '.join(map(repr, unknown))} in "
                            f"{_shown(nix_dir / 'flake.nix', root)}; inputs: {', '.join(known)}")
    lock = nix_dir / LOCK_FILE
    before = read_lock(lock)
    result = _run_nix(_update_args(str(nix_dir), inputs), timeout)
    if result.returncode != 0:
        why = nix_error(result.stderr)
        if unreachable(result.stderr):
            why = f"the flake's inputs cannot be fetched here (no network?): {why}"
        raise NixfleetError(f"cannot update {_shown(lock, root)}: {why}")
    after = read_lock(lock)
    return [InputChange(name, before.get(name), after.get(name))
            for name in dict.fromkeys([*known, *after])]


def _shown(path: Path, root: Path) -> str:
    """nix/flake.lock: relative to the configuration."""
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _update_args(flake: str, inputs: Sequence[str]) -> list[str]:
    """Nix 2.19 made `nix flake update [INPUT...] --flake F` the way; older Nix (Debian's 2.8)
    has `nix flake update F` and `nix flake lock F --update-input NAME`."""
    if nix_version() >= (2, 19):
        return ["flake", "update", *inputs, "--flake", flake]
    if inputs:
        return ["flake", "lock", flake, *[a for name in inputs for a in ("--update-input", name)]]
    return ["flake", "update", flake]


def nix_version() -> tuple[int, int]:
    result = _run_nix(["--version"], 30)
    match = re.search(r"(\d+)\.(\d+)", result.stdout)
    return (int(match[1]), int(match[2])) if match else (0, 0)
