"""Temporary copies of this repository (the configuration part: inventory, group data, nix/,
secrets/, the Justfile) to plant faults in, and the commands run on them.

The copy is a git repository of its own with every file added, as the plaintext check and
Nix's git flakes read what git tracks. nixfleet itself runs from this checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
VENV_BIN = Path(sys.executable).parent
CONFIGURATION = ("inventory.py", "known_hosts", "group_data", "nix", "secrets", "Justfile",
                 "deploys", "facts", "operations")
# Nix's downloads go nowhere, so `nix flake check` is "cannot be fetched" on any machine.
NO_NETWORK = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
              "all_proxy": "http://127.0.0.1:9"}


def copy_repository(destination: Path, parts: tuple[str, ...] = CONFIGURATION) -> Path:
    """The working tree's files (tracked, or new and not ignored) under `parts`, in a new git
    repository at `destination`."""
    listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard", "--", *parts],
                            cwd=ROOT, capture_output=True)
    if listed.returncode != 0:  # not a git checkout (an exported tree): every file there
        names = [str(p.relative_to(ROOT)) for part in parts for p in
                 ([ROOT / part] if (ROOT / part).is_file() else (ROOT / part).rglob("*"))
                 if "__pycache__" not in p.parts]
    else:
        names = listed.stdout.decode().split("\0")
    for name in filter(None, names):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    git(destination, "init", "-q")
    git(destination, "add", "-A")
    return destination


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def env(**extra: str) -> dict[str, str]:
    """This checkout's nixfleet first on PATH, the real fleet as target, no network for Nix."""
    base = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "NIXFLEET_INVENTORY")}
    return {**base, "PATH": f"{VENV_BIN}{os.pathsep}{base.get('PATH', '')}",
            "PYTHONPATH": str(ROOT), "NIXFLEET_TARGET": "fleet", **NO_NETWORK, **extra}


def nixfleet(repo: Path, *args: str, timeout: float = 300,
             **extra_env: str) -> subprocess.CompletedProcess[str]:
    """`nixfleet ARGS` in `repo`, stdout piped (not a terminal)."""
    return subprocess.run([sys.executable, "-m", "nixfleet", *args], cwd=repo,
                          capture_output=True, text=True, timeout=timeout, env=env(**extra_env),
                          stdin=subprocess.DEVNULL)


def just(repo: Path, *args: str, stdin: str = "", timeout: float = 300,
         **extra_env: str) -> subprocess.CompletedProcess[str]:
    """`just RECIPE ARGS` with `repo`'s Justfile."""
    return subprocess.run([str(VENV_BIN / "just"), "--justfile", str(repo / "Justfile"),
                           "--working-directory", str(repo), *args], capture_output=True,
                          text=True, timeout=timeout, env=env(**extra_env), input=stdin)
