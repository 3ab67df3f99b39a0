"""secrets/rules.py + the fleet -> who may decrypt each secret and how a host receives it.

The rules file names recipients (groups, hosts, users); their public keys come from the
inventory alone. From the resolved rules come two committed files, checked to be current by the
tests: secrets/secrets.nix (agenix's rules file, so `agenix -e` keeps working) and
nix/secrets.json (what the flake's agenix module reads: owner, group, mode, which hosts).
"""

from __future__ import annotations

import difflib
import json
import re
import runpy
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from nixfleet.errors import NixfleetError
from nixfleet.inventory import Fleet, project_root
from nixfleet.model import SAFE_USER_NAME
from nixfleet.secrets.agefile import SSH_TYPES, ssh_key_tag

RULES_FILE = Path("secrets") / "rules.py"
SECRETS_NIX = Path("secrets") / "secrets.nix"
SECRETS_JSON = Path("nix") / "secrets.json"
SECRETS_DIR = Path("secrets")
RUN_DIR = "/run/agenix"
# Groups every secrets.nix defines, as the original's did.
STANDARD_GROUPS = ("allUsers", "allHosts", "workstations", "servers")
SECRET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
RULE_FIELDS = ("recipients", "owner", "group", "mode")
MODE = re.compile(r"^0?[0-7]{3}$")
USER_PLACEHOLDER = "{user}"
ADMIN_PLACEHOLDER = "{admin}"
NIX_KEYWORDS = frozenset({"if", "then", "else", "assert", "with", "let", "in", "rec",
                          "inherit", "or"})


def check_name(name: str) -> str:
    """A secret name is a plain file name: no '/', no '..', no leading '.' or '-'."""
    if not SECRET_NAME.match(name) or ".." in name:
        raise NixfleetError(f"invalid secret name {name!r} (use letters, digits, '.', '_', '-'; "
                            "no '/' or '..')")
    if name.endswith(".age"):
        raise NixfleetError(f"invalid secret name {name!r} (give the name without .age)")
    return name


@dataclass(frozen=True)
class Recipient:
    """A named public key from the inventory: a user's sshKey or a host's ssh.hostKey."""

    name: str
    kind: str  # "user" or "host"
    key: str  # "<type> <base64>", without comment

    @cached_property
    def stanza(self) -> tuple[str, str]:
        """(type, tag) this key has in an age header."""
        return ssh_key_tag(self.key)


@dataclass(frozen=True)
class SecretSpec:
    """One secret as a host receives it (/run/agenix/<name>)."""

    name: str
    owner: str
    group: str
    mode: str
    file: str  # secrets/<name>.age, relative to the repository

    @property
    def path(self) -> str:
        return f"{RUN_DIR}/{self.name}"


@dataclass(frozen=True)
class SecretRule:
    name: str
    references: tuple[str, ...]  # as written in the rules: groups, hosts, users
    recipients: tuple[Recipient, ...]
    owners: dict[str, str]  # receiving host -> owner there
    default_owner: str
    group: str
    mode: str

    @property
    def file(self) -> str:
        return f"{SECRETS_DIR}/{self.name}.age"

    @property
    def hosts(self) -> list[str]:
        return list(self.owners)

    @property
    def owner(self) -> str:
        """The owner on every receiving host (nix/secrets.json has one per secret)."""
        owners = set(self.owners.values())
        if len(owners) > 1:
            detail = ", ".join(f"{h}: {o}" for h, o in self.owners.items())
            raise NixfleetError(f"{RULES_FILE}: {self.name}: owner differs between hosts "
                                f"({detail}); nix/secrets.json has one owner per secret")
        return owners.pop() if owners else self.default_owner

    @cached_property
    def stanzas(self) -> frozenset[tuple[str, str]]:
        return frozenset(r.stanza for r in self.recipients)

    def spec(self, host: str) -> SecretSpec:
        return SecretSpec(self.name, self.owners[host], self.group, self.mode, self.file)


