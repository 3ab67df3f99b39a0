"""Temp copies of the repository with freshly generated keys, for the secrets tests.

The private keys live in pytest's temp directories only; nothing here is committed.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import runpy
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
USER = "olafkfreund"
HOSTS = ("p620", "razer", "p510", "dex5550")
# dex5550 gets an RSA host key, so ssh-rsa stanzas are exercised too.
KEY_TYPES = {"dex5550": "rsa"}


@dataclass(frozen=True)
class Key:
    private: Path
    public: str


def generate_key(directory: Path, name: str, kind: str = "ed25519", passphrase: str = "") -> Key:
    path = directory / name
    args = ["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-C", "", "-f", str(path)]
    if kind == "rsa":
        args += ["-b", "2048"]
    subprocess.run(args, check=True, capture_output=True)
    return Key(path, (directory / f"{name}.pub").read_text().strip())


def generate_keys(directory: Path) -> dict[str, Key]:
    """One key per user and host of the inventory, plus an outsider's."""
    keys = {name: generate_key(directory, name, KEY_TYPES.get(name, "ed25519"))
            for name in (USER, *HOSTS)}
    keys["outsider"] = generate_key(directory, "outsider")
    return keys


def inventory_entries(keys: dict[str, Key]) -> list[tuple[str, dict[str, Any]]]:
    """The repository's host entries with the generated public keys."""
    entries = copy.deepcopy(runpy.run_path(str(ROOT / "inventory.py"))["_HOSTS"])
    for name, entry in entries:
        entry["ssh"]["hostKey"] = keys[name].public
        for user in entry["users"]:
            user["sshKey"] = keys[user["name"]].public
    return entries


def write_inventory(repo: Path, entries: list[tuple[str, dict[str, Any]]]) -> None:
    (repo / "inventory.py").write_text(
        "from nixfleet.inventory import nixfleet_inventory\n\n"
        f"_HOSTS = {entries!r}\n\n"
        "fleet, _groups = nixfleet_inventory(_HOSTS, __file__)\n"
        "globals().update(_groups)\n")


def make_repo(directory: Path, keys: dict[str, Key], init: bool = True) -> Path:
    """A git repository with the real group_data/ and secrets/rules.py, and fresh keys;
    `nixfleet secrets init` has written the generated files."""
    repo = directory / "repo"
    repo.mkdir()
    shutil.copytree(ROOT / "group_data", repo / "group_data",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "secrets").mkdir()
    shutil.copy(ROOT / "secrets" / "rules.py", repo / "secrets" / "rules.py")
    write_inventory(repo, inventory_entries(keys))
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    result = run_secrets(repo, "init") if init else None
    if result and result.returncode != 0:
        raise RuntimeError(result.stderr.decode())
    return repo


def env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(home), "NIXFLEET_TARGET": "fleet",
            **extra}


def run_secrets_process(repo: Path, *args: str, stdin: bytes | None = None,
                        **extra_env: str) -> subprocess.CompletedProcess:
    """`nixfleet secrets ARGS` as its own process in `repo` (stdin is not a terminal)."""
    return subprocess.run([sys.executable, "-m", "nixfleet", "secrets", *args], cwd=repo,
                          input=stdin if stdin is not None else b"", capture_output=True,
                          env=env(repo.parent, **extra_env), timeout=120)


class _Buffer(io.BytesIO):
    def close(self) -> None:  # the text wrapper around it closes it when collected
        pass


def run_secrets(repo: Path, *args: str, stdin: bytes | None = None,
                **extra_env: str) -> subprocess.CompletedProcess:
    """The same, in this process (fast): cwd, environment and standard streams swapped."""
    from nixfleet.cli import main

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    stdout, stderr = _Buffer(), _Buffer()
    os.environ.update(env(repo.parent, **extra_env))
    os.chdir(repo)
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin or b""))
    sys.stdout = io.TextIOWrapper(stdout, write_through=True)
    sys.stderr = io.TextIOWrapper(stderr, write_through=True)
    try:
        code = main(["secrets", *args])
    except SystemExit as exit_:  # argparse
        code = exit_.code if isinstance(exit_.code, int) else 2
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(args, code, stdout.getvalue(), stderr.getvalue())


def snapshot(repo: Path) -> dict[str, str]:
    """Every file under repo (but .git) by content hash, to assert nothing changed."""
    return {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(repo.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(repo).parts}


def one_line_error(result: subprocess.CompletedProcess, message: str) -> None:
    stderr = result.stderr.decode()
    assert result.returncode != 0, result.stdout
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith(f"nixfleet: error: {message}"), stderr
