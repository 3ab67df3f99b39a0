"""Checks of the fleet's NixOS flake (nix/) that need Nix but not nixpkgs.

nixpkgs cannot be fetched everywhere these checks run, so nothing here builds or evaluates a
NixOS system (that is `nix flake check ./nix` on a machine with nixpkgs, see nix/README.md).
What can be checked with nix-instantiate alone:

- every .nix file parses;
- the host data, read through the flake's own expressions (nix/lib/fleet.nix, which mkHost
  reads hosts with, and nix/lib/host-module.nix, which turns them into option values), equals
  the inventory model's ``nix_data()``;
- every feature flag of the model has a module option of the same name and no module declares
  a feature option the model lacks. The options are read by *evaluating* each module's
  ``options`` with a stub ``lib`` (mkOption, mkEnableOption, ... that only record "an option is
  here"), not by matching text, so options built by helpers, ``//`` or nested attribute sets
  are seen exactly as the module system would see them. Module bodies (``config``) are never
  forced, so modules need not be evaluable without nixpkgs;
- every file under nix/modules is imported from nix/modules/default.nix (its ``imports`` come
  from the same evaluation as its options: one nix-instantiate per module file), and the flake
  gives every host that file; the flake's host list is the hosts directory;
- no host name appears inside nix/modules;
- every user of every host has a home file, and nix/secrets.json has the agreed shape.

The Nix these checks evaluate is in nixfleet/nix/ (package data). Each check returns a list of
problems, one line each (``file:line:col: message`` where Nix names a location); an empty list
means it passed.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from nixfleet.errors import NixfleetError
from nixfleet.model import Features, Host

FEATURES_PREFIX = "nixfleet.features."
SECRET_KEYS = frozenset({"file", "owner", "group", "mode", "hosts"})
SECRET_MODE = re.compile(r"^0[0-7]{3}$")
SKIPPED_DIRS = frozenset({".git", ".venv", "result", "node_modules", ".direnv", "__pycache__"})

# nix-instantiate's location of an error: "at /path/file.nix:12:5:".
_LOCATION = re.compile(r"^\s*at (?P<file>/[^:]+):(?P<line>\d+):(?P<col>\d+):?\s*$")

# The Nix that the checks evaluate (package data).
EXPRESSIONS = Path(__file__).resolve().parent / "nix"


class NixError(NixfleetError):
    """nix-instantiate failed; the message is Nix's first error line with its location."""


def _nix_instantiate(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["nix-instantiate", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "NO_COLOR": "1"},
        )
    except FileNotFoundError:
        raise NixfleetError("nix-instantiate not found: the flake checks need Nix (any 2.x) "
                            "on PATH") from None
    except subprocess.TimeoutExpired:
        raise NixfleetError(f"nix-instantiate {' '.join(args[:2])} took over 120 s") from None


def nix_error_message(stderr: str, relative_to: Path | None = None) -> str:
    """One line from nix-instantiate's stderr: ``file:line:col: message`` (or just the message)."""
    lines = [line for line in stderr.splitlines() if not line.startswith("warning:")]
    message = next((line.removeprefix("error:").strip() for line in lines
                    if line.startswith("error:")), "")
    if not message:
        message = next((line.strip() for line in lines if line.strip()), "nix-instantiate failed")
    for line in lines:
        match = _LOCATION.match(line)
        if match:
            return f"{_display(Path(match['file']), relative_to)}:{match['line']}:" \
                   f"{match['col']}: {message}"
    return message


def evaluate(source: Path | str, **args: str) -> Any:
    """Evaluate Nix strictly to JSON, without a store or nixpkgs.

    + source: a .nix file, or Nix code; with ``args`` it must be a function taking them
      (``{ a }: ...``)
    + args: string arguments (``--argstr``)

    Raise NixError with Nix's message when evaluation fails.
    """
    argv = ["--eval", "--strict", "--json", "--store", "dummy://"]
    argv += [str(source)] if isinstance(source, Path) else ["-E", source]
    for name, value in args.items():
        argv += ["--argstr", name, value]
    result = _nix_instantiate(argv)
    if result.returncode != 0:
        raise NixError(nix_error_message(result.stderr))
    return json.loads(result.stdout)