@dataclass(frozen=True)
class Rules:
    keys: dict[str, Recipient]  # users, then hosts, in inventory order
    groups: dict[str, tuple[str, ...]]  # group -> key names
    secrets: dict[str, SecretRule]

    def rule(self, name: str) -> SecretRule:
        check_name(name)
        if name not in self.secrets:
            raise NixfleetError(f"no rule for secret {name!r} in {RULES_FILE}; "
                                f"known: {', '.join(self.secrets)}")
        return self.secrets[name]

    @cached_property
    def _names_by_stanza(self) -> dict[tuple[str, str], str]:
        return {r.stanza: r.name for r in self.keys.values()}

    def recipient_names(self, stanzas: frozenset[tuple[str, str]]) -> list[str]:
        """Names of the keys behind header stanzas; unknown ones by type and tag."""
        by_stanza = self._names_by_stanza
        return sorted(by_stanza.get(s, f"unknown {s[0]} key (tag {s[1]})") for s in stanzas)


# --- loading and resolving -----------------------------------------------------------------


def load_rules(fleet: Fleet, root: Path | None = None) -> Rules:
    """Read <root>/secrets/rules.py and resolve it against the fleet."""
    path = (root or project_root()) / RULES_FILE
    if not path.is_file():
        raise NixfleetError(f"{RULES_FILE} not found in {path.parent.parent} "
                            "(run `nixfleet secrets init`)")
    try:
        values = runpy.run_path(str(path))
    except Exception as error:  # a syntax error or a bad expression in the data file
        raise NixfleetError(f"{RULES_FILE}: cannot be read: {type(error).__name__}: "
                            f"{error}".splitlines()[0]) from None
    return resolve(fleet, values.get("SECRETS"), values.get("DEFAULTS", {}))


def fleet_keys(fleet: Fleet) -> dict[str, Recipient]:
    """Every named key of the fleet: users (deduplicated by name), then hosts."""
    keys: dict[str, Recipient] = {}
    seen_on: dict[str, str] = {}
    for host in fleet.hosts.values():
        for user in host.users:
            key = _bare_key(user.sshKey)
            known = keys.get(user.name)
            if known and known.key != key:
                raise NixfleetError(f"user {user.name}: sshKey differs between host "
                                    f"{seen_on[user.name]} and host {host.name}")
            if not known:
                keys[user.name] = Recipient(user.name, "user", key)
                seen_on[user.name] = host.name
    for host in fleet.hosts.values():
        if host.name in keys:
            raise NixfleetError(f"host {host.name}: name clashes with the user {host.name!r} "
                                "(secrets.nix names keys by host and user)")
        if host.ssh.hostKey:
            keys[host.name] = Recipient(host.name, "host", _bare_key(host.ssh.hostKey))
    return keys


def _bare_key(line: str) -> str:
    return " ".join(line.split()[:2])


def _check_key(recipient: Recipient) -> None:
    """Only keys age can encrypt to, and only ones it accepts (pyrage parses them)."""
    import pyrage

    where = (f"host {recipient.name}: ssh.hostKey" if recipient.kind == "host"
             else f"user {recipient.name}: sshKey")
    key_type = recipient.key.split()[0]
    if key_type not in SSH_TYPES:
        raise NixfleetError(f"{where}: {key_type} keys cannot be age recipients "
                            f"(use {' or '.join(SSH_TYPES)})")
    try:
        pyrage.ssh.Recipient.from_str(recipient.key)
    except pyrage.RecipientError:
        raise NixfleetError(f"{where}: not a valid {key_type} public key") from None


