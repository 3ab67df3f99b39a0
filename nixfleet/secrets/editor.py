"""Changing a value in $EDITOR without it touching a disk.

The value is written to a 0600 file in a fresh 0700 directory on a tmpfs only this user can
write to; afterwards every file there is overwritten with zeros and the directory removed.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import tempfile
from pathlib import Path

from nixfleet.errors import NixfleetError


def private_tmp_dir() -> Path:
    """A fresh 0700 directory on a tmpfs only this user can write to (never on disk)."""
    uid = os.getuid()
    candidates = [os.environ.get("XDG_RUNTIME_DIR", ""), f"/run/user/{uid}", "/dev/shm"]
    for candidate in candidates:
        if not candidate or not os.path.isdir(candidate) or not os.access(candidate, os.W_OK):
            continue
        if _filesystem_type(candidate) not in ("tmpfs", "ramfs"):
            continue
        return Path(tempfile.mkdtemp(prefix="nixfleet-secret-", dir=candidate))
    raise NixfleetError("no tmpfs for the editor's file (/run/user/UID or /dev/shm); "
                        "refusing to write the value to disk")


def _filesystem_type(path: str) -> str:
    """The type of the filesystem holding `path`, from /proc/self/mountinfo."""
    real = os.path.realpath(path)
    best, kind = "", ""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        fields = line.split()
        mount = fields[4].replace("\\040", " ")
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, fields[fields.index("-") + 1]
    return kind


def wipe(directory: Path) -> None:
    """Overwrite every file under `directory` with zeros, then remove it all."""
    for path in sorted(directory.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file() and not path.is_symlink():
            with contextlib.suppress(OSError), open(path, "r+b") as handle:
                handle.write(b"\0" * os.fstat(handle.fileno()).st_size)
                handle.flush()
                os.fsync(handle.fileno())
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()
    directory.rmdir()


def edit_value(name: str, initial: bytes = b"", editor: str | None = None) -> bytes:
    """Let $EDITOR change a value in a private tmpfs file; an aborted edit raises."""
    command = shlex.split(editor or os.environ.get("EDITOR") or "vi")
    if not command:
        raise NixfleetError("$EDITOR is empty; set it or pass the value on stdin or --from-file")
    directory = private_tmp_dir()
    try:
        path = directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(initial)
        try:
            result = subprocess.run([*command, str(path)], check=False)
        except OSError as error:
            raise NixfleetError(f"cannot run the editor {command[0]!r} ({error.strerror}); "
                                "set $EDITOR; nothing changed") from None
        if result.returncode != 0:
            raise NixfleetError(f"editor {command[0]!r} exited with status {result.returncode}; "
                                "nothing changed")
        value = path.read_bytes() if path.is_file() else b""
    finally:
        wipe(directory)
    if not value.strip():
        raise NixfleetError("empty value: edit aborted, nothing changed")
    return value
