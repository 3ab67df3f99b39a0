"""`nixfleet import PATH [--write] [--force]`: hosts from a flake repository's
hosts/<name>/variables.nix into inventory.py.

Each host's variables are evaluated by Nix (nixfleet/nix/host-variables.nix), one attribute at a
time, so an attribute that throws or is no data (a function) is skipped and named, and a path
(into the repository) is named and left out. What nixfleet models becomes an inventory entry:
the name (hostName), the hardware class (gpu), the compute stack (acceleration), the user
(username, fullName, email, userGroups; the SSH key from variables.nix, the inventory's user of
that name, or --ssh-key) and the system settings (timezone, locale, keyboard layouts,
environment variables, NFS exports, theme, flake directory). It prints what it would add or
change; --write adds the hosts to inventory.py (validated first, then written atomically); a
host already in inventory.py is changed only with --force, which replaces the keys the import
sets and keeps the others.
"""

from __future__ import annotations

import argparse
import ast
import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nixfleet.commands.options import inventory_path
from nixfleet.errors import InventoryError, NixfleetError
from nixfleet.files import write_atomic
from nixfleet.inventory import Fleet, load_group_data
from nixfleet.model import parse_ssh_public_key
from nixfleet.nixcheck import EXPRESSIONS, NixError, evaluate

VARIABLES = "variables.nix"
HOST_VARIABLES = EXPRESSIONS / "host-variables.nix"
# The original's `gpu` values: a hybrid laptop (Intel + NVIDIA, PRIME) is an nvidia-class host.
GPU_CLASSES = {"amd": "amd", "nvidia": "nvidia", "intel": "intel", "hybrid": "nvidia",
               "intel-nvidia": "nvidia", "nvidia-intel": "nvidia"}
COMPUTE = {"rocm": "rocm", "cuda": "cuda", "none": "none", "": "none"}
CLASS_COMPUTE = {"amd": "rocm", "nvidia": "cuda", "intel": "none"}
WIDTH = 100  # inventory.py's line length (ruff)


# --- reading variables.nix ----------------------------------------------------------------


@dataclass
class Variables:
    """One host's variables as plain data, and what could not be read (`skipped`)."""

    file: Path
    values: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def read_variables(file: Path) -> Variables:
    """Every attribute of `file` that evaluates to data; raise NixError when the file itself
    does not evaluate."""
    read = Variables(file)
    for name in evaluate(HOST_VARIABLES, file=str(file.resolve()), attr=""):
        try:
            value = evaluate(HOST_VARIABLES, file=str(file.resolve()), attr=name)
        except NixError as error:
            read.skipped.append(f"{name} ({error})")
            continue
        value = _without_paths(value, name, read.skipped)
        if value is not _PATH:
            read.values[name] = value
    return read


_PATH = object()


def _without_paths(value: Any, where: str, skipped: list[str]) -> Any:
    """`value` without the paths host-variables.nix marked, each named in `skipped`."""
    if isinstance(value, dict) and set(value) == {"__path"}:
        skipped.append(f"{where} (a path: {value['__path']})")
        return _PATH
    if isinstance(value, dict):
        kept = {k: _without_paths(v, f"{where}.{k}", skipped) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v is not _PATH}
    if isinstance(value, list):
        items = [_without_paths(v, f"{where}[{i}]", skipped) for i, v in enumerate(value)]
        return [v for v in items if v is not _PATH]
    return value


# --- mapping onto the model ---------------------------------------------------------------


class NotImported(Exception):
    """Why a host cannot become an inventory entry (one line)."""


@dataclass(frozen=True)
class KnownUser:
    sshKey: str
    fullName: str
    email: str
    groups: list[str]