def resolve(fleet: Fleet, secrets: Any, defaults: Any) -> Rules:
    if not isinstance(secrets, dict):
        raise NixfleetError(f"{RULES_FILE}: defines no SECRETS dict")
    defaults = {"owner": "root", "group": "root", "mode": "0400", **_fields(defaults, "DEFAULTS")}
    keys = fleet_keys(fleet)
    groups = _groups(fleet, keys)
    users = [k for k, r in keys.items() if r.kind == "user"]
    resolved: dict[str, SecretRule] = {}
    checked: set[str] = set()
    for template, raw in secrets.items():
        if not isinstance(template, str):
            raise NixfleetError(f"{RULES_FILE}: secret name {template!r} is not a string")
        fields = {**defaults, **_fields(raw, template)}
        references = fields.get("recipients")
        if (not isinstance(references, list | tuple) or not references
                or not all(isinstance(r, str) for r in references)):
            raise NixfleetError(f"{RULES_FILE}: {template}: recipients must be a non-empty "
                                "list of group, host or user names")
        members: list[str] = []
        for reference in references:
            members += _expand(reference, template, keys, groups, fleet)
        recipients = tuple(keys[m] for m in dict.fromkeys(members))
        for recipient in recipients:
            if recipient.name not in checked:
                _check_key(recipient)
                checked.add(recipient.name)
        for user in users if USER_PLACEHOLDER in template else [None]:
            rule = _rule(template, user, fields, tuple(references), recipients, fleet)
            if rule.name in resolved:
                raise NixfleetError(f"{RULES_FILE}: secret {rule.name!r} is defined twice")
            resolved[rule.name] = rule
    return Rules(keys=keys, groups=groups, secrets=resolved)


