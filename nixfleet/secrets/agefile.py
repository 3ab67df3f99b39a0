"""Reading an age file's header without decrypting it (age-encryption.org/v1).

The header lists one stanza per recipient. ssh-ed25519 and ssh-rsa stanzas name their
recipient by a tag: the first 4 bytes of SHA-256 of the SSH wire encoding of the public key,
base64 without padding (C2SP age spec, "ssh-ed25519" and "ssh-rsa" recipient types). So the
recipients of a file can be compared with the rules without any private key. X25519 stanzas
carry no tag (only how many there are is known); "*-grease" stanzas are random filler that
age implementations add and are ignored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections import Counter
from dataclasses import dataclass

from nixfleet.model import parse_ssh_public_key

INTRO = b"age-encryption.org/v1"
ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
ARMOR_END = b"-----END AGE ENCRYPTED FILE-----"
SSH_TYPES = ("ssh-ed25519", "ssh-rsa")
# Payload: a 16-byte nonce, then at least one chunk with its 16-byte Poly1305 tag.
MIN_PAYLOAD = 32
_COLUMNS = 64
_ARG = re.compile(rb"^[\x21-\x7e]+$")
_B64 = re.compile(rb"^[A-Za-z0-9+/]*$")


class AgeFormatError(ValueError):
    """Not an age file, or a truncated/damaged one; the message says where."""


@dataclass(frozen=True)
class Stanza:
    type: str
    args: tuple[str, ...]

    @property
    def recipient(self) -> tuple[str, str] | None:
        """(type, tag) of an SSH stanza, None for any other type."""
        if self.type in SSH_TYPES and self.args:
            return self.type, self.args[0]
        return None

    @property
    def is_grease(self) -> bool:
        return self.type.endswith("-grease")


@dataclass(frozen=True)
class Header:
    stanzas: tuple[Stanza, ...]
    armored: bool

    @property
    def ssh_recipients(self) -> frozenset[tuple[str, str]]:
        """{(type, tag)} of the SSH recipients."""
        return frozenset(s.recipient for s in self.stanzas if s.recipient)

    @property
    def other_recipients(self) -> Counter[str]:
        """Recipients that carry no tag (X25519, scrypt, plugins), counted by type."""
        return Counter(s.type for s in self.stanzas if not s.recipient and not s.is_grease)


def ssh_key_tag(public_key: str) -> tuple[str, str]:
    """(type, age stanza tag) of an OpenSSH public key line; ValueError if it is not one."""
    key_type, blob = parse_ssh_public_key(public_key)
    return key_type, blob_tag(blob)


def blob_tag(blob: bytes) -> str:
    return base64.b64encode(hashlib.sha256(blob).digest()[:4]).decode().rstrip("=")


def is_armored(data: bytes) -> bool:
    return data.lstrip().startswith(ARMOR_BEGIN)


def dearmor(data: bytes) -> bytes:
    """The binary age file inside the PEM-style armor."""
    lines = data.strip().split(b"\n")
    lines = [line.rstrip(b"\r") for line in lines]
    if lines[0] != ARMOR_BEGIN:
        raise AgeFormatError("armored file does not start with the age armor line")
    if len(lines) < 3 or lines[-1] != ARMOR_END:
        raise AgeFormatError("armored file is truncated (no END line)")
    body = lines[1:-1]
    if any(len(line) > _COLUMNS for line in body) or any(len(line) != _COLUMNS
                                                          for line in body[:-1]):
        raise AgeFormatError("armored file has malformed base64 lines")
    try:
        return base64.b64decode(b"".join(body), validate=True)
    except (binascii.Error, ValueError):
        raise AgeFormatError("armored file is not valid base64") from None


def read_header(data: bytes) -> Header:
    """Parse the header (and check a payload follows); raise AgeFormatError if damaged."""
    armored = is_armored(data)
    binary = dearmor(data) if armored else data
    if not binary.startswith(INTRO + b"\n"):
        raise AgeFormatError("not an age file (no age-encryption.org/v1 header)")
    position = len(INTRO) + 1
    stanzas: list[Stanza] = []
    while True:
        end = binary.find(b"\n", position)
        if end < 0:
            raise AgeFormatError("truncated header")
        line = binary[position:end]
        position = end + 1
        if line.startswith(b"--- "):
            if not _B64.match(line[4:]) or len(line[4:]) != 43:
                raise AgeFormatError("malformed header MAC")
            break
        if not line.startswith(b"-> "):
            raise AgeFormatError(f"malformed header line {len(stanzas) + 2}")
        args = line[3:].split(b" ")
        if not all(_ARG.match(arg) for arg in args):
            raise AgeFormatError(f"malformed stanza {len(stanzas) + 1}")
        # The body: base64 lines of 64 columns, ended by a shorter (possibly empty) line.
        while True:
            end = binary.find(b"\n", position)
            if end < 0:
                raise AgeFormatError("truncated header")
            body_line = binary[position:end]
            position = end + 1
            if len(body_line) > _COLUMNS or not _B64.match(body_line):
                raise AgeFormatError(f"malformed body of stanza {len(stanzas) + 1}")
            if len(body_line) < _COLUMNS:
                break
        stanzas.append(Stanza(args[0].decode(), tuple(a.decode() for a in args[1:])))
    if not stanzas:
        raise AgeFormatError("header has no recipient stanza")
    if len(binary) - position < MIN_PAYLOAD:
        raise AgeFormatError("truncated payload")
    return Header(tuple(stanzas), armored)