def _display(path: Path, relative_to: Path | None = None) -> str:
    """``path`` relative to ``relative_to`` (default: the working directory) when inside it."""
    try:
        return str(path.resolve().relative_to((relative_to or Path.cwd()).resolve()))
    except ValueError:
        return str(path)


def nix_files(paths: Iterable[Path]) -> list[Path]:
    """The .nix files among ``paths`` and under the directories among them, sorted."""
    found: set[Path] = set()
    for path in paths:
        if path.is_file():
            found.add(path)
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS]
            found.update(Path(dirpath) / f for f in filenames if f.endswith(".nix"))
    return sorted(found)


# --- checks --------------------------------------------------------------------------------


def check_syntax(paths: Iterable[Path], relative_to: Path | None = None) -> list[str]:
    """Every file parses (``nix-instantiate --parse``); problems are ``file:line:col: message``."""
    problems = []
    for path in paths:
        result = _nix_instantiate(["--parse", "--store", "dummy://", str(path)])
        if result.returncode != 0:
            message = nix_error_message(result.stderr, relative_to)
            if not message.startswith(_display(path, relative_to)):
                message = f"{_display(path, relative_to)}: {message}"
            problems.append(message)
    return problems


def check_host_data(nix_dir: Path, hosts: Mapping[str, Host]) -> list[str]:
    """The flake reads every host exactly as the inventory model describes it.

    The host data goes through nix/lib/fleet.nix (as mkHost reads it) and nix/lib/host-module.nix
    (features and users as the modules receive them) and is compared with ``Host.nix_data()``.
    """
    try:
        seen = evaluate(EXPRESSIONS / "describe-hosts.nix", nixDir=str(nix_dir.resolve()))
    except NixError as error:
        return [f"host data does not evaluate: {error}"]
    problems = [f"host {name}: in the inventory but not in nix/hosts (run `nixfleet generate`)"
                for name in hosts if name not in seen]
    problems += [f"nix/hosts/{name}.json: no such host in the inventory (run `nixfleet generate`)"
                 for name in seen if name not in hosts]
    for name, host in hosts.items():
        if name not in seen:
            continue
        wanted = host.nix_data()
        flake = seen[name]
        problems += _differences(f"nix/hosts/{name}.json", flake["data"], wanted)
        options = flake["module"]["nixfleet"]
        problems += _differences(f"host {name}: nixfleet.features", options["features"],
                                 wanted["features"])
        problems += _differences(f"host {name}: nixfleet.users", options["users"],
                                 wanted["users"])
        if flake["hostUsers"] != [user.name for user in host.users]:
            problems.append(f"host {name}: hostUsers {flake['hostUsers']} != inventory users")
    return problems


def _differences(where: str, seen: Any, wanted: Any, path: str = "") -> list[str]:
    if isinstance(seen, dict) and isinstance(wanted, dict):
        problems = []
        for key in sorted(set(seen) | set(wanted)):
            sub = f"{path}.{key}" if path else key
            if key not in seen:
                problems.append(f"{where}: {sub}: missing (inventory has {wanted[key]!r})")
            elif key not in wanted:
                problems.append(f"{where}: {sub}: not in the inventory model")
            else:
                problems += _differences(where, seen[key], wanted[key], sub)
        return problems
    if seen != wanted or type(seen) is not type(wanted):
        return [f"{where}: {path or 'value'}: flake reads {seen!r}, inventory says {wanted!r}"]
    return []


def feature_flag_paths(model: type[BaseModel] = Features, prefix: str = "") -> list[str]:
    """Dotted paths of every leaf field of the feature model (``ai.providers.timeout``, ...)."""
    paths = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths += feature_flag_paths(annotation, f"{prefix}{name}.")
        else:
            paths.append(f"{prefix}{name}")
    return paths


def module_files(modules_dir: Path) -> list[Path]:
    return nix_files([modules_dir])


@dataclass(frozen=True)
class Module:
    """What the checks need of one module file: the options it declares (dotted paths) and
    what it imports (paths, or the names of modules that are no file here)."""

    options: tuple[str, ...]
    imports: tuple[str, ...]


@dataclass(frozen=True)
class Modules:
    """The module files under ``directory``, each evaluated once with the stub lib; ``problems``
    has a line for each file that would not evaluate (it is missing from ``read``)."""

    directory: Path
    files: tuple[Path, ...]
    read: Mapping[Path, Module]
    problems: tuple[str, ...]