def _fields(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise NixfleetError(f"{RULES_FILE}: {where}: expected a dict of {', '.join(RULE_FIELDS)}")
    for field, value in raw.items():
        if field not in RULE_FIELDS:
            hint = difflib.get_close_matches(str(field), RULE_FIELDS, n=1)
            raise NixfleetError(f"{RULES_FILE}: {where}: unknown field {field!r}"
                                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                                + f"; known: {', '.join(RULE_FIELDS)}")
        if field == "mode" and not (isinstance(value, str) and MODE.match(value)):
            raise NixfleetError(f"{RULES_FILE}: {where}: mode must be an octal string like "
                                f"'0400', got {value!r}")
        if field in ("owner", "group") and not (
                isinstance(value, str)
                and (SAFE_USER_NAME.match(value) or value in (USER_PLACEHOLDER,
                                                              ADMIN_PLACEHOLDER))):
            raise NixfleetError(f"{RULES_FILE}: {where}: {field} must be a user/group name, "
                                f"'{ADMIN_PLACEHOLDER}' or '{USER_PLACEHOLDER}', got {value!r}")
    return dict(raw)


def _groups(fleet: Fleet, keys: dict[str, Recipient]) -> dict[str, tuple[str, ...]]:
    groups = {
        "allUsers": tuple(k for k, r in keys.items() if r.kind == "user"),
        "allHosts": tuple(fleet.hosts),
    }
    for group, members in fleet.groups.items():
        groups.setdefault(group, tuple(members))
    for group in STANDARD_GROUPS:
        groups.setdefault(group, ())
    for name in keys:
        if name in groups:
            raise NixfleetError(f"key {name!r}: name clashes with the group {name!r} "
                                "(secrets.nix names keys and groups alike)")
    return groups


def _expand(reference: str, template: str, keys: dict[str, Recipient],
            groups: dict[str, tuple[str, ...]], fleet: Fleet) -> list[str]:
    members = list(groups[reference]) if reference in groups else [reference]
    for member in members:
        if member in keys:
            continue
        if member in fleet.hosts:
            raise NixfleetError(
                f"host {member}: ssh.hostKey is not set, but {RULES_FILE} gives it {template} "
                "(set it to the host's /etc/ssh/ssh_host_ed25519_key.pub)")
        known = [*groups, *keys]
        hint = difflib.get_close_matches(reference, known, n=1)
        raise NixfleetError(f"{RULES_FILE}: {template}: unknown recipient {reference!r}"
                            + (f" (did you mean {hint[0]!r}?)" if hint else "")
                            + f"; groups: {', '.join(groups)}; keys: {', '.join(keys)}")
    return members


def _rule(template: str, user: str | None, fields: dict[str, Any], references: tuple[str, ...],
          recipients: tuple[Recipient, ...], fleet: Fleet) -> SecretRule:
    name = template.replace(USER_PLACEHOLDER, user) if user else template
    if not SECRET_NAME.match(name) or ".." in name or name.endswith(".age"):
        raise NixfleetError(f"{RULES_FILE}: invalid secret name {name!r} (letters, digits, "
                            "'.', '_', '-'; no '/', '..' or .age)")
    owner, group = fields["owner"], fields["group"]
    if user is None and USER_PLACEHOLDER in (owner, group):
        raise NixfleetError(f"{RULES_FILE}: {template}: '{USER_PLACEHOLDER}' as owner or group "
                            f"needs '{USER_PLACEHOLDER}' in the secret's name")
    if group == ADMIN_PLACEHOLDER:
        raise NixfleetError(f"{RULES_FILE}: {template}: group cannot be '{ADMIN_PLACEHOLDER}'")
    owners: dict[str, str] = {}
    for recipient in recipients:
        host = fleet.hosts.get(recipient.name) if recipient.kind == "host" else None
        # A per-user secret goes only to the hosts where that user exists.
        if host and (user is None or user in {u.name for u in host.users}):
            owners[host.name] = {USER_PLACEHOLDER: user, ADMIN_PLACEHOLDER: host.admin.name}.get(
                owner) or owner
    return SecretRule(
        name=name, references=references, recipients=recipients, owners=owners,
        default_owner={USER_PLACEHOLDER: user, ADMIN_PLACEHOLDER: "root"}.get(owner) or owner,
        group=user if group == USER_PLACEHOLDER and user else group,
        mode=fields["mode"].rjust(4, "0"))


# --- what hosts receive ----------------------------------------------------------------------


def host_secrets(fleet: Fleet, host_name: str, root: Path | None = None) -> list[SecretSpec]:
    """The secrets /run/agenix on `host_name` should hold, with owner, group and mode."""
    if host_name not in fleet.hosts:
        raise NixfleetError(f"unknown host {host_name!r}; hosts: {', '.join(fleet.hosts)}")
    rules = load_rules(fleet, root)
    return [rule.spec(host_name) for rule in rules.secrets.values() if host_name in rule.owners]


# --- generated files -------------------------------------------------------------------------


def secrets_json(rules: Rules) -> str:
    data = {
        name: {"file": rule.file, "owner": rule.owner, "group": rule.group, "mode": rule.mode,
               "hosts": rule.hosts}
        for name, rule in rules.secrets.items()
    }
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def secrets_nix(rules: Rules) -> str:
    for name in [*rules.keys, *rules.groups]:
        if name in NIX_KEYWORDS:
            raise NixfleetError(f"{name!r} is a Nix keyword and cannot name a key or group in "
                                "secrets.nix")
    used = {ref for rule in rules.secrets.values() for ref in rule.references}
    groups = [g for g in rules.groups if g in STANDARD_GROUPS or g in used]
    lines = [
        "# Generated by nixfleet from inventory.py and secrets/rules.py: do not edit.",
        "# agenix's rules file; run agenix from the repository root:",
        "#   RULES=secrets/secrets.nix agenix -e secrets/NAME.age",
        "let",
    ]
    for kind, title in (("user", "users (sshKey)"), ("host", "hosts (ssh.hostKey)")):
        lines.append(f"  # {title}")
        lines += [f'  {name} = "{r.key}";' for name, r in rules.keys.items() if r.kind == kind]
    lines.append("  # groups")
    lines += [f"  {group} = {_nix_list(rules.groups[group])};" for group in groups]
    lines += ["in", "{"]
    for rule in rules.secrets.values():
        lines.append(f'  "{rule.file}".publicKeys = {_public_keys(rule.references, groups)};')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _nix_list(items: tuple[str, ...] | list[str]) -> str:
    return f"[ {' '.join(items)} ]" if items else "[ ]"


def _public_keys(references: tuple[str, ...], groups: list[str]) -> str:
    """allUsers ++ [ razer ]: groups by name, runs of single keys as one list."""
    parts: list[str] = []
    run: list[str] = []
    for reference in references:
        if reference in groups:
            if run:
                parts.append(_nix_list(run))
                run = []
            parts.append(reference)
        else:
            run.append(reference)
    if run:
        parts.append(_nix_list(run))
    return " ++ ".join(parts)


def generated_files(rules: Rules, root: Path) -> dict[Path, str]:
    return {root / SECRETS_NIX: secrets_nix(rules), root / SECRETS_JSON: secrets_json(rules)}
