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
- every file under nix/modules is imported from nix/modules/default.nix, and the flake gives
  every host that file; the flake's host list is the hosts directory;
- no host name appears inside nix/modules;
- every user of every host has a home file, and nix/secrets.json has the agreed shape.

Each check returns a list of problems, one line each (``file:line:col: message`` where Nix
names a location); an empty list means it passed.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
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

# A lib that only records where options are: enough to evaluate a module's `options` (and its
# `imports`) without nixpkgs. Functions a module's options might call are real; mkIf & co. only
# appear in `config`, which is never forced.
_STUB_MODULE_ARGS = r"""
let
  option = attrs: attrs // { _type = "option"; };
  type = name: { _type = "type"; inherit name; };
  typeFn = name: arg: type name;
  lib = builtins // rec {
    mkOption = option;
    mkEnableOption = description: option { inherit description; default = false; };
    mkPackageOption = pkgs: name: extra: option { description = "package ${toString name}"; };
    literalExpression = text: { _type = "literalExpression"; inherit text; };
    literalMD = text: { _type = "literalMD"; inherit text; };
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    mkMerge = contents: { _type = "merge"; inherit contents; };
    mkDefault = value: value;
    mkForce = value: value;
    genAttrs = names: f: builtins.listToAttrs (map (name: { inherit name; value = f name; }) names);
    optional = cond: value: if cond then [ value ] else [ ];
    optionals = cond: values: if cond then values else [ ];
    optionalAttrs = cond: attrs: if cond then attrs else { };
    mapAttrsToList = f: attrs: map (name: f name attrs.${name}) (builtins.attrNames attrs);
    importJSON = path: builtins.fromJSON (builtins.readFile path);
    types = {
      ints = {
        positive = type "positive";
        unsigned = type "unsigned";
        between = low: high: type "between";
      };
      submodule = typeFn "submodule";
      listOf = typeFn "listOf";
      attrsOf = typeFn "attrsOf";
      lazyAttrsOf = typeFn "lazyAttrsOf";
      nullOr = typeFn "nullOr";
      enum = typeFn "enum";
      strMatching = typeFn "strMatching";
      either = a: b: type "either";
      oneOf = typeFn "oneOf";
    } // builtins.listToAttrs (map (name: { inherit name; value = type name; }) [
      "anything" "attrs" "bool" "float" "int" "lines" "package" "path" "port" "raw" "str"
      "string" "unspecified"
    ]);
  };
in
{ inherit lib; config = { }; options = { }; pkgs = { }; modulesPath = "/modules"; }
"""

_DESCRIBE_MODULE = r"""
{ file }:
let
  args = @STUB_MODULE_ARGS@;
  raw = import (/. + file);
  module = if builtins.isFunction raw then raw args else raw;
  optionPaths = prefix: value:
    if builtins.isAttrs value && (value._type or null) == "option" then
      [ (builtins.concatStringsSep "." prefix) ]
    else if builtins.isAttrs value then
      builtins.concatMap (name: optionPaths (prefix ++ [ name ]) value.${name})
        (builtins.attrNames value)
    else
      [ ];
  describe = m:
    if builtins.isPath m then toString m
    else if builtins.isString m then m
    else "<inline module>";
in
{
  options = optionPaths [ ] (module.options or { });
  imports = map describe (module.imports or [ ]);
}
""".replace("@STUB_MODULE_ARGS@", _STUB_MODULE_ARGS)

# The flake's outputs with stub inputs: nixosSystem hands back the modules it was given, and
# each host's home-manager users show which home files mkHost gave them.
_DESCRIBE_FLAKE = r"""
{ nixDir }:
let
  flake = import (/. + nixDir + "/flake.nix");
  describe = m:
    if builtins.isPath m then toString m
    else if builtins.isString m then m
    else "<inline module>";
  inputs = {
    self = outputs;
    nixpkgs = {
      lib.nixosSystem = args: { _nixosSystem = args; };
      legacyPackages = { };
    };
    home-manager.nixosModules.home-manager = "<home-manager>";
    agenix.nixosModules.default = "<agenix>";
  };
  outputs = flake.outputs inputs;
  homes = modules: builtins.foldl' (a: b: a // b) { } (map
    (m: builtins.mapAttrs (user: home: map describe home.imports) m.home-manager.users)
    (builtins.filter (m: builtins.isAttrs m && m ? home-manager) modules));
in
builtins.mapAttrs (name: system: {
  modules = map describe system._nixosSystem.modules;
  homes = homes system._nixosSystem.modules;
}) outputs.nixosConfigurations
"""