def host_entry(variables: dict[str, Any], group_data: dict[str, dict[str, Any]],
               users: dict[str, KnownUser], ssh_key: str | None) -> tuple[dict[str, Any],
                                                                       list[str]]:
    """The inventory entry for one host's variables, and the keys it set by default (for a
    new host only: an existing host keeps its own)."""
    defaulted: list[str] = []
    gpu = _text(variables, "gpu")
    hardware_class = GPU_CLASSES.get(gpu.lower())
    if hardware_class is None:
        raise NotImported(f"gpu {gpu!r} is none of {', '.join(GPU_CLASSES)}" if gpu else
                          "no gpu attribute (amd, nvidia, intel or hybrid)")
    roles = variables.get("roles")
    if not (isinstance(roles, list) and roles):
        roles = ["workstation"]
        defaulted.append("roles")
    entry: dict[str, Any] = {"hardware_class": hardware_class, "roles": roles}
    acceleration = _text(variables, "acceleration")
    compute = COMPUTE.get(acceleration.lower())
    if compute is None:
        raise NotImported(f"acceleration {acceleration!r} is none of rocm, cuda, none")
    if compute != CLASS_COMPUTE[hardware_class]:
        if compute != "none":
            raise NotImported(f"acceleration {acceleration!r} does not fit gpu {gpu!r}")
        entry["graphics"] = {**group_data.get(hardware_class, {}).get("graphics", {}),
                             "compute": "none"}
    entry["users"] = [_user(variables, users, ssh_key)]
    base = group_data.get("all", {}).get("system", {})
    system = _system(variables, base)
    if system != base:
        entry["system"] = system
    return entry, defaulted


def _text(variables: dict[str, Any], *names: str) -> str:
    for name in names:
        if isinstance(variables.get(name), str):
            return str(variables[name])
    return ""


def _strings(value: Any) -> list[str] | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _user(variables: dict[str, Any], users: dict[str, KnownUser],
          ssh_key: str | None) -> dict[str, Any]:
    name = _text(variables, "username", "userName")
    if not name:
        raise NotImported("no username attribute")
    known = users.get(name)
    keys = _strings(variables.get("sshKeys")) or []
    key = _text(variables, "sshKey") or (keys[0] if keys else "") or \
        (known.sshKey if known else "") or (ssh_key or "")
    if not key:
        raise NotImported(f"user {name}: no SSH public key (none in variables.nix, no user "
                          f"{name} in inventory.py; give one with --ssh-key)")
    user: dict[str, Any] = {
        "name": name,
        "fullName": _text(variables, "fullName") or (known.fullName if known else name),
        "email": _text(variables, "email", "gitEmail") or (known.email if known else ""),
        "sshKey": key,
    }
    groups = _strings(variables.get("userGroups")) or _strings(variables.get("groups"))
    if groups is None and known:
        groups = known.groups
    if groups:
        user["groups"] = groups
    return user


