"""The plaintext guard: secrets/ holds only age files, and no repository file holds a
private key."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

from nixfleet.errors import NixfleetError
from nixfleet.secrets.agefile import AgeFormatError, read_header
from nixfleet.secrets.rules import SECRETS_DIR

# Files that belong in secrets/ besides the *.age files.
ALLOWED_FILES = ("rules.py", "secrets.nix")
# A line break, or one written as \n (or \r\n) inside a JSON or YAML string: a key pasted into
# a configuration value is one escaped line.
_BREAK = rb"(?:[ \t\r]*\n|(?:\\r)?\\n)"
# Private key blocks with a body (a key's BEGIN line alone, as in this file, is not a key).
PRIVATE_KEY = re.compile(
    rb"-----BEGIN ((OPENSSH|RSA|DSA|EC|ENCRYPTED|PGP) )?PRIVATE KEY( BLOCK)?-----" + _BREAK +
    rb"(?:[A-Za-z-]+:[^\n\\]*" + _BREAK + rb")*(?:\s|" + _BREAK + rb")*[A-Za-z0-9+/=]{16}")
AGE_SECRET_KEY = re.compile(rb"AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}")
SCAN_LIMIT = 4 * 1024 * 1024


def check_plaintext(root: Path) -> list[str]:
    """Problems: non-age files in secrets/, and repository files that hold private keys."""
    problems = []
    directory = root / SECRETS_DIR
    if directory.is_dir():
        for path in sorted(directory.iterdir()):
            relative = path.relative_to(root)
            if path.name in ALLOWED_FILES or path.name.startswith("README") \
                    or path.name == "__pycache__":
                continue
            if path.suffix != ".age" or not path.is_file():
                problems.append(f"{relative}: not an age file (only *.age, rules.py, "
                                "secrets.nix and README belong in secrets/)")
                continue
            try:
                read_header(path.read_bytes())
            except AgeFormatError as error:
                problems.append(f"{relative}: not an encrypted age file ({error})")
    for name in _repository_files(root):
        path = root / name
        if not path.is_file() or path.is_symlink():
            continue
        with open(path, "rb") as handle:
            head = handle.read(SCAN_LIMIT)
        if PRIVATE_KEY.search(head):
            problems.append(f"{name}: contains a private key")
        elif AGE_SECRET_KEY.search(head):
            problems.append(f"{name}: contains an age secret key")
    return problems


def _repository_files(root: Path) -> Iterable[str]:
    """Files git tracks, plus untracked ones it would add (not ignored)."""
    try:
        result = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root, capture_output=True, check=False)
    except OSError:
        raise NixfleetError("git not found; cannot list the repository's files") from None
    if result.returncode != 0:
        raise NixfleetError(f"{root} is not a git repository; cannot check tracked files")
    return sorted({name.decode(errors="surrogateescape")
                   for name in result.stdout.split(b"\0") if name})