def read_modules(modules_dir: Path) -> Modules:
    """Every module file under ``modules_dir`` evaluated once (nixfleet/nix/describe-module.nix):
    its ``options`` and ``imports``, never its ``config``."""
    files = module_files(modules_dir)
    read: dict[Path, Module] = {}
    problems = []
    for path in files:
        try:
            described = evaluate(EXPRESSIONS / "describe-module.nix", file=str(path.resolve()))
        except NixError as error:
            problems.append(f"{_display(path)}: cannot read the module's options and imports: "
                            f"{error}")
            continue
        read[path] = Module(tuple(described["options"]), tuple(described["imports"]))
    return Modules(modules_dir, tuple(files), read, tuple(problems))


def check_options(modules: Modules, model: type[BaseModel] = Features) -> list[str]:
    """Every feature flag of ``model`` is a module option of the same name, and vice versa."""
    problems = []
    declared: dict[str, list[Path]] = {}
    for path, module in modules.read.items():
        for option in module.options:
            declared.setdefault(option, []).append(path)
    wanted = [FEATURES_PREFIX + flag for flag in feature_flag_paths(model)]
    for option in wanted:
        if option not in declared:
            problems.append(f"features.{option.removeprefix(FEATURES_PREFIX)}: no module in "
                            f"{_display(modules.directory)} declares option {option}")
    for option, paths in sorted(declared.items()):
        if len(paths) > 1:
            problems.append(f"option {option} is declared by {len(paths)} modules: "
                            + ", ".join(_display(p) for p in paths))
        if option.startswith(FEATURES_PREFIX) and option not in wanted:
            hint = difflib.get_close_matches(option, wanted, n=1)
            problems.append(f"{_display(paths[0])}: option {option} is not a feature flag of the "
                            "inventory "
                            "model" + (f" (did you mean {hint[0]}?)" if hint else ""))
    return problems


def check_imports(modules: Modules) -> list[str]:
    """Every module file is imported from modules/default.nix, and every import exists."""
    entry = modules.directory / "default.nix"
    if not entry.is_file():
        return [f"{_display(entry)}: missing (it imports every module)"]
    by_path = {path.resolve(): module for path, module in modules.read.items()}
    problems = []
    reached: set[Path] = set()
    pending = [entry.resolve()]
    while pending:
        current = pending.pop()
        if current in reached:
            continue
        reached.add(current)
        module = by_path.get(current)
        for imported in module.imports if module else ():
            if not imported.startswith("/"):
                continue  # an inline module or a module from another flake
            target = Path(imported)
            target = target / "default.nix" if target.is_dir() else target
            if not target.is_file():
                problems.append(f"{_display(current)}: imports {_display(Path(imported))}, "
                                "which does not exist")
                continue
            pending.append(target.resolve())
    for path in modules.files:
        if path.resolve() not in reached:
            problems.append(f"{_display(path)}: not imported by {_display(entry)} "
                            "(directly or through another module)")
    return problems


def check_no_host_names(paths: Iterable[Path], host_names: Iterable[str]) -> list[str]:
    """No module names a host: modules get everything host-specific from the host data."""
    names = sorted(host_names, key=len, reverse=True)
    if not names:
        return []
    pattern = re.compile(r"(?<![A-Za-z0-9_-])(" + "|".join(map(re.escape, names))
                         + r")(?![A-Za-z0-9_-])")
    problems = []
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for match in pattern.finditer(line):
                problems.append(f"{_display(path)}:{number}:{match.start() + 1}: host name "
                                f"{match.group(1)!r} inside a module (use host data instead)")
    return problems


def check_home_files(nix_dir: Path, hosts: Mapping[str, Host]) -> list[str]:
    """Every user of every host has nix/users/<user>/<host>_home.nix."""
    problems = []
    for name, host in hosts.items():
        for user in host.users:
            home = nix_dir / "users" / user.name / f"{name}_home.nix"
            if not home.is_file():
                problems.append(f"{_display(home)}: missing (home-manager file of {user.name} "
                                f"on {name})")
    return problems