def _system(variables: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    system = json.loads(json.dumps(base))  # a copy
    for key, names in (("timezone", ("timezone", "timeZone")),
                       ("locale", ("locale", "defaultLocale")),
                       ("stateVersion", ("stateVersion",))):
        if text := _text(variables, *names):
            system[key] = text
    layouts = _strings(variables.get("keyboardLayouts"))
    if layouts is None and (layout := _text(variables, "keyboardLayout", "kbdLayout")):
        layouts = [part.strip() for part in layout.split(",") if part.strip()]
    if layouts:
        system["keyboardLayouts"] = layouts
    for key, names in (("environment", ("environmentVariables", "environment")),
                       ("theme", ("theme",))):
        for name in names:
            value = variables.get(name)
            if isinstance(value, dict):
                system[key] = {k: v for k, v in value.items() if isinstance(v, str)}
                break
    exports = variables.get("nfsExports")
    if isinstance(exports, str):
        exports = [line.strip() for line in exports.splitlines() if line.strip()]
    if _strings(exports) is not None:
        system["nfsExports"] = exports
    if nameservers := _strings(variables.get("nameservers")):
        system["nameservers"] = nameservers
    paths = variables.get("paths")
    flake_dir = _text(paths, "flakeDir") if isinstance(paths, dict) else ""
    if flake_dir := flake_dir or _text(variables, "flakeDir"):
        system["paths"] = {**system.get("paths", {}), "flakeDir": flake_dir}
    return system


# --- inventory.py -------------------------------------------------------------------------


@dataclass(frozen=True)
class Imported:
    """One host of the repository: its entry, or why there is none."""

    name: str
    source: str
    entry: dict[str, Any] | None
    defaulted: list[str]  # keys set without a value in variables.nix
    skipped: list[str]
    problem: str | None = None


def read_repository(repo: Path, group_data: dict[str, dict[str, Any]],
                    users: dict[str, KnownUser], ssh_key: str | None) -> list[Imported]:
    files = sorted((repo / "hosts").glob(f"*/{VARIABLES}"))
    if not files:
        raise NixfleetError(f"{repo}: no hosts/<name>/{VARIABLES} (is it a flake repository "
                            "with one directory per host?)")
    hosts = []
    for file in files:
        source = str(file.relative_to(repo))
        try:
            variables = read_variables(file)
        except NixError as error:
            hosts.append(Imported(file.parent.name, source, None, [], [],
                                  f"does not evaluate: {error}"))
            continue
        name = _text(variables.values, "hostName") or file.parent.name
        try:
            entry, defaulted = host_entry(variables.values, group_data, users, ssh_key)
        except NotImported as error:
            hosts.append(Imported(name, source, None, [], variables.skipped, str(error)))
            continue
        entry = {**entry, "description": f"imported from {source}"}
        hosts.append(Imported(name, source, entry, [*defaulted, "description"],
                              variables.skipped))
    return hosts


def _hosts_list(tree: ast.Module) -> ast.List:
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id == "_HOSTS" and isinstance(value, ast.List):
            return value
    raise NixfleetError("inventory.py has no `_HOSTS = [...]` list of (name, {...}) entries to "
                        "add hosts to")


def edit_inventory(text: str, add: dict[str, dict[str, Any]],
                   replace: dict[str, dict[str, Any]]) -> str:
    """inventory.py's text with `add` appended to _HOSTS and the `replace` entries rewritten."""
    hosts = _hosts_list(ast.parse(text))
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))

    def at(line: int, column: int) -> int:
        """The text offset of ast's (line, UTF-8 byte column)."""
        return offsets[line - 1] + len(lines[line - 1].encode()[:column].decode())

    edits: list[tuple[int, int, str]] = []
    for element in hosts.elts:
        if isinstance(element, ast.Tuple) and element.elts \
                and isinstance(element.elts[0], ast.Constant) and element.elts[0].value in replace:
            name = element.elts[0].value
            edits.append((at(element.lineno, element.col_offset),
                          at(element.end_lineno or element.lineno, element.end_col_offset or 0),
                          render_entry(name, replace[name])))
    missing = set(replace) - {e.elts[0].value for e in hosts.elts if isinstance(e, ast.Tuple)
                              and e.elts and isinstance(e.elts[0], ast.Constant)}
    if missing:
        raise NixfleetError(f"cannot replace {', '.join(sorted(missing))}: its inventory.py "
                            "entry is not a literal (\"name\", {...}) in _HOSTS")
    if add:
        close = at(hosts.end_lineno or hosts.lineno, (hosts.end_col_offset or 1) - 1)
        line_start = text.rfind("\n", 0, close) + 1
        new = "".join(f"    {render_entry(name, entry)},\n" for name, entry in add.items())
        if text[line_start:close].strip():
            edits.append((close, close, "\n" + new))
        else:
            edits.append((line_start, line_start, new))
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def render_entry(name: str, entry: dict[str, Any]) -> str:
    """`("name", {...})` as inventory.py writes a host, lines within WIDTH where they can be."""
    lead = f"({json.dumps(name)}, "
    return f"{lead}{_literal(entry, 4, len(lead))})"


