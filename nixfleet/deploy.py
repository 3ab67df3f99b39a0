"""What deploy files call: one rebuild per host, and one summary per deploy run.

    # deploys/switch.py
    from nixfleet.deploy import deploy
    deploy("switch")

The summary (a table, and summary.json under .deploy-logs/<deploy id>/) lists every selected
host: generation before -> after, result, closure difference, duration and reason. Hosts that
could not be reached are listed too. Under `--dry` it says what would happen instead.

After the last operation, the hosts a switch, test or boot with reboot changed are verified
(nixfleet.verify: tests/fleet over pytest-testinfra, `deploy.verify` in data, off for one run
with `--data no_verify=true`); a failed check fails its host, so pyinfra exits 1, and the
summary names the check.

A canary rollout (`--data canary=true`, or `deploy.strategy: canary`) runs the hosts in waves
(nixfleet.rollout): each wave's hosts are verified, and watched by the alert gate
(nixfleet.alertgate), before the next wave starts; a wave with a failure stops the rollout.
"""

from __future__ import annotations

import atexit
import getpass
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from weakref import WeakKeyDictionary

import gevent
from pyinfra import host, inventory
from pyinfra.api import Host as PyinfraHost
from pyinfra.api import State
from pyinfra.api.operation import OperationMeta
from pyinfra.api.state import BaseStateCallback, StateStage
from pyinfra.context import ctx_state

from nixfleet import builder as builds
from nixfleet import localbuild, preflight
from nixfleet.alertgate import Watched, WaveAlerts
from nixfleet.builder import FleetBuild
from nixfleet.errors import NixfleetError, for_pyinfra
from nixfleet.facts.deploy import DeployState, HostDeployState
from nixfleet.files import write_atomic
from nixfleet.inventory import project_root
from nixfleet.model import MODEL_KEYS, Boot, Deploy, HealthCheck, Host
from nixfleet.monitoring import is_server, read_ports
from nixfleet.operations import nixos
from nixfleet.outcome import Action, HostOutcome, Result, StepOutcome
from nixfleet.remote import protocol
from nixfleet.rollout import Member, Rollout, plan_waves
from nixfleet.ssh import root_command, ssh_argv
from nixfleet.target import Target, current_target
from nixfleet.verify.expect import binary_cache_url
from nixfleet.verify.report import HostVerification, Verification

COLOURS = {Result.CHANGED: "green", Result.UNCHANGED: "cyan", Result.BUILT: "green",
           Result.ROLLBACK_FAILED: "bold red reverse",
           Result.WOULD_CHANGE: "yellow"}


@dataclass
class HostPlan:
    action: Action
    operation: OperationMeta  # the remote step
    preview: HostOutcome  # what the facts say will happen
    noop: bool = False  # nothing to do (the facts say so): the preview is the outcome
    steps: list[StepOutcome] = field(default_factory=list)
    verify: bool = False  # verified after the run when it changed the host
    # Why it is verified even when nothing changes (its running system never was), or None.
    unverified: str | None = None
    member: Member | None = None  # in a canary rollout: the host as the waves see it
    watched: Watched | None = None  # ... and as its wave's alert gate does


