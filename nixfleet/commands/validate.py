"""`nixfleet validate [--quick]`: every check of the configuration that needs no host, as one
table of steps with their result and time; exit 1 when any step failed.

    inventory    the inventory model loads (one line naming host and field otherwise)
    generated    the committed generated files are what the inventory gives (nixfleet generate)
    nix-syntax   every .nix file of the repository parses (file:line:col)
    check-nix    the flake's checks without nixpkgs (nixfleet check-nix)
    secrets      secrets/*.age against the rules: recipients, damaged or unknown files; a
                 secret without a file yet is a warning (the hosts' builds need it)
    plaintext    no plaintext in secrets/, no private key in the repository
    monitoring   promtool and amtool on nix/monitoring/ (not with --quick)
    flake-check  `nix flake check --no-build` (not with --quick); where the flake's inputs
                 cannot be fetched it is skipped with the reason, not failed

The steps after `inventory` run in parallel. The original's `validate` also ran its "feature
and security validation": here that is the model (inventory), check-nix (every feature flag is
a module option) and the secrets steps.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from nixfleet import nixcheck, render, steps
from nixfleet.commands.options import inventory_path
from nixfleet.errors import NixfleetError
from nixfleet.flake_inputs import CheckState, flake_check
from nixfleet.inventory import Fleet, load_inventory_file
from nixfleet.steps import Outcome, Status, Step

QUICK = ("inventory", "generated", "nix-syntax", "check-nix", "boot", "secrets", "builders",
         "plaintext")
FULL = (*QUICK, "monitoring", "flake-check")


class Validation:
    """The steps of one validation of the repository holding `inventory`."""

    def __init__(self, inventory: Path) -> None:
        self.inventory = inventory
        self.root = inventory.parent
        self._fleet: Fleet | None = None

    @property
    def fleet(self) -> Fleet:
        if self._fleet is None:  # only steps that need "inventory" ask, after it passed
            raise NixfleetError("the inventory did not load")
        return self._fleet

    def steps(self, names: tuple[str, ...]) -> list[Step]:
        after = ("inventory",)
        table = {
            "inventory": Step("inventory", self.check_inventory, "the inventory model"),
            "generated": Step("generated", self.check_generated, "generated files current",
                              after),
            "nix-syntax": Step("nix-syntax", self.check_syntax, "every .nix file parses"),
            "check-nix": Step("check-nix", self.check_nix, "flake checks without nixpkgs",
                              after),
            "boot": Step("boot", self.check_boot, "boot limits fit the boot partitions", after),
            "secrets": Step("secrets", self.check_secrets, "secrets against the rules", after),
            "builders": Step("builders", self.check_builders,
                             "each builder can sign and serve what it builds", after),
            "plaintext": Step("plaintext", self.check_plaintext, "no plaintext secrets"),
            "monitoring": Step("monitoring", self.check_monitoring, "promtool and amtool"),
            "flake-check": Step("flake-check", self.check_flake, "nix flake check --no-build"),
        }
        return [table[name] for name in names]

    def check_inventory(self) -> Outcome:
        self._fleet = load_inventory_file(self.inventory)
        return Outcome(Status.PASSED, f"{len(self._fleet.hosts)} hosts, "
                       f"{len(self._fleet.groups)} groups")

    def check_generated(self) -> Outcome:
        stale = render.stale_files(self.fleet, self.root)
        return Outcome.of([f"{p.relative_to(self.root)}: stale (run `nixfleet generate`)"
                           for p in stale], "every generated file is current",
                          f"{len(stale)} stale: {', '.join(p.name for p in stale)}")

    def check_syntax(self) -> Outcome:
        files = nixcheck.nix_files([self.root])
        problems = nixcheck.check_syntax(files, relative_to=self.root)
        return Outcome.of(problems, f"{len(files)} files parse",
                          f"{len(problems)} of {len(files)} files do not parse")

    def check_nix(self) -> Outcome:
        nix_dir = self.root / "nix"
        if not (nix_dir / "flake.nix").is_file():
            raise NixfleetError(f"no flake at {nix_dir / 'flake.nix'}")
        return Outcome.of(nixcheck.check_all(nix_dir, self.fleet.hosts),
                          "nix/ agrees with the inventory")

    def check_boot(self) -> Outcome:
        from nixfleet.preflight import esp_warning

        hosts = self.fleet.hosts
        warnings = [w for name, host in hosts.items() if (w := esp_warning(name, host.boot))]
        unknown = [n for n, h in hosts.items()
                   if h.boot.espSize is None or h.boot.entrySize is None]
        checked = len(hosts) - len(unknown)
        summary = (f"{checked} of {len(hosts)} hosts checked"
                   + (f"; no boot.espSize/entrySize for {', '.join(unknown)} (each deploy's "
                      "pre-flight checks them)" if unknown else ""))
        if warnings:
            return Outcome(Status.WARNING, f"{len(warnings)} boot limit(s) too large; {summary}",
                           tuple(warnings))
        return Outcome(Status.PASSED, summary)

    def check_secrets(self) -> Outcome:
        from nixfleet.secrets.rules import load_rules
        from nixfleet.secrets.store import SecretStore

        store = SecretStore(self.root, load_rules(self.fleet, self.root))
        statuses = store.status()
        problems = []
        for s in statuses:
            if s.state == "stale":
                changes = " ".join([f"+{n}" for n in s.missing] + [f"-{n}" for n in s.extra])
                problems.append(f"{store.relative(s.name)}: recipients differ from the rules: "
                                f"{changes} (nixfleet secrets rekey)")
            elif s.state == "no-rule":
                problems.append(f"{store.relative(s.name)}: no rule for it in secrets/rules.py")
            elif s.state == "damaged":
                problems.append(f"{store.relative(s.name)}: {s.error}")
        missing = [s.name for s in statuses if s.state == "missing"]
        files = len(statuses) - len(missing)
        if problems:
            return Outcome.of(problems, "")
        if missing:
            return Outcome(Status.WARNING, f"{files} files ok; {len(missing)} secrets have no "
                           "file yet (hosts need them to build)",
                           (f"no file yet in secrets/ (nixfleet secrets create NAME): "
                            f"{', '.join(missing)}",))
        return Outcome(Status.PASSED, f"{files} files match the rules")

    def check_builders(self) -> Outcome:
        """A host named by deploy.buildOn signs with the fleet's key (it receives the secret
        binary-cache-key) and serves its targets: it runs the fleet's binary cache, or serves
        its store over SSH to the fleet's fetch key (nix/builder-ssh.pub), whose private half
        (the secret builder-ssh-key) each of its targets receives."""
        from nixfleet.builder import FETCH_SECRET, SIGNING_SECRET
        from nixfleet.monitoring import is_server
        from nixfleet.secrets.rules import load_rules
        from nixfleet.target import current_target

        hosts = self.fleet.hosts
        builders = sorted({h.deploy.buildOn for h in hosts.values()} - {"target", "local"})
        if not builders:
            return Outcome(Status.PASSED, "no host builds for others")
        rules = load_rules(self.fleet, self.root).secrets
        signers = rules[SIGNING_SECRET].hosts if SIGNING_SECRET in rules else []
        fetchers = rules[FETCH_SECRET].hosts if FETCH_SECRET in rules else []
        problems = []
        for builder in builders:
            targets = [n for n, h in hosts.items() if h.deploy.buildOn == builder != n]
            builds_for = f"{builder} (builds for {', '.join(targets)})"
            if builder not in signers:
                problems.append(f"{builds_for} does not receive the secret {SIGNING_SECRET} "
                                "(secrets/rules.py): it could not sign")
            if is_server(hosts[builder]):
                continue
            if current_target().builder_login(hosts[builder], self.root) is None:
                problems.append(f"{builds_for} runs no binary cache, and the fleet has no "
                                "nix/builder-ssh.pub for its targets to fetch over SSH")
            lacking = [t for t in targets if t not in fetchers]
            if lacking:
                problems.append(f"{', '.join(lacking)} (built on {builder}, which runs no "
                                f"binary cache) do not receive the secret {FETCH_SECRET} "
                                "(secrets/rules.py): they could not fetch over SSH")
        return Outcome.of(problems, f"{', '.join(builders)} can sign and serve")

    def check_plaintext(self) -> Outcome:
        from nixfleet.secrets.plaintext import check_plaintext

        return Outcome.of(check_plaintext(self.root), "no plaintext secret or private key")

    def check_monitoring(self) -> Outcome:
        from nixfleet.monitoring import OUTPUT_DIR
        from nixfleet.monitoring.check import check_monitoring

        directory = self.root / OUTPUT_DIR
        if not directory.is_dir():
            return Outcome(Status.SKIPPED, f"no {OUTPUT_DIR} (no monitoring server)")
        return Outcome.of(check_monitoring(directory, self.root),
                          "promtool and amtool accept the configuration")

    def check_flake(self) -> Outcome:
        check = flake_check(self.root / "nix")
        status = {CheckState.PASSED: Status.PASSED, CheckState.FAILED: Status.FAILED,
                  CheckState.UNREACHABLE: Status.SKIPPED}[check.state]
        return Outcome(status, check.message, (check.reason,) if check.reason else ())


def selected(args: argparse.Namespace) -> tuple[str, ...]:
    names = QUICK if args.quick else FULL
    unknown = [n for n in args.skip if n not in FULL]
    if unknown:
        raise NixfleetError(f"--skip {', '.join(unknown)}: no such step; steps: "
                            f"{', '.join(FULL)}")
    if "inventory" in args.skip:
        raise NixfleetError("--skip inventory: the other steps need the inventory")
    return tuple(n for n in names if n not in args.skip)


def cmd_validate(args: argparse.Namespace) -> int:
    validation = Validation(inventory_path(args))
    title = "nixfleet validate" + (" --quick" if args.quick else "")
    report = steps.run_steps(title, validation.steps(selected(args)),
                             jobs=min(4, os.cpu_count() or 1))
    if args.junit:
        Path(args.junit).write_text(steps.junit_xml(report))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        steps.print_report(report)
    return 0 if report.ok else 1


def register(commands: Any) -> None:
    validate = commands.add_parser(
        "validate", help="every check that needs no host: inventory, generated files, Nix, "
                         "secrets, monitoring, nix flake check",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    validate.add_argument("--quick", action="store_true",
                          help="leave out promtool/amtool and nix flake check")
    validate.add_argument("--skip", action="append", default=[], metavar="STEP",
                          help="leave out a step (repeatable)")
    validate.add_argument("--json", action="store_true", help="machine-readable output")
    validate.add_argument("--junit", metavar="FILE", help="also write JUnit XML to FILE")
    validate.set_defaults(func=cmd_validate)
