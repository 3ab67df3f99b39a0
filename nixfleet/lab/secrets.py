"""Lab-only secrets: the rules of secrets/rules.py with dummy values, for the lab hosts' keys.

The lab cannot hold the fleet's real secrets (its hosts have their own host keys, and the
values must not leave the users' machines), so `nixfleet lab up` encrypts a random dummy value
for every secret of the rules, with the same nixfleet.secrets code, to:
  - each recipient lab host's own /etc/ssh/ssh_host_ed25519_key.pub (generated at first boot),
  - the lab's admin key (its deployer key, state/id_ed25519), standing in for the users' keys,
    so that the delivery check can decrypt them locally.
A secret whose value programs read as a key gets one of that kind: binary-cache-key is a Nix
signing key (name nixfleet-lab-cache-1, as `nix-store --generate-binary-cache-key` makes), and
the lab flake carries its public half as binary-cache.pub, which the lab's clients trust;
builder-ssh-key is an OpenSSH Ed25519 key, whose public half the lab flake carries as
builder-ssh.pub (what a builder's store accepts over SSH).
They live in the lab's state directory (secrets/<name>.age); the lab flake carries them to the
hosts like the real flake carries secrets/. Values exist only in memory and, on the hosts, in
/run/agenix.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path

from nixfleet.errors import NixfleetError
from nixfleet.inventory import Fleet, derive_groups
from nixfleet.lab.config import LabPaths
from nixfleet.model import Host
from nixfleet.secrets.agefile import AgeFormatError, read_header, ssh_key_tag
from nixfleet.secrets.identities import load_identities
from nixfleet.secrets.rules import RULES_FILE, Recipient, Rules, load_rules
from nixfleet.secrets.store import SecretStore

ADMIN = "lab-admin"
# nix/modules/binary-cache.nix's secretName: the signing key of the cache the server runs.
BINARY_CACHE_KEY = "binary-cache-key"
BINARY_CACHE_KEY_NAME = "nixfleet-lab-cache-1"
# nix/modules/binary-cache.nix's sshServe: the key with which hosts fetch from a builder's
# store over SSH.
BUILDER_SSH_KEY = "builder-ssh-key"
HOST_KEY = Path("etc") / "ssh" / "ssh_host_ed25519_key.pub"
UP_HINT = "run `nixfleet lab up`"


def host_key(paths: LabPaths, name: str) -> str | None:
    """The public host key the lab generated for `name` ("type base64"), if it has one."""
    try:
        fields = (paths.host_dir(name) / "upper" / HOST_KEY).read_text().split()
    except OSError:
        return None
    return " ".join(fields[:2]) if len(fields) >= 2 else None


def admin_key(paths: LabPaths) -> str:
    try:
        return " ".join(Path(f"{paths.key}.pub").read_text().split()[:2])
    except OSError:
        raise NixfleetError(f"the lab has no admin key ({paths.key}.pub); {UP_HINT}") from None


def lab_fleet(hosts: Iterable[Host], paths: LabPaths,
              groups: Mapping[str, list[str]] | None = None) -> Fleet:
    """The fleet with the lab's keys: each host's own lab host key, the lab admin key for
    every user. Groups are derived from the hosts unless given."""
    admin = admin_key(paths)
    keyed: dict[str, Host] = {}
    for host in hosts:
        key = host_key(paths, host.name)
        if key is None:
            raise NixfleetError(f"lab host {host.name} has no host key yet; {UP_HINT}")
        keyed[host.name] = host.model_copy(update={
            "ssh": host.ssh.model_copy(update={"hostKey": key}),
            "users": [user.model_copy(update={"sshKey": admin}) for user in host.users]})
    if groups is None:
        derived: dict[str, list[str]] = {}
        for host in keyed.values():
            for group in derive_groups(host):
                derived.setdefault(group, []).append(host.name)
        groups = derived
    return Fleet(hosts=keyed, groups={g: list(m) for g, m in groups.items()}, host_data={})


def lab_rules(fleet: Fleet, root: Path, paths: LabPaths) -> Rules | None:
    """secrets/rules.py resolved against the lab fleet, the lab admin key a recipient of every
    secret; None where the repository has no rules."""
    if not (root / RULES_FILE).is_file():
        return None
    rules = load_rules(fleet, root)
    admin = Recipient(ADMIN, "user", admin_key(paths))
    secrets = {name: rule if admin.stanza in rule.stanzas
               else replace(rule, recipients=(*rule.recipients, admin))
               for name, rule in rules.secrets.items()}
    return replace(rules, keys={**rules.keys, ADMIN: admin}, secrets=secrets)


def lab_store(fleet: Fleet, root: Path, paths: LabPaths) -> SecretStore | None:
    """The lab's secrets (state/secrets/*.age), decryptable with the lab admin key."""
    rules = lab_rules(fleet, root, paths)
    if rules is None:
        return None
    return SecretStore(paths.state, rules, load_identities([paths.key]))


def ensure_lab_secrets(fleet: Fleet, root: Path, paths: LabPaths,
                       progress: Callable[[str], None] = print) -> None:
    """Create a dummy value for every secret of the rules that has none in the lab, replace
    damaged ones, and re-encrypt those whose recipients changed (a reset host has a new key)."""
    store = lab_store(fleet, root, paths)
    if store is None:
        return
    created, stale = 0, []
    for status in store.status():
        if status.state == "damaged":
            store.path(status.name).unlink()
        if status.state in ("missing", "damaged"):
            store.create(status.name, dummy_value(status.name))
            created += 1
        elif status.state == "stale":
            stale.append(status.name)
        elif status.name in KEY_SECRETS and status.state == "ok" and store.update(
                status.name, _a_key(status.name)):
            created += 1  # a dummy from before the lab made it a key
    errors = store.rekey(stale, progress=lambda _line: None) if stale else []
    if errors:
        raise NixfleetError(f"lab secrets: {errors[0]}")
    if created or stale:
        progress(f"lab: secrets: {created} created, {len(stale)} re-encrypted to the lab's "
                 f"keys ({store.directory})")