class DeployRun:
    """One pyinfra run of deploy files: each host's plan, then its outcome and the summary."""

    def __init__(self, state: State) -> None:
        self.deploy_id = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
        self.owner = f"{getpass.getuser()}@{socket.gethostname()}"
        self.state = state
        self.plans: dict[str, HostPlan] = {}
        self.verification: Verification | None = None
        self.settled = False  # the work after the last operation is done
        self.rollout: Rollout | None = None  # a canary rollout's waves, once they run
        self.batch: int | str | None = None
        self.wave_alerts: list[WaveAlerts] = []
        self.builds: dict[str, FleetBuild] = {}  # by builder (deploy.buildOn: HOST)
        state.add_callback_handler(_AfterTheLastOperation(self.settle))
        state.add_callback_handler(_RebuildEnded(self))

    def fleet_build(self, builder: str, target: Target, timeout: int) -> FleetBuild:
        """The build on this builder of every target that names it (one per deploy; made
        without waiting for anything, as pyinfra plans the hosts concurrently)."""
        if builder not in self.builds:
            root, hosts = project_root(), _fleet_hosts()
            directory = builds.build_dir(_flake_files(target, root))
            flake = builds.flake_dir(directory)
            model = next(h for h in hosts if h.name == builder)
            data = inventory.get_host(builder).data
            login = None if is_server(model) else target.builder_login(model, root)
            substituter = (binary_cache_url(builder, root) if is_server(model) else
                           builds.ssh_store_url(*login) if login else None)
            self.builds[builder] = FleetBuild(
                builder, ssh_argv(data), lambda: target.flake_files(hosts, root, at=flake),
                directory, target.flake_ref(flake), substituter, timeout,
                as_root=lambda command: root_command(data, command))  # the key is root's
        return self.builds[builder]

    def record(self, host_name: str, step: StepOutcome) -> None:
        self.plans[host_name].steps.append(step)

    @property
    def executed(self) -> bool:
        return self.state.current_stage >= StateStage.Execute

    def outcome(self, name: str, plan: HostPlan) -> HostOutcome:
        if plan.noop:
            outcome = replace(plan.preview)  # a copy: the steps below change it
        elif plan.operation.is_complete():
            outcome = protocol.parse(name, plan.action, plan.operation.stdout_lines
                                     + plan.operation.stderr_lines)
        else:
            outcome = HostOutcome(name, plan.action, Result.FAILED,
                                  "not run (the host failed earlier; see above)")
        for step in plan.steps:
            outcome.after(step)
        if outcome.result in (Result.LOCKED, Result.NOT_ATTEMPTED):
            # Locked out, or its wave never came: the plan's fact read the generation, which
            # this deploy did not change.
            outcome.generation_before = outcome.generation_after = plan.preview.generation_before
        if self.verification is not None:
            outcome.verification = self.verification.hosts.get(name)
        if self.rollout is not None and name in self.rollout.wave_of:
            outcome.wave = self.rollout.wave_of[name] + 1
        return outcome

    def settle(self) -> None:
        """After the last operation: the hosts that found another deploy's lock, then the
        verification."""
        self.settled = True
        if self.rollout is not None:
            self.rollout.complete.wait()  # the last wave's gate
        self.fail_locked_out()
        self.verify()

    def fail_locked_out(self) -> None:
        """A host whose lock another deploy holds is one line naming the holder, and one of
        pyinfra's failed hosts (its deploy step exits EXIT_LOCKED, which pyinfra takes as
        success: else it prints the protocol lines, "executed 0 commands" and, when it was
        the only host, "No hosts remaining!")."""
        locked = {o.host: o.reason for o in self.outcomes() if o.result is Result.LOCKED}
        for name, reason in locked.items():
            print(f"nixfleet: {name}: {reason}", file=sys.stderr, flush=True)
        self.state.failed_hosts.update(h for h in self.state.inventory if h.name in locked)

    def verify(self, names: list[str] | None = None) -> None:
        """Verify these hosts (default: those this run changed and did not verify yet, where
        their plan asks for it); a host whose verification fails becomes one of pyinfra's
        failed hosts."""
        done = self.verification or Verification()
        self.verification = done
        why: dict[str, str] = {}
        if names is None:
            names = []
            for o in self.outcomes():
                plan = self.plans.get(o.host)
                if plan is None or not plan.verify or o.host in done.hosts:
                    continue
                if o.result is Result.CHANGED:
                    names.append(o.host)
                elif o.result is Result.UNCHANGED and plan.unverified:
                    names.append(o.host)  # a system nothing ever checked: checked now
                    why[o.host] = plan.unverified
        if not names:
            return
        from nixfleet.verify.run import verify

        print(f"nixfleet: verifying {', '.join(names)}", flush=True)
        for name, reason in why.items():
            print(f"nixfleet: {name}: unchanged, verified because {reason}", flush=True)
        log = project_root() / ".deploy-logs" / self.deploy_id / f"verify-{'-'.join(names)}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        try:
            result = verify(project_root() / "inventory.py", names, log=log)
        except NixfleetError as error:
            result = Verification(errors=[str(error)])
            for name in names:
                result.hosts[name] = HostVerification(name)
        done.hosts.update(result.hosts)
        done.errors += result.errors
        # A suite that could not run fails every host it was to verify.
        failed = set(names) if result.errors else {
            name for name in names if not result.hosts[name].ok}
        self.state.failed_hosts.update(h for h in self.state.inventory if h.name in failed)

    # --- a canary rollout's waves (nixfleet.rollout) ------------------------------------------
    def turn(self, host_: PyinfraHost) -> str | None:
        """In a host's rebuild, before anything runs there: wait for its wave; why it is not
        attempted (the rollout stopped), or None."""
        return self._rollout().turn(host_.name)

    def _rollout(self) -> Rollout:
        if self.rollout is None:  # at the first turn: every host's plan is made by then
            members = [member for name in sorted(self.plans, key=self.inventory_rank)
                       if (member := self.plans[name].member) is not None]
            waves = plan_waves(members, self.batch)
            self.wave_alerts = [WaveAlerts([w for n in wave if (w := self.plans[n].watched)])
                                for wave in waves]
            self.rollout = Rollout(waves, self._waiting, self._start_wave, self._finish_wave)
        return self.rollout

    def _waiting(self, index: int) -> set[str]:
        """The hosts of a wave whose rebuild is to run (not those pyinfra failed before)."""
        failed = {h.name for h in self.state.failed_hosts}
        return {n for n in self._rollout().waves[index]
                if self.plans[n].member is not None and n not in failed}

    def _start_wave(self, index: int) -> None:
        waves = self._rollout().waves
        first = " (one host per hardware class)" if index == 0 else ""
        print(f"nixfleet: wave {index + 1} of {len(waves)} starts: "
              f"{', '.join(waves[index])}{first}", flush=True)
        self.wave_alerts[index].before()

    def _finish_wave(self, index: int) -> str | None:
        """A wave's gates after its rebuilds (the health gate, the confirmation): verification
        of the hosts it changed, then the alert gate; why the rollout stops, or None."""
        names = self._rollout().waves[index]
        outcomes = {o.host: o for o in self.outcomes() if o.host in names}
        self.verify([n for n in names if outcomes[n].result is Result.CHANGED
                     and self.plans[n].verify])
        # The alert gate judges what the wave changed (and did not fail already).
        failed = {h.name for h in self.state.failed_hosts}
        changed = [n for n in names if outcomes[n].result is Result.CHANGED and n not in failed]
        for name, step in self.wave_alerts[index].after(changed).items():
            self.record(name, step)
            if step.result is not None:
                self.state.failed_hosts.update(
                    h for h in self.state.inventory if h.name == name)
        failed = {h.name for h in self.state.failed_hosts}
        stopped = [o for o in self.outcomes() if o.host in names
                   and (not o.result.ok or o.host in failed)]
        total = len(self._rollout().waves)
        if not stopped:
            print(f"nixfleet: wave {index + 1} of {total} passed", flush=True)
            return None
        first = stopped[0]
        print(f"nixfleet: wave {index + 1} of {total} stopped the rollout: "
              f"{', '.join(f'{o.host} {o.result}' for o in stopped)}", flush=True)
        return (f"not attempted: wave {index + 1} stopped the rollout ({first.host}: "
                f"{first.result}: {first.reason})")

    def outcomes(self) -> list[HostOutcome]:
        results = [self.outcome(name, plan) for name, plan in self.plans.items()]
        for failed in self.state.failed_hosts:
            if failed.name not in self.plans:
                results.append(HostOutcome(failed.name, None, Result.UNREACHABLE,
                                           "could not connect (see above)"))
        return self.in_inventory_order(results)

    def inventory_rank(self, name: str) -> int:
        """A host's place in the inventory (plans are made in the order their facts came
        back, which differs from run to run)."""
        names = [h.name for h in self.state.inventory]
        return names.index(name) if name in names else len(names)

    def in_inventory_order(self, results: list[HostOutcome]) -> list[HostOutcome]:
        return sorted(results, key=lambda r: self.inventory_rank(r.host))

    def finish(self) -> None:
        """At the end of pyinfra's run: the summary, or what would have happened (--dry), or
        that nothing happened (the confirmation declined)."""
        if not self.plans:
            return
        if self.executed:
            late = not self.settled  # pyinfra's --serial and --no-wait runs
            if late:
                self.settle()
            outcomes = self.outcomes()
            self.print_summary(outcomes, f"nixfleet deploy {self.deploy_id}")
            # pyinfra has set its exit status already: 2 when a host's rollback failed (it may
            # run or boot neither system), 1 when verification failed after the run.
            if any(o.result is Result.ROLLBACK_FAILED for o in outcomes):
                sys.stdout.flush()
                os._exit(2)
            if late and (not self.verification.ok  # type: ignore[union-attr]
                         or any(o.result is Result.LOCKED for o in outcomes)):
                sys.stdout.flush()
                os._exit(1)
        elif "--dry" in sys.argv:
            previews = self.in_inventory_order([p.preview for p in self.plans.values()])
            self.print_summary(previews, "nixfleet deploy --dry: what would happen (nothing "
                               "was changed)", write=False)
        else:
            # Declined, or no terminal to confirm on: one line, and exit 1 either way (pyinfra
            # would exit 0, a deploy that did not happen).
            print("nixfleet: nothing was deployed", file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(1)

    def host_lines(self, results: list[HostOutcome]) -> list[str]:
        """What the table has no room for, one line each: closure differences, what would
        happen, drift, backups, verification."""
        lines = []
        for r in results:
            if r.result is Result.ROLLBACK_FAILED:
                lines.append(f"  {r.host}: ROLLBACK FAILED: {r.reason}")
            lines += [f"  {r.host}: warning: {warning}" for warning in r.warnings]
            lines += [f"  {r.host}: {line}" for line in [*r.diff, *r.would]]
            build = self.builds.get(r.built_on or "")
            if r.fetched_bytes is not None and build is not None and build.substituter:
                lines.append(f"  {r.host}: built on {r.built_on}, fetched "
                             f"{r.fetched_bytes / 2**20:.1f} MiB "
                             f"{builds.fetched_from(build.substituter)}")
            if r.drift:
                lines.append(f"  {r.host}: the flake directory differed from what nixfleet last "
                             f"wrote there: {_drift_line(r.drift)}")
            if r.backup:
                lines.append(f"  {r.host}: kept what it replaced in {r.backup}")
            lines += [f"  {r.host}: removed an older backup, {path} (the newest 3 are kept)"
                      for path in r.backups_removed]
            if r.verification is not None:
                v = r.verification
                lines.append(f"  {r.host}: verified: " + (
                    f"{v.passed} checks passed" if v.ok
                    else f"{len(v.failures)} of {v.total} checks FAILED"))
                lines += [f"  {r.host}: FAILED {f.check}: {f.line}" for f in v.failures]
        lines += [f"  verification: {e}" for e in (self.verification.errors
                                                    if self.verification else [])]
        return lines

    def print_summary(self, results: list[HostOutcome], title: str, write: bool = True) -> None:
        from nixfleet import console as tables

        waves = any(r.wave for r in results)
        if waves:  # the waves in order
            results = sorted(results, key=lambda r: r.wave or len(results))
        # Where a system was built, when any was built by a builder host.
        builders = any(r.built_on not in (None, "target", "deployer") for r in results)
        table = tables.table(*(("wave",) if waves else ()), "host", "action", "generation",
                             "result", "closure", *(("built on",) if builders else ()),
                             "time", "reason", title=title)
        for r in results:
            generation = f"{_dash(r.generation_before)} -> {_dash(r.generation_after)}"
            colour = COLOURS.get(r.result, "red")
            warned = f" ({len(r.warnings)} warning{'s' if len(r.warnings) > 1 else ''})" \
                if r.warnings else ""
            table.add_row(*((_dash(r.wave),) if waves else ()), r.host, str(r.action or "-"),
                          generation,
                          f"[{colour}]{r.result}{warned}[/{colour}]", r.closure_delta or "-",
                          *((_dash(r.built_on),) if builders else ()),
                          f"{r.duration:.2f}s" if r.duration is not None else "-", r.reason)
        # Piped, one line per host where it fits: logs and scripts read the rows.
        console = tables.console(piped_width=160)
        tables.print_table(table, console)
        for text in self.host_lines(results):
            # One line each whatever the width (grep, logs), never read as rich markup.
            console.print(text, highlight=False, markup=False, soft_wrap=True)
        if write:
            path = project_root() / ".deploy-logs" / self.deploy_id / "summary.json"
            write_atomic(path, json.dumps([r.to_json() for r in results], indent=2) + "\n")
            print(f"summary: {path}", flush=True)  # plain: never wrapped


def _drift_line(drift: list[str], shown: int = 4) -> str:
    """"edited 2 files: a, b; added 30 files: c, d, e, f, ..." (all of them in summary.json)."""
    by_kind: dict[str, list[str]] = {}
    notes = []  # "record damaged: ...": said as it is
    for entry in drift:
        kind, _, path = entry.partition(" ")
        if kind in ("edited", "added", "deleted"):
            by_kind.setdefault(kind, []).append(path)
        else:
            notes.append(entry)
    return "; ".join([*notes, *(
        f"{kind} {len(paths)} file{'s' if len(paths) > 1 else ''}: {', '.join(paths[:shown])}"
        + (", ..." if len(paths) > shown else "") for kind, paths in by_kind.items())])


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


_RUNS: WeakKeyDictionary[State, DeployRun] = WeakKeyDictionary()


class _RebuildEnded(BaseStateCallback):
    """Tells a canary rollout that a host's rebuild ended, however it ended."""

    def __init__(self, run: DeployRun) -> None:
        self.run = run

    def _ended(self, host_: PyinfraHost, op_hash: str) -> None:
        plan = self.run.plans.get(host_.name)
        if self.run.rollout is not None and plan is not None and plan.member is not None \
                and plan.operation._hash == op_hash:  # pyinfra keeps no public name for it
            # After this callback pyinfra stores the host's output, which the wave's gate
            # reads: the gate runs once this greenlet has moved on.
            gevent.spawn(self.run.rollout.done, host_.name)

    def operation_host_success(self, state: State, host: PyinfraHost,  # type: ignore[override]
                               op_hash: str, retry_count: int = 0) -> None:
        self._ended(host, op_hash)

    def operation_host_error(self, state: State, host: PyinfraHost,  # type: ignore[override]
                             op_hash: str, retry_count: int = 0, max_retries: int = 0) -> None:
        self._ended(host, op_hash)


class _AfterTheLastOperation(BaseStateCallback):
    """Calls `then` once every host has finished pyinfra's last operation."""

    def __init__(self, then: Callable[[], None]) -> None:
        self.then = then
        self.last: str | None = None

    def operation_end(self, state: State, op_hash: str) -> None:  # type: ignore[override]
        if self.last is None:
            self.last = state.get_op_order()[-1]
        if op_hash == self.last:
            self.then()


def current_run() -> DeployRun:
    """This pyinfra run's DeployRun (made on first use; it prints the summary at exit)."""
    state = ctx_state.get()
    if state not in _RUNS:
        _RUNS[state] = run = DeployRun(state)
        atexit.register(run.finish)
        cli = sys.modules.get("pyinfra_cli.cli")
        if cli is not None:  # pyinfra's CLI asks before it executes (without -y)
            cli._do_confirm = confirm  # type: ignore[attr-defined]
    return _RUNS[state]


def confirm(message: str) -> bool:
    """pyinfra's confirmation, with one rule: only Enter typed on a terminal goes on. Without
    a terminal (stdin from a file, a pipe or /dev/null) nothing is asked and nothing deployed;
    any other answer, or the end of input, declines (pyinfra's own prompt deployed on an Enter
    piped in, and crashed on end of input)."""
    if sys.stdin is None or not sys.stdin.isatty():
        return False
    print(f"\n    {message}\n    Press enter to execute...", end="", file=sys.stderr,
          flush=True)
    try:
        return input() == ""
    except EOFError:
        return False


@cache
def _fleet_hosts() -> tuple[Host, ...]:
    """Every host of the inventory pyinfra loaded, as the validated model."""
    return tuple(
        Host.model_validate({"name": h.name, **{k: v for k, v in h.data.dict().items()
                                                if k in MODEL_KEYS}})
        for h in inventory
    )


@cache
def _flake_files(target: Target, root: Path) -> dict[str, bytes]:
    return target.flake_files(_fleet_hosts(), root)


def dry_preview(action: Action, host_name: str, files: dict[str, bytes], flake_ref: str,
                state: DeployState, nix_config: str, changed: int, otherwise: str) -> str:
    """What --dry says of a host whose flake files change: whether its system changes too,
    from the toplevel's store path evaluated here (not built) against the one it runs, or
    `otherwise` when it cannot be evaluated here (e.g. no nixpkgs)."""
    with tempfile.TemporaryDirectory(prefix="nixfleet-dry-") as scratch:
        system, _ = localbuild.evaluate(files, flake_ref, host_name, nix_config, Path(scratch))
    if system is None:
        return otherwise
    same = action.satisfied_by(system, state.current_system, state.profile_system) if (
        action.live or action.sets_profile) else system == state.current_system
    if same:
        return f"would send {changed} changed flake files: flake only (the system stays as is)"
    return otherwise


def _flag(value: object) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


def deploy(action: Action | str) -> None:
    """Queue this host's rebuild (called by deploy files, once per host), and what keeps it
    safe: the confirmation of a switch or test, and a reboot when asked for.

    `--data no_rollback=true` turns rollback off, `--data no_verify=true` the verification
    after the run; `--data reboot=true` builds the new generation as the boot default and
    reboots into it (`deploy.reboot: auto` in data reboots after a switch only when the
    kernel, initrd or modules changed); `--data canary=true` (or `deploy.strategy: canary`)
    rolls out in waves.
    """
    action = Action(action)
    run = current_run()
    target = current_target()
    settings = host.data.deploy
    canary = _flag(host.data.get("canary")) or settings.get("strategy") == "canary"
    if canary and (problem := _canary_problem(action, settings)):
        # One line naming the deploy file, before anything runs anywhere.
        raise for_pyinfra(NixfleetError(problem), sys._getframe(1)) from None
    checks = [HealthCheck.model_validate(c) for c in settings["checks"]]
    rollback = settings["rollback"] and not _flag(host.data.get("no_rollback"))
    reboot_now = _flag(host.data.get("reboot"))
    if reboot_now and action is Action.SWITCH:
        action = Action.BOOT  # then the reboot activates it
    flake_dir = host.data.system["paths"]["flakeDir"]
    files = _flake_files(target, project_root())
    state = host.get_fact(HostDeployState, flake_dir=flake_dir)
    plan = nixos.plan_rebuild(action, files, state)
    preview = HostOutcome(host.name, action, Result.UNCHANGED if plan.noop
                          else Result.WOULD_CHANGE, plan.noop or plan.preview(action),
                          generation_before=state.generation,
                          generation_after=state.generation if plan.noop else None)
    if "--dry" in sys.argv and not plan.noop and plan.send and action.builds:
        preview.reason = dry_preview(action, host.name, files, target.flake_ref(flake_dir),
                                     state, target.local_nix(project_root()), len(plan.changed),
                                     preview.reason)
    problems = [] if plan.noop else preflight.check(
        action, state.boot, Boot.model_validate(host.data.get("boot") or {}), state.generation,
        host.name, target.boot_scale)
    if problems:  # not touched: nothing runs on the host, and it fails
        reason = "pre-flight: " + "; ".join(problems)
        run.plans[host.name] = HostPlan(action, nixos.refuse(name="pre-flight", reason=reason),
                                        HostOutcome(host.name, action, Result.FAILED, reason,
                                                    generation_before=state.generation,
                                                    generation_after=state.generation),
                                        noop=True)
        return
    fleet_build = None
    if settings["buildOn"] not in ("target", "local") and action.builds and not plan.noop:
        fleet_build = run.fleet_build(settings["buildOn"], target, settings["lockTtl"])
        fleet_build.add(host.name)
    safety = {"deploy_id": run.deploy_id, "health_timeout": settings["healthTimeout"],
              "checks": checks, "record": run.record,
              "strict_units": bool(settings.get("strictUnits", False))}
    rebuilt = nixos.rebuild(  # a no-op when the plan says so: pyinfra shows "No change"
        name=f"nixos-rebuild {action}",
        action=action,
        flake_files=files,
        flake_dir=flake_dir,
        flake_ref=target.flake_ref(flake_dir),
        owner=run.owner,
        lock_ttl=settings["lockTtl"],
        rollback=rollback,
        confirm_timeout=settings["confirmTimeout"] if rollback else 0,
        build_on=settings["buildOn"],
        fleet_build=fleet_build,
        build_fallback=settings["buildFallback"] == "target",
        nix_config=target.local_nix(project_root()) if settings["buildOn"] == "local" else "",
        known=state,
        _success_exit_codes=[0, protocol.EXIT_LOCKED],  # locked out: fail_locked_out says so
        turn=run.turn if canary else None,
        **safety,
    )
    verify = settings["verify"] and not _flag(host.data.get("no_verify")) and (
        action.live or reboot_now)
    run.plans[host.name] = HostPlan(action, rebuilt, preview, noop=plan.noop is not None,
                                    verify=verify, unverified=unverified(state))
    if canary:
        model = Deploy.model_validate(settings)
        this = next(h for h in _fleet_hosts() if h.name == host.name)
        run.batch = model.batch
        run.plans[host.name].member = Member(host.name, this.hardware_class, model.canary)
        run.plans[host.name].watched = _watched(this, model, target)
    auto = settings["reboot"] == "auto" and action is Action.SWITCH and not plan.noop
    if reboot_now or auto:
        nixos.reboot(name="reboot into the new generation",
                     rebuilt=None if plan.noop else rebuilt, owner=run.owner,
                     only_if_required=auto, rollback=rollback, **safety)


def unverified(state: DeployState) -> str | None:
    """Why the host's running system needs a verification it never had, or None."""
    running, record = state.current_system, state.verified
    if not running:
        return None
    if record is None or record.toplevel != running:
        return f"it runs {running}, which no verification checked"
    if not record.passed:
        return f"the last verification of {running} failed"
    return None


def _canary_problem(action: Action, settings: dict) -> str | None:
    """What a canary rollout cannot do (one line), or None."""
    if not action.live:
        return (f"a canary rollout switches or tests hosts in waves; {action} does not change "
                "the running system")
    if _flag(host.data.get("reboot")) or settings.get("reboot") == "auto":
        return ("a canary rollout does not reboot its waves yet: leave out --reboot (and "
                "deploy.reboot: auto)")
    if "--serial" in sys.argv or "--no-wait" in sys.argv:
        return "a canary rollout runs its waves itself: leave out --serial and --no-wait"
    return None


def _watched(this: Host, settings: Deploy, target: Target) -> Watched:
    """The host as its wave's alert gate sees it: its monitoring server and that server's
    Prometheus, at its pyinfra address."""
    monitoring = this.features.monitoring
    server = this.name if is_server(this) else (
        monitoring.serverHost if monitoring.enable else None)
    prometheus = None
    if server is not None and inventory.get_host(server) is not None:
        address = str(inventory.get_host(server).data.get("ssh_hostname") or server)
        address = f"[{address}]" if ":" in address else address
        prometheus = f"http://{address}:{read_ports(project_root())['prometheus']}"
    gate = settings.alertGate
    return Watched(this.name, server, prometheus, gate,
                   target.alert_settle if gate.settle is None else gate.settle)


def rollback(generation: int | None = None) -> None:
    """Queue this host's rollback to the previous (or the given) generation."""
    run = current_run()
    meta = nixos.rollback(name="nixos-rebuild switch --rollback", deploy_id=run.deploy_id,
                          owner=run.owner, generation=generation,
                          _success_exit_codes=[0, protocol.EXIT_LOCKED])
    run.plans[host.name] = HostPlan(Action.ROLLBACK, meta, HostOutcome(
        host.name, Action.ROLLBACK, Result.WOULD_CHANGE,
        f"would switch to generation {generation or 'before the current one'}"))
