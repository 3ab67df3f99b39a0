"""The secrets/ directory: encrypted *.age files, checked against the rules.

Values exist only in memory and in the process's stdout for `show` (the editor has its own
module). Every file is replaced atomically (temp file + rename), so an error or an interrupt
leaves the old file, never half a new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from nixfleet.errors import NixfleetError
from nixfleet.files import write_atomic
from nixfleet.inventory import Fleet, project_root
from nixfleet.secrets.agefile import AgeFormatError, Header, read_header
from nixfleet.secrets.identities import (
    DEFAULT_IDENTITY,
    Identity,
    Prompt,
    ask_passphrase,
    default_identity_paths,
    load_identities,
)
from nixfleet.secrets.parallel import parallel_map
from nixfleet.secrets.rules import SECRETS_DIR, Rules, SecretRule, check_name, load_rules

AGE_FILE_MODE = 0o644


@dataclass
class FileStatus:
    """One secret as found on disk, compared with its rule."""

    name: str
    state: str  # ok | missing (rule, no file) | no-rule (file, no rule) | stale | damaged
    recipients: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the rule, not in the file
    extra: list[str] = field(default_factory=list)  # in the file, not in the rule
    decryptable_by: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def problem(self) -> bool:
        return self.state != "ok"


class SecretStore:
    """secrets/*.age of one repository, with its rules and the user's identities."""

    def __init__(self, root: Path, rules: Rules, identities: Sequence[Identity] = (),
                 prompt: Prompt = ask_passphrase, identity_note: str = "") -> None:
        self.root = root
        self.directory = root / SECRETS_DIR
        self.rules = rules
        self.identities = list(identities)
        self.prompt = prompt
        # Why there are no identities (shown when decryption needs one).
        self.identity_note = identity_note

    # --- reading ---------------------------------------------------------------------------

    def path(self, name: str) -> Path:
        return self.directory / f"{check_name(name)}.age"

    def relative(self, name: str) -> str:
        return f"{SECRETS_DIR}/{name}.age"

    def files(self) -> dict[str, Path]:
        """Every *.age file in secrets/, by secret name."""
        if not self.directory.is_dir():
            return {}
        return {p.name.removesuffix(".age"): p for p in sorted(self.directory.glob("*.age"))
                if p.is_file()}

    def existing(self, name: str) -> Path:
        """The file of an existing secret; a missing one names those there are."""
        path = self.path(name)
        if not path.is_file():
            available = ", ".join(self.files()) or "none yet"
            raise NixfleetError(f"no secret {name!r} ({self.relative(name)} does not exist); "
                                f"available: {available}")
        return path

    def read(self, name: str) -> tuple[bytes, Header]:
        data = self.existing(name).read_bytes()
        try:
            return data, read_header(data)
        except AgeFormatError as error:
            raise NixfleetError(f"{self.relative(name)}: {error}") from None

    def decrypt(self, name: str) -> bytes:
        data, header = self.read(name)
        return self._decrypt(name, data, header)

    def _decrypt(self, name: str, data: bytes, header: Header) -> bytes:
        import pyrage

        candidates = [i for i in self.identities if i.could_decrypt(header)]
        if not candidates:
            recipients = ", ".join(self.rules.recipient_names(header.ssh_recipients)
                                   + list(header.other_recipients)) or "none"
            yours = ", ".join(i.label for i in self.identities) or self.identity_note or "none"
            raise NixfleetError(f"{self.relative(name)}: none of your identities ({yours}) is a "
                                f"recipient (recipients: {recipients})")
        keys = [identity.unlock(self.prompt) for identity in candidates]
        try:
            return pyrage.decrypt(data, keys)
        except pyrage.DecryptError:
            raise NixfleetError(f"{self.relative(name)}: cannot decrypt it: damaged file or wrong "
                                "key") from None

    def sha256(self, name: str) -> str:
        return sha256_bytes(self.decrypt(name))

    # --- writing ---------------------------------------------------------------------------

    def encrypt(self, rule: SecretRule, value: bytes, armored: bool = False) -> bytes:
        import pyrage

        recipients = [pyrage.ssh.Recipient.from_str(r.key) for r in rule.recipients]
        return pyrage.encrypt(value, recipients, armored=armored)

    def check_new(self, name: str) -> SecretRule:
        """The rule of a secret that may be created: it has a rule and no file yet."""
        rule = self.rules.rule(name)
        if self.path(name).exists():
            raise NixfleetError(f"{self.relative(name)} already exists (change it with "
                                f"`nixfleet secrets edit {name}`)")
        return rule

    def create(self, name: str, value: bytes) -> Path:
        rule = self.check_new(name)
        _check_value(value)
        path = self.path(name)
        try:
            write_atomic(path, self.encrypt(rule, value), AGE_FILE_MODE, exclusive=True)
        except FileExistsError:
            raise NixfleetError(f"{path.name} appeared meanwhile; not overwritten") from None
        return path

    def update(self, name: str, change: Callable[[bytes], bytes]) -> bool:
        """Re-encrypt `name` with change(current value); False (nothing written) if the value
        is unchanged. A missing secret names the available ones."""
        self.existing(name)
        rule = self.rules.rule(name)  # an orphaned file has no recipients to encrypt to
        data, header = self.read(name)
        current = self._decrypt(name, data, header)
        value = change(current)
        if value == current:
            return False
        _check_value(value)
        write_atomic(self.path(name), self.encrypt(rule, value, header.armored), AGE_FILE_MODE)
        return True

    def rekey(self, names: Sequence[str] = (), force: bool = False,
              progress: Callable[[str], None] = print) -> list[str]:
        """Re-encrypt files whose recipients differ from their rule (all of them if `force`).

        A file that cannot be rekeyed is reported and skipped; the errors are returned.
        Decryption and encryption run on every CPU; the files are then replaced together.
        """
        selected = list(names) or [n for n in self.files() if n in self.rules.secrets]
        if not names:
            for orphan in (n for n in self.files() if n not in self.rules.secrets):
                progress(f"{self.relative(orphan)}: no rule in secrets/rules.py, skipped")
        errors: list[str] = []
        todo: list[tuple[str, SecretRule, bytes, Header]] = []
        for name in selected:
            try:
                rule = self.rules.rule(name)
                data, header = self.read(name)
            except NixfleetError as error:
                errors.append(str(error))
                progress(f"error: {error}")
                continue
            if force or header.ssh_recipients != rule.stanzas or header.other_recipients:
                todo.append((name, rule, data, header))
        # Passphrases are asked here, once, before any worker starts.
        for identity in self.identities:
            if any(identity.could_decrypt(header) for *_, header in todo):
                identity.unlock(self.prompt)
        # Temp files carry this run's mark, so that an interrupt leaves none behind.
        temp_prefix = f".rekey-{os.getpid()}-"
        replaced: dict[Path, str] = {}
        try:
            results = parallel_map(partial(self._reencrypt, temp_prefix), todo)
            for (name, *_), (temp, failure) in zip(todo, results, strict=True):
                if failure:
                    errors.append(failure)
                    progress(f"error: {failure}")
                else:
                    replaced[self.path(name)] = temp
            replace_files(replaced)
        finally:
            for leftover in self.directory.glob(f"{temp_prefix}*"):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
        for name, rule, _, header in todo:
            if self.path(name) in replaced:
                progress(f"rekeyed {self.relative(name)}{_change(self, header, rule)}")
        progress(f"rekeyed {len(replaced)} of {len(selected)} files"
                 + (f", {len(errors)} failed" if errors else ""))
        return errors

    def _reencrypt(self, temp_prefix: str,
                   item: tuple[str, SecretRule, bytes, Header]) -> tuple[str, str]:
        """(temp file `temp_prefix`NAME.* beside the file, encrypted to its rule's recipients;
        not yet synced), or ("", why that failed)."""
        name, rule, data, header = item
        try:
            encrypted = self.encrypt(rule, self._decrypt(name, data, header), header.armored)
        except NixfleetError as error:
            return "", str(error)
        fd, temp = tempfile.mkstemp(prefix=f"{temp_prefix}{name}.", dir=self.directory)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(fd, AGE_FILE_MODE)
            handle.write(encrypted)
        return temp, ""

    # --- checking --------------------------------------------------------------------------

    def status(self) -> list[FileStatus]:
        files = self.files()
        result = []
        for name, rule in self.rules.secrets.items():
            if name not in files:
                result.append(FileStatus(name, "missing"))
                continue
            result.append(self._file_status(name, rule))
        orphans = [name for name in files if name not in self.rules.secrets]
        result += [self._file_status(name, None) for name in orphans]
        return result

    def _opens(self, identity: Identity, data: bytes, header: Header) -> bool:
        """SSH keys by their stanza tag; X25519 stanzas carry no tag, so an age identity
        is tried (the value is dropped at once)."""
        if identity.kind != "X25519" or not identity.could_decrypt(header):
            return identity.could_decrypt(header)
        import pyrage

        try:
            pyrage.decrypt(data, [identity.unlock(self.prompt)])
        except pyrage.DecryptError:
            return False
        return True

    def _file_status(self, name: str, rule: SecretRule | None) -> FileStatus:
        try:
            data, header = self.read(name)
        except NixfleetError as error:
            return FileStatus(name, "damaged", error=str(error))
        found = header.ssh_recipients
        status = FileStatus(
            name, "no-rule", recipients=self.rules.recipient_names(found) + _other(header),
            decryptable_by=[i.label for i in self.identities if self._opens(i, data, header)])
        if rule is None:
            return status
        status.missing = self.rules.recipient_names(rule.stanzas - found)
        status.extra = self.rules.recipient_names(found - rule.stanzas) + _other(header)
        status.state = "stale" if status.missing or status.extra else "ok"
        return status


# --- helpers -------------------------------------------------------------------------------


def _check_value(value: bytes) -> None:
    if not value.strip():
        raise NixfleetError("empty value: nothing written")


def _other(header: Header) -> list[str]:
    return [f"{count} {kind} recipient{'s' if count > 1 else ''}"
            for kind, count in sorted(header.other_recipients.items())]


def _change(store: SecretStore, header: Header, rule: SecretRule) -> str:
    added = store.rules.recipient_names(rule.stanzas - header.ssh_recipients)
    removed = (store.rules.recipient_names(header.ssh_recipients - rule.stanzas)
               + _other(header))
    changes = [f"+{n}" for n in added] + [f"-{n}" for n in removed]
    return f" ({' '.join(changes)})" if changes else ""


def replace_files(temps: dict[Path, str]) -> None:
    """Rename each written temp file over its target after syncing them all: syncing in one
    pass instead of once per write costs a few journal commits instead of one per file."""
    for temp in temps.values():
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for path, temp in temps.items():
        os.replace(temp, path)
    for directory in {path.parent for path in temps}:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def sha256_bytes(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


def sha256_of_value(name: str, identity_paths: Sequence[Path] = (), fleet: Fleet | None = None,
                    root: Path | None = None, prompt: Prompt = ask_passphrase) -> str:
    """SHA-256 (hex) of a secret's decrypted value, to compare with `sha256sum
    /run/agenix/<name>` on a host without ever moving the value."""
    store = open_store(root, identity_paths, fleet=fleet, prompt=prompt)
    return store.sha256(name)


def open_store(root: Path | None, identity_paths: Sequence[Path] = (), fleet: Fleet | None = None,
               prompt: Prompt = ask_passphrase) -> SecretStore:
    """The store of a repository: its fleet (from inventory.py), rules and identities."""
    from nixfleet.inventory import load_inventory_file

    root = root or project_root()
    fleet = fleet or load_inventory_file(root / "inventory.py")
    paths = list(identity_paths) or default_identity_paths()
    note = "" if paths else f"{DEFAULT_IDENTITY} does not exist; give -i PATH"
    return SecretStore(root, load_rules(fleet, root), load_identities(paths), prompt, note)