# A host as the flake reads it (lib/fleet.nix) and as lib/host-module.nix turns it into option
# values (with an empty secrets table: secrets have their own check).
_DESCRIBE_HOSTS = r"""
{ nixDir }:
let
  dir = /. + nixDir;
  fleet = import (dir + "/lib/fleet.nix") { hostsDir = dir + "/hosts"; };
  hostModule = name: import (dir + "/lib/host-module.nix") {
    data = fleet.hosts.${name};
    inherit fleet;
    secrets = { };
    secretsRoot = "/";
    binaryCachePublicKey = "cache-1:key";
  };
in
builtins.listToAttrs (map (name: {
  inherit name;
  value = {
    data = fleet.hosts.${name};
    hostUsers = fleet.hostUsers name;
    module = hostModule name;
  };
}) fleet.names)
"""


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


def evaluate(expression: str, **args: str) -> Any:
    """Evaluate a Nix expression strictly to JSON, without a store or nixpkgs.

    + expression: Nix code; with ``args`` it must be a function taking them (``{ a }: ...``)
    + args: string arguments (``--argstr``)

    Raise NixError with Nix's message when evaluation fails.
    """
    argv = ["--eval", "--strict", "--json", "--store", "dummy://", "-E", expression]
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
        seen = evaluate(_DESCRIBE_HOSTS, nixDir=str(nix_dir.resolve()))
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


def describe_modules(paths: Iterable[Path]) -> tuple[dict[Path, dict[str, list[str]]], list[str]]:
    """Options and imports of each module file (stub-evaluated), and the files that failed."""
    described: dict[Path, dict[str, list[str]]] = {}
    problems = []
    for path in paths:
        try:
            described[path] = evaluate(_DESCRIBE_MODULE, file=str(path.resolve()))
        except NixError as error:
            problems.append(f"{_display(path)}: cannot read the module's options and imports: "
                            f"{error}")
    return described, problems


def check_options(modules_dir: Path, model: type[BaseModel] = Features) -> list[str]:
    """Every feature flag of ``model`` is a module option of the same name, and vice versa."""
    described, problems = describe_modules(module_files(modules_dir))
    declared: dict[str, list[Path]] = {}
    for path, module in described.items():
        for option in module["options"]:
            declared.setdefault(option, []).append(path)
    wanted = [FEATURES_PREFIX + flag for flag in feature_flag_paths(model)]
    for option in wanted:
        if option not in declared:
            problems.append(f"features.{option.removeprefix(FEATURES_PREFIX)}: no module in "
                            f"{_display(modules_dir)} declares option {option}")
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


def check_imports(modules_dir: Path) -> list[str]:
    """Every module file is imported from modules/default.nix, and every import exists."""
    entry = modules_dir / "default.nix"
    if not entry.is_file():
        return [f"{_display(entry)}: missing (it imports every module)"]
    files = module_files(modules_dir)
    described, problems = describe_modules(files)
    by_path = {path.resolve(): module for path, module in described.items()}
    reached: set[Path] = set()
    pending = [entry.resolve()]
    while pending:
        current = pending.pop()
        if current in reached:
            continue
        reached.add(current)
        for imported in by_path.get(current, {}).get("imports", []):
            if not imported.startswith("/"):
                continue  # an inline module or a module from another flake
            target = Path(imported)
            target = target / "default.nix" if target.is_dir() else target
            if not target.is_file():
                problems.append(f"{_display(current)}: imports {_display(Path(imported))}, "
                                "which does not exist")
                continue
            pending.append(target.resolve())
    for path in files:
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
        systems = evaluate(_DESCRIBE_FLAKE, nixDir=str(nix_dir.resolve()))
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
    modules_dir = nix_dir / "modules"
    files = nix_files([nix_dir])
    problems = check_syntax(files, relative_to=root)
    if problems:
        return problems  # the other checks would only repeat the parse errors
    problems += check_host_data(nix_dir, hosts)
    problems += check_options(modules_dir)
    problems += check_imports(modules_dir)
    problems += check_no_host_names(module_files(modules_dir), hosts)
    problems += check_home_files(nix_dir, hosts)
    problems += check_flake(nix_dir, hosts)
    problems += check_secrets_data(nix_dir, hosts)
    return problems