def check_flake(nix_dir: Path, hosts: Mapping[str, Host]) -> list[str]:
    """The flake has a nixosConfiguration per host file, each built with nix/modules and the
    home files of the host's users."""
    flake = nix_dir / "flake.nix"
    try:
        systems = evaluate(EXPRESSIONS / "describe-flake.nix", nixDir=str(nix_dir.resolve()))
    except NixError as error:
        return [f"{_display(flake)}: outputs do not evaluate with stub inputs: {error}"]
    problems = []
    wanted = sorted(hosts)
    if sorted(systems) != wanted:
        problems.append(f"{_display(flake)}: nixosConfigurations are {sorted(systems)}, "
                        f"hosts are {wanted}")
    modules = str((nix_dir / "modules").resolve())
    for name, system in sorted(systems.items()):
        if modules not in system["modules"] and f"{modules}/default.nix" not in system["modules"]:
            problems.append(f"{_display(flake)}: nixosConfigurations.{name} is not built "
                            f"with {_display(Path(modules))}")
        if name not in hosts:
            continue
        for user in hosts[name].users:
            home = str((nix_dir / "users" / user.name / f"{name}_home.nix").resolve())
            if home not in system["homes"].get(user.name, []):
                problems.append(f"{_display(flake)}: nixosConfigurations.{name} does not give "
                                f"{user.name} {_display(Path(home))}")
    return problems


def check_secrets_data(nix_dir: Path, host_names: Iterable[str]) -> list[str]:
    """nix/secrets.json: {"<name>": {"file": "secrets/<name>.age", "owner", "group", "mode",
    "hosts"}} with known hosts and an octal mode."""
    path = nix_dir / "secrets.json"
    shown = _display(path)
    try:
        secrets = json.loads(path.read_text())
    except FileNotFoundError:
        return [f"{shown}: missing (the secrets tooling writes it from the rules)"]
    except json.JSONDecodeError as error:
        return [f"{shown}:{error.lineno}:{error.colno}: not JSON: {error.msg}"]
    if not isinstance(secrets, dict):
        return [f"{shown}: must be an object of secrets by name"]
    known = set(host_names)
    problems = []
    for name, secret in sorted(secrets.items()):
        where = f"{shown}: {name}"
        if not isinstance(secret, dict):
            problems.append(f"{where}: must be an object")
            continue
        if set(secret) != SECRET_KEYS:
            missing, extra = SECRET_KEYS - set(secret), set(secret) - SECRET_KEYS
            problems.append(f"{where}: keys must be {sorted(SECRET_KEYS)}"
                            + (f"; missing {sorted(missing)}" if missing else "")
                            + (f"; unknown {sorted(extra)}" if extra else ""))
            continue
        if secret["file"] != f"secrets/{name}.age":
            problems.append(f"{where}: file must be secrets/{name}.age, not {secret['file']!r}")
        for key in ("owner", "group"):
            if not isinstance(secret[key], str) or not secret[key]:
                problems.append(f"{where}: {key} must be a user/group name")
        if not isinstance(secret["mode"], str) or not SECRET_MODE.match(secret["mode"]):
            problems.append(f"{where}: mode must be an octal string like \"0400\", "
                            f"not {secret['mode']!r}")
        hosts = secret["hosts"]
        if not isinstance(hosts, list) or not hosts:
            problems.append(f"{where}: hosts must be a non-empty list of host names")
        else:
            unknown = [h for h in hosts if h not in known]
            if unknown:
                problems.append(f"{where}: unknown hosts {unknown}")
    return problems


def check_all(nix_dir: Path, hosts: Mapping[str, Host]) -> list[str]:
    """Every check above, on the flake in ``nix_dir`` against the inventory's ``hosts``."""
    root = nix_dir.parent
    files = nix_files([nix_dir])
    problems = check_syntax(files, relative_to=root)
    if problems:
        return problems  # the other checks would only repeat the parse errors
    problems += check_host_data(nix_dir, hosts)
    modules = read_modules(nix_dir / "modules")
    problems += modules.problems  # once, though both checks below read the modules
    problems += check_options(modules)
    problems += check_imports(modules)
    problems += check_no_host_names(modules.files, hosts)
    problems += check_home_files(nix_dir, hosts)
    problems += check_flake(nix_dir, hosts)
    problems += check_secrets_data(nix_dir, hosts)
    return problems
