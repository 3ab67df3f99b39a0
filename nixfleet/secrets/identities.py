"""Private keys that decrypt secrets: SSH keys (ed25519, RSA) and age identity files.

An SSH identity's public key (hence its age stanza tag) is read without its passphrase, so
only the keys a file is actually encrypted to are unlocked, each at most once per run.
Key material stays in memory; nothing is written anywhere.
"""

from __future__ import annotations

import base64
import binascii
import getpass
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nixfleet.errors import NixfleetError
from nixfleet.secrets.agefile import SSH_TYPES, Header, blob_tag, ssh_key_tag

DEFAULT_IDENTITY = Path("~/.ssh/id_ed25519")
OPENSSH_BEGIN = b"-----BEGIN OPENSSH PRIVATE KEY-----"
OPENSSH_MAGIC = b"openssh-key-v1\0"
AGE_SECRET_KEY = "AGE-SECRET-KEY-1"
Prompt = Callable[[str], str]


def ask_passphrase(prompt: str) -> str:
    return getpass.getpass(prompt)


@dataclass(eq=False)
class Identity:
    """One private key. `stanza` is (type, tag) for SSH keys, None where it is unknown."""

    path: Path
    kind: str  # ssh-ed25519, ssh-rsa or X25519
    stanza: tuple[str, str] | None
    encrypted: bool
    _material: bytes = field(repr=False)
    _unlocked: Any = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return str(self.path)

    def could_decrypt(self, header: Header) -> bool:
        """Whether the header has a stanza this key may open (exact for SSH keys)."""
        if self.kind == "X25519":
            return header.other_recipients["X25519"] > 0
        if self.stanza is None:
            return any(kind == self.kind for kind, _ in header.ssh_recipients)
        return self.stanza in header.ssh_recipients

    def unlock(self, prompt: Prompt) -> Any:
        """The pyrage identity, asking for the passphrase once if the key has one."""
        if self._unlocked is None:
            import pyrage

            if self.kind == "X25519":
                self._unlocked = pyrage.x25519.Identity.from_str(self._material.decode())
            else:
                material = self._material
                if self.encrypted:
                    material = _decrypt_ssh_key(self.path, material, prompt)
                try:
                    self._unlocked = pyrage.ssh.Identity.from_buffer(material)
                except pyrage.IdentityError:
                    raise NixfleetError(f"identity {self.path}: unsupported SSH private key "
                                        "(use an ed25519 or RSA key)") from None
        return self._unlocked


def load_identities(paths: Sequence[Path]) -> list[Identity]:
    """Read every identity file; a missing or unusable one is a one-line error."""
    identities: list[Identity] = []
    for path in paths:
        if not path.is_file():
            raise NixfleetError(f"identity {path}: no such file")
        try:
            data = path.read_bytes()
        except OSError as error:
            raise NixfleetError(f"identity {path}: cannot read it ({error.strerror})") from None
        identities += _parse_identity_file(path, data)
    return identities


def default_identity_paths() -> list[Path]:
    path = DEFAULT_IDENTITY.expanduser()
    return [path] if path.is_file() else []


def _parse_identity_file(path: Path, data: bytes) -> list[Identity]:
    text = data.decode(errors="replace")
    stripped = text.strip()
    if stripped.startswith(("ssh-", "ecdsa-", "age1")):
        raise NixfleetError(f"identity {path}: is a public key; give the private key")
    if stripped.startswith(("AGE-SECRET-KEY-", "#")):
        return _age_identities(path, stripped)
    if data.lstrip().startswith(OPENSSH_BEGIN):
        kind, stanza, encrypted = _openssh_public(path, data)
        return [Identity(path, kind, stanza, encrypted, data)]
    if stripped.startswith("-----BEGIN") and "PRIVATE KEY-----" in stripped.splitlines()[0]:
        return [_pem_identity(path, data)]
    raise NixfleetError(f"identity {path}: not an SSH private key or age identity file")