def _literal(value: Any, indent: int, lead: int) -> str:
    """`value` as Python at `indent`, its first line after `lead` characters."""
    one = _one_line(value)
    if indent + lead + len(one) + 1 <= WIDTH:
        return one
    inner = " " * (indent + 4)
    if isinstance(value, str) and " " in value:  # an SSH key: two strings, as inventory.py has
        first, rest = value.split(" ", 1)
        return f"{json.dumps(first + ' ')}\n{inner}{json.dumps(rest, ensure_ascii=False)}"
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {_literal(v, indent + 4, len(json.dumps(k)) + 2)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + ",\n" + " " * indent + "}"
    if isinstance(value, list) and value:
        items = [f"{inner}{_literal(v, indent + 4, 0)}" for v in value]
        return "[\n" + ",\n".join(items) + ",\n" + " " * indent + "]"
    return one


def _one_line(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {_one_line(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_one_line(v) for v in value) + "]"
    if isinstance(value, bool) or value is None:
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def differences(old: Any, new: Any, where: str = "") -> list[str]:
    """`where: old -> new` for each value `new` sets differently (dicts key by key)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [line for key in new
                for line in differences(old.get(key), new[key], f"{where}.{key}".lstrip("."))]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [line for i, (was, wanted) in enumerate(zip(old, new, strict=True))
                for line in differences(was, wanted, f"{where}[{i}]")]
    return [] if old == new else [f"{where}: {_one_line(old)} -> {_one_line(new)}"]


def check_inventory(text: str, path: Path) -> Fleet:
    """Run inventory.py's new text as pyinfra would (beside the real file, for group_data)."""
    values: dict[str, Any] = {"__file__": str(path), "__name__": "<nixfleet import>"}
    try:
        exec(compile(text, str(path), "exec"), values)  # the user's own inventory.py
    except InventoryError as error:
        raise NixfleetError(f"the imported hosts do not validate, nothing written: {error}"
                            ) from None
    fleet = values.get("fleet")
    if not isinstance(fleet, Fleet):
        raise NixfleetError(f"{path}: defines no `fleet`")
    return fleet


# --- the command --------------------------------------------------------------------------


def cmd_import(args: argparse.Namespace) -> int:
    repo = Path(args.path)
    if not repo.is_dir():
        raise NixfleetError(f"{repo}: not a directory (the flake repository with hosts/<name>/"
                            f"{VARIABLES})")
    if args.ssh_key:
        try:
            parse_ssh_public_key(args.ssh_key)
        except ValueError as error:
            raise NixfleetError(f"--ssh-key: {error}") from None
    path = inventory_path(args)
    text = path.read_text()
    existing = dict(runpy.run_path(str(path)).get("_HOSTS") or [])
    users = {u["name"]: KnownUser(u["sshKey"], u.get("fullName", u["name"]),
                                  u.get("email", ""), list(u.get("groups", [])))
             for entry in existing.values() for u in entry.get("users", [])}
    group_data = load_group_data(path.parent / "group_data")
    base_system = group_data.get("all", {}).get("system", {})
    hosts = read_repository(repo, group_data, users, args.ssh_key)
    add: dict[str, dict[str, Any]] = {}
    replace: dict[str, dict[str, Any]] = {}
    refused: list[str] = []
    not_imported = False
    for host in hosts:
        if host.skipped:
            skipped = "; ".join(host.skipped).replace(f"{repo.resolve()}/", "")
            print(f"{host.source}: skipped {skipped}")
        if host.entry is None:
            print(f"{host.name}: not imported: {host.problem}")
            not_imported = True
            continue
        if host.name not in existing:
            add[host.name] = host.entry
            print(f"add {render_entry(host.name, host.entry)}")
            continue
        entry = {k: v for k, v in host.entry.items() if k not in host.defaulted}
        # A host without its own system block has group_data/all.py's.
        changes = differences({"system": base_system, **existing[host.name]}, entry)
        if not changes:
            print(f"unchanged {host.name}")
        elif args.force:
            replace[host.name] = {**existing[host.name], **entry}
            print(f"change {host.name}: {'; '.join(changes)}")
        else:
            print(f"{host.name}: in {path.name} already, differs: {'; '.join(changes)}")
            refused.append(host.name)
    done = [f"add {', '.join(add)}"] if add else []
    done += [f"replace {', '.join(replace)}"] if replace else []
    if refused:
        print(f"{path.name}: nothing written: {', '.join(refused)} "
              f"{'is' if len(refused) == 1 else 'are'} there already (--force replaces the "
              "imported keys)")
    elif not done:
        print(f"{path.name}: nothing to change")
    else:
        new_text = edit_inventory(text, add, replace)
        check_inventory(new_text, path)
        if args.write:
            write_atomic(path, new_text, mode=path.stat().st_mode & 0o777)
            print(f"{path.name}: {'; '.join(done)}: written")
        else:
            print(f"{path.name}: would {'; '.join(done)} (--write writes it)")
    return 1 if refused or not_imported else 0


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "import", help="hosts from a flake repository's hosts/<name>/variables.nix into "
        "inventory.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", metavar="PATH", help="the flake repository")
    parser.add_argument("--write", action="store_true",
                        help="add the hosts to inventory.py (default: print what would change)")
    parser.add_argument("--force", action="store_true",
                        help="also change hosts inventory.py has already")
    parser.add_argument("--ssh-key", metavar="KEY",
                        help="SSH public key for imported users that have none in variables.nix "
                        "or inventory.py")
    parser.set_defaults(func=cmd_import)