def dummy_value(name: str) -> bytes:
    if name == BINARY_CACHE_KEY:
        return nix_secret_key(BINARY_CACHE_KEY_NAME)
    if name == BUILDER_SSH_KEY:
        return ssh_secret_key()
    return f"lab-dummy-{name}-{os.urandom(8).hex()}\n".encode()


def ssh_secret_key() -> bytes:
    """A new OpenSSH Ed25519 private key, as `ssh-keygen -t ed25519 -N ""` writes it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption())


def ssh_public_key(secret: bytes) -> str | None:
    """The public half, "ssh-ed25519 BASE64", of an OpenSSH Ed25519 private key; None if it
    is not one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_ssh_private_key(secret, password=None)
    except (ValueError, TypeError):
        return None
    if not isinstance(key, Ed25519PrivateKey):
        return None
    return key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def nix_secret_key(name: str) -> bytes:
    """A new Nix signing key: NAME:base64(Ed25519 seed + public key), no newline, as
    `nix-store --generate-binary-cache-key` writes it."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes_raw() + key.public_key().public_bytes_raw()
    return f"{name}:{base64.b64encode(raw).decode()}".encode()


def nix_public_key(secret: bytes) -> str | None:
    """The public half, NAME:base64, of a Nix secret signing key; None if it is not one."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    name, colon, encoded = secret.decode(errors="replace").strip().partition(":")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        return None
    if not (name and colon and len(raw) == 64) or raw[32:] != (
            Ed25519PrivateKey.from_private_bytes(raw[:32]).public_key().public_bytes_raw()):
        return None
    return f"{name}:{base64.b64encode(raw[32:]).decode()}"


# Secrets whose value programs read as a key: the public half of each (None when the value is
# not such a key, e.g. a dummy from before the lab made one), and the lab flake file that
# carries it.
KEY_SECRETS: dict[str, tuple[Callable[[bytes], str | None], str]] = {
    BINARY_CACHE_KEY: (nix_public_key, "binary-cache.pub"),
    BUILDER_SSH_KEY: (ssh_public_key, "builder-ssh.pub"),
}


def _a_key(name: str) -> Callable[[bytes], bytes]:
    """The value kept if it is a key of KEY_SECRETS' kind, else a new key."""
    public_half = KEY_SECRETS[name][0]
    return lambda value: value if public_half(value) else dummy_value(name)


def lab_secret_files(hosts: Iterable[Host], root: Path, paths: LabPaths) -> dict[str, bytes]:
    """For the lab flake: secrets/<name>.age of every secret a host receives and, per host,
    hosts/<host>.secrets.json (name, owner, group, mode of each of its secrets, from the rules);
    binary-cache.pub and builder-ssh.pub, the public halves of the key secrets (KEY_SECRETS),
    where a host receives them.
    Each file must be encrypted to its receiving hosts' current lab keys."""
    hosts = list(hosts)
    files: dict[str, bytes] = {}
    fleet = lab_fleet(hosts, paths) if (root / RULES_FILE).is_file() else None
    rules = lab_rules(fleet, root, paths) if fleet else None
    for host in hosts:
        specs = [rule.spec(host.name) for rule in rules.secrets.values()
                 if host.name in rule.owners] if rules else []
        manifest = [{"name": s.name, "owner": s.owner, "group": s.group, "mode": s.mode}
                    for s in sorted(specs, key=lambda s: s.name)]
        files[f"hosts/{host.name}.secrets.json"] = (json.dumps(manifest, indent=2)
                                                    + "\n").encode()
        for spec in specs:
            path = f"secrets/{spec.name}.age"
            if path not in files:
                files[path] = _lab_file(paths, spec.name)
            key = fleet.hosts[host.name].ssh.hostKey if fleet else None
            if key and ssh_key_tag(key) not in read_header(files[path]).ssh_recipients:
                raise NixfleetError(f"lab secret {spec.name} is not encrypted to {host.name}'s "
                                    f"lab host key; {UP_HINT}")
    for name, (_, file) in KEY_SECRETS.items():
        public = lab_public_key(rules, paths, name) if rules and (
            f"secrets/{name}.age" in files) else None
        if public is not None:
            files[file] = public.encode()
    return files


def lab_public_key(rules: Rules, paths: LabPaths, name: str) -> str | None:
    """The public half of the lab's key secret `name` (decrypted with the lab admin key); None
    while it is a dummy from before the lab made it a key (the next `lab up` replaces it):
    the hosts then get no settings that need it."""
    store = SecretStore(paths.state, rules, load_identities([paths.key]))
    return KEY_SECRETS[name][0](store.decrypt(name))


def _lab_file(paths: LabPaths, name: str) -> bytes:
    path = paths.state / "secrets" / f"{name}.age"
    try:
        data = path.read_bytes()
        read_header(data)
    except OSError:
        raise NixfleetError(f"lab secret {name}: no {path}; {UP_HINT}") from None
    except AgeFormatError as error:
        raise NixfleetError(f"lab secret {name}: {path}: {error}; {UP_HINT}") from None
    return data