def _age_identities(path: Path, text: str) -> list[Identity]:
    import pyrage

    identities = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith(AGE_SECRET_KEY):
            raise NixfleetError(f"identity {path}: line {number}: not an age secret key "
                                "(plugin identities are not supported)")
        try:
            pyrage.x25519.Identity.from_str(line)
        except pyrage.IdentityError:
            raise NixfleetError(f"identity {path}: line {number}: invalid age secret key") from None
        identities.append(Identity(path, "X25519", None, False, line.encode()))
    if not identities:
        raise NixfleetError(f"identity {path}: no AGE-SECRET-KEY line")
    return identities


def _openssh_public(path: Path, data: bytes) -> tuple[str, tuple[str, str], bool]:
    """Key type, stanza and whether it is encrypted, from the unencrypted part of the file."""
    lines = data.strip().splitlines()
    try:
        blob = base64.b64decode(b"".join(lines[1:-1]), validate=True)
        if not blob.startswith(OPENSSH_MAGIC):
            raise ValueError
        position = len(OPENSSH_MAGIC)
        cipher, position = _ssh_string(blob, position)
        _kdf, position = _ssh_string(blob, position)
        _kdf_options, position = _ssh_string(blob, position)
        count = int.from_bytes(blob[position:position + 4], "big")
        public, _ = _ssh_string(blob, position + 4)
        key_type, _ = _ssh_string(public, 0)
    except (binascii.Error, ValueError, IndexError):
        raise NixfleetError(f"identity {path}: damaged OpenSSH private key") from None
    kind = key_type.decode(errors="replace")
    if count != 1 or kind not in SSH_TYPES:
        raise NixfleetError(f"identity {path}: {kind} keys cannot decrypt age files "
                            f"(use {' or '.join(SSH_TYPES)})")
    return kind, (kind, blob_tag(public)), cipher != b"none"


def _ssh_string(buffer: bytes, position: int) -> tuple[bytes, int]:
    length = int.from_bytes(buffer[position:position + 4], "big")
    end = position + 4 + length
    if len(buffer) < end:
        raise ValueError("truncated")
    return buffer[position + 4:end], end


def _pem_identity(path: Path, data: bytes) -> Identity:
    """A PEM (PKCS#1/PKCS#8) key: public part from the key, or from PATH.pub if encrypted."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # encrypted: the public key is only in PATH.pub, if at all
        pub = path.with_name(path.name + ".pub")
        stanza = None
        if pub.is_file():
            try:
                stanza = ssh_key_tag(pub.read_text())
            except ValueError:
                stanza = None
        kind = stanza[0] if stanza else "ssh-rsa"
        return Identity(path, kind, stanza, True, data)
    except ValueError:
        raise NixfleetError(f"identity {path}: damaged or unsupported PEM private key") from None
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    try:
        stanza = ssh_key_tag(public)
    except ValueError:
        stanza = ("", "")
    if stanza[0] not in SSH_TYPES:
        raise NixfleetError(f"identity {path}: only ed25519 and RSA keys can decrypt age files")
    return Identity(path, stanza[0], stanza, False, _openssh_private(key))


def _openssh_private(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption())


def _decrypt_ssh_key(path: Path, data: bytes, prompt: Prompt) -> bytes:
    """Unlock a passphrase-protected key in memory (as OpenSSH PEM, which pyrage reads)."""
    from cryptography.hazmat.primitives import serialization

    passphrase = prompt(f"passphrase for {path}: ").encode()
    try:
        if data.lstrip().startswith(OPENSSH_BEGIN):
            key: Any = serialization.load_ssh_private_key(data, password=passphrase)
        else:
            key = serialization.load_pem_private_key(data, password=passphrase)
    except ValueError:
        raise NixfleetError(f"identity {path}: wrong passphrase") from None
    except Exception as error:  # an unsupported cipher or KDF
        raise NixfleetError(f"identity {path}: cannot unlock it ({error})") from None
    return _openssh_private(key)
