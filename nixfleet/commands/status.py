"""`nixfleet status [--limit PATTERN] [--json]`: is every host running what this repository
says, and was it checked?

One SSH round trip per host (the HostStatus fact's command over OpenSSH, host keys checked
strictly), every host at once, and the fleet's Prometheus asked for firing alerts meanwhile.
One row per host in inventory order: its flake directory against this repository's flake,
its running, profile and booted systems, the last deploy (from the host's journal), whether
the running system was verified, its generation, failed units, boot partition and store room,
and the alerts firing for it. Exit 0 when every host is up to date, verified and healthy; 1
otherwise, with one line per problem under the table.

The SSH commands of the last run on this inventory are remembered (the user's cache directory)
and started before the inventory is even loaded: loading it (pydantic's models) takes longer
than the hosts take to answer. Each is used only if the inventory, once loaded, asks the very
same command of the host; any other is ended and the right one started.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nixfleet import console
from nixfleet.commands.options import add_limit_option, inventory_path
from nixfleet.errors import NixfleetError
from nixfleet.facts.parsers.errors import FactParseError
from nixfleet.facts.parsers.host_status import HostStatusData, parse_status, status_command
from nixfleet.ssh import root_command, ssh_argv

if TYPE_CHECKING:  # imported where used: these import pydantic, which the early start skips
    from nixfleet.inventory import Fleet
    from nixfleet.monitoring.api import FiringAlert

SSH_TIMEOUT = 30.0  # seconds for a host's whole answer
MIB = 2**20


@dataclass
class HostStatus:
    """One host's row and its problems (each one line, naming the host)."""

    host: str
    reachable: bool = True
    error: str | None = None
    flake: str = "-"
    flake_state: str = "unknown"  # up-to-date | behind | hand-edited | record-damaged | unknown
    flake_files: list[str] = field(default_factory=list)  # the files that differ
    system: str = "-"
    running: str | None = None
    profile: str | None = None
    booted: str | None = None
    reboot_needed: bool = False
    last_deploy: dict[str, Any] | None = None
    verified: str = "-"
    verified_state: str = "unknown"  # verified | failed | not-verified | unknown
    verified_at: int | None = None
    generation: int | None = None
    generation_date: str | None = None
    failed_units: list[str] = field(default_factory=list)
    boot_free: int | None = None
    store_free: int | None = None
    alerts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# --- reading a host --------------------------------------------------------------------------


def status_argv(data: dict[str, Any]) -> list[str]:
    """The host's status command over SSH, from its connection data."""
    flake_dir = ((data.get("system") or {}).get("paths") or {}).get("flakeDir") or "/etc/nixos"
    return [*ssh_argv(data), root_command(data, status_command(flake_dir))]


def ask_host(argv: list[str]) -> subprocess.Popen[str]:
    """Start a host's status command (at once: answer_of waits for its answer)."""
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


class Asked:
    """The hosts' status commands of the last run on an inventory, remembered in the user's
    cache directory and started before the inventory is loaded (see the module's text)."""

    def __init__(self, inventory: Path) -> None:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        # One file per inventory and target: a lab instance's hosts are other addresses.
        key = "\0".join([str(inventory), os.environ.get("NIXFLEET_TARGET", ""),
                          os.environ.get("NIXFLEET_LAB_INSTANCE", "")])
        self.path = cache / "nixfleet" / "status" / (
            hashlib.sha256(key.encode()).hexdigest()[:16] + ".json")
        self.started: dict[str, tuple[list[str], subprocess.Popen[str]]] = {}

    def start_remembered(self) -> None:
        try:
            remembered = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return  # none yet, or unreadable: every command starts once the inventory is read
        if not isinstance(remembered, dict):
            return
        for name, argv in remembered.items():
            # Only what status_argv makes: OpenSSH and its arguments.
            if isinstance(argv, list) and argv[:1] == ["ssh"] and \
                    all(isinstance(a, str) for a in argv):
                try:
                    self.started[name] = (argv, ask_host(argv))
                except OSError:
                    continue

    def ask(self, wanted: dict[str, list[str]]) -> list[subprocess.Popen[str]]:
        """Each host's running command: the one started early where it is the very command
        wanted, else a new one; the others started early are ended."""
        asking = []
        for name, argv in wanted.items():
            early = self.started.pop(name, None)
            if early is not None and early[0] == argv:
                asking.append(early[1])
            else:
                asking.append(ask_host(argv))
                if early is not None:
                    _end(early[1])
        for _, process in self.started.values():
            _end(process)
        self.started.clear()
        return asking

    def remember(self, wanted: dict[str, list[str]]) -> None:
        """For the next run (written whole or not at all; a cache: failing to write is fine)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            new = self.path.with_suffix(f".{os.getpid()}.new")
            new.write_text(json.dumps(wanted))
            new.replace(self.path)
        except OSError:
            pass


def _end(process: subprocess.Popen[str]) -> None:
    process.kill()
    process.communicate()


def answer_of(process: subprocess.Popen[str], timeout: float = SSH_TIMEOUT,
              ) -> HostStatusData | str:
    """The host's answer, or why there is none (one line)."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _end(process)
        return f"no answer within {timeout:g} s"
    if process.returncode == 255:
        lines = [line for line in stderr.splitlines() if line.strip()]
        return f"ssh: {lines[-1] if lines else 'exit 255'}"
    try:
        return parse_status(stdout.splitlines())
    except FactParseError as error:
        return str(error)


# --- judging it --------------------------------------------------------------------------------


def _when(epoch: int | float | None) -> str:
    if epoch is None:
        return "?"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _short(paths: list[str], shown: int = 3) -> str:
    return ", ".join(paths[:shown]) + (f" and {len(paths) - shown} more" if len(paths) > shown
                                       else "")


def _newest_change(paths: list[str], roots: list[Path]) -> str | None:
    """The newest modification time of these files in the repository (None: none is there)."""
    times = [(root / path).stat().st_mtime for path in paths for root in roots
             if (root / path).is_file()]
    return _when(max(times)) if times else None


def judge_flake(row: HostStatus, answer: HostStatusData, wanted: dict[str, str],
                roots: list[Path]) -> None:
    deploy = answer.deploy
    if deploy is None:
        row.flake = "unknown: " + answer.errors.get("deploy", "no answer")
        row.problems.append(f"{row.host}: flake directory could not be read: {row.flake}")
        return
    here = deploy.files
    strays = list(deploy.strays)
    record = answer.record
    if record is None:
        row.flake_state = "record-damaged"
        row.flake = "record damaged: the whole directory is compared with this repository"
    elif record and (record != here or strays):
        edited = sorted(p for p in here if p in record and record[p] != here[p])
        added = sorted([p for p in here if p not in record] + strays)
        deleted = sorted(p for p in record if p not in here)
        row.flake_state = "hand-edited"
        row.flake_files = [*(f"edited {p}" for p in edited), *(f"added {p}" for p in added),
                           *(f"deleted {p}" for p in deleted)]
        row.flake = f"hand-edited on the host: {_short(row.flake_files)}"
        row.problems.append(f"{row.host}: flake directory hand-edited on the host: "
                            f"{', '.join(row.flake_files)}")
        return
    differ = sorted({p for p, sha in wanted.items() if here.get(p) != sha}
                    | {p for p in here if p not in wanted} | set(strays))
    if row.flake_state == "record-damaged":
        row.flake_files = differ
        if differ:
            row.flake += f"; {len(differ)} files differ: {_short(differ)}"
        row.problems.append(f"{row.host}: {row.flake}")
        return
    if not differ:
        row.flake_state, row.flake = "up-to-date", "up to date"
        return
    row.flake_state, row.flake_files = "behind", differ
    newest = _newest_change([p for p in differ if p in wanted], roots)
    row.flake = f"behind: {len(differ)} files differ" + (f", newest change {newest}"
                                                          if newest else "")
    row.problems.append(f"{row.host}: flake behind this repository: {len(differ)} files differ "
                        f"({_short(differ)}); deploy to update it")


def judge_system(row: HostStatus, answer: HostStatusData) -> None:
    deploy, system = answer.deploy, answer.system
    row.running = deploy.current_system if deploy else None
    row.profile = deploy.profile_system if deploy else None
    booted = system.booted if system else None
    row.booted = (booted.store_path if booted else None) or (
        deploy.boot.booted if deploy else None)
    if not row.running:
        row.system = "unknown: no /run/current-system"
        row.problems.append(f"{row.host}: the running system cannot be read")
        return
    parts = []
    if row.profile and row.profile != row.running:
        parts.append("the boot default (profile) is not the running system")
        row.problems.append(f"{row.host}: the system profile ({row.profile}) is not the "
                            f"running system ({row.running}): a boot deploy not yet rebooted, "
                            "or a profile changed by hand")
    changed = []
    if system and system.current and system.booted:
        changed = [part.replace("_", " ") for part in ("kernel", "initrd", "kernel_modules")
                   if getattr(system.current, part) != getattr(system.booted, part)]
    if changed:
        row.reboot_needed = True
        parts.append(f"reboot needed ({', '.join(changed)} changed)")
        row.problems.append(f"{row.host}: reboot needed: {', '.join(changed)} changed since "
                            "boot")
    elif row.booted and row.booted != row.running:
        parts.append("switched since boot (same kernel and initrd)")
    row.system = "; ".join(parts) or "running = profile = booted"


def judge_deploy(row: HostStatus, answer: HostStatusData) -> None:
    journal = answer.journal
    if journal is None:
        row.last_deploy = None
    else:
        row.last_deploy = {"id": journal.deploy_id, "time": journal.started,
                           "by": journal.owner, "result": journal.result,
                           "reason": journal.reason}
        if journal.result is None:
            row.problems.append(f"{row.host}: last deploy {journal.deploy_id} ended without "
                                "a result (killed?)")
        elif journal.result not in ("changed", "unchanged", "built"):
            row.problems.append(f"{row.host}: last deploy {journal.deploy_id}: "
                                f"{journal.result}: {journal.reason or '-'}")
    verified = answer.deploy.verified if answer.deploy else None
    if row.running is None:
        return
    if verified is None or verified.toplevel != row.running:
        row.verified_state, row.verified = "not-verified", "not verified"
        if verified is not None:
            row.verified += (f" (the last verification, {_when(verified.time)}, checked "
                             "another system)")
        row.problems.append(f"{row.host}: not verified: it runs {row.running}, which no "
                            "verification checked (nixfleet verify, or the next deploy)")
    elif verified.passed:
        row.verified_state, row.verified = "verified", f"verified {_when(verified.time)}"
        row.verified_at = verified.time
    else:
        row.verified_state, row.verified = "failed", f"verification failed {_when(verified.time)}"
        row.verified_at = verified.time
        row.problems.append(f"{row.host}: verification of the running system failed "
                            f"{_when(verified.time)} (nixfleet verify --limit {row.host})")


def judge_health(row: HostStatus, answer: HostStatusData, esp_guard: int) -> None:
    """esp_guard: bytes the boot partition keeps free (boot.espGuard, at the target's scale)."""
    generation = answer.current_generation
    if generation is not None:
        row.generation, row.generation_date = generation.generation, generation.date
    elif answer.deploy is not None:
        row.generation = answer.deploy.generation
    row.failed_units = [unit.name for unit in answer.failed]
    if row.failed_units:
        row.problems.append(f"{row.host}: failed units: {', '.join(row.failed_units)}")
    if answer.deploy is not None:
        boot = answer.deploy.boot
        row.boot_free, row.store_free = boot.free, boot.store_free
        if boot.free is not None and boot.free < esp_guard:
            row.problems.append(f"{row.host}: boot partition {boot.mount}: "
                                f"{_mib(boot.free)} free, below its guard of {_mib(esp_guard)}"
                                f" (nixfleet gc --boot --limit {row.host})")
    for part, error in answer.errors.items():
        if part != "deploy":
            row.problems.append(f"{row.host}: {part} could not be read: {error}")


def _mib(size: int) -> str:
    return f"{size / MIB:.1f} MiB" if size < 10 * MIB else f"{size // MIB} MiB"


def judge(name: str, answer: HostStatusData | str, wanted: dict[str, str], roots: list[Path],
          esp_guard: int) -> HostStatus:
    row = HostStatus(name)
    if isinstance(answer, str):
        row.reachable, row.error = False, answer
        row.problems.append(f"{name}: unreachable: {answer}")
        return row
    judge_flake(row, answer, wanted, roots)
    judge_system(row, answer)
    judge_deploy(row, answer)
    judge_health(row, answer, esp_guard)
    return row


# --- the fleet's alerts --------------------------------------------------------------------


def firing_alerts(fleet: Fleet, root: Path, selected: list[str],
                  ) -> dict[str, list[FiringAlert]] | str:
    """The alerts firing per host, from each monitoring server watching a selected host; a
    line saying why when none could be asked."""
    from nixfleet.commands.monitoring import server_address
    from nixfleet.monitoring import monitored_by, read_ports, servers
    from nixfleet.monitoring.api import TIMEOUT, api_data, firing

    watching = [s for s in servers(fleet)
                if any(h.name in selected for h in monitored_by(fleet, s))]
    if not watching:
        return "no monitoring server watches these hosts"
    ports = read_ports(root)
    alerts: dict[str, list[FiringAlert]] = {}
    problems = []
    for server in watching:
        url = (f"http://{server_address(fleet, server.name)}:{ports['prometheus']}"
               "/api/v1/alerts")
        try:
            data = api_data(server.name, url, TIMEOUT)
        except NixfleetError as error:
            problems.append(str(error))
            continue
        for alert in firing(server.name, data):
            if alert.host:
                alerts.setdefault(alert.host, []).append(alert)
    if problems and len(problems) == len(watching):
        return "monitoring unreachable: " + "; ".join(problems)
    return alerts


# --- the command -------------------------------------------------------------------------------


def gather(fleet: Fleet, root: Path, limits: list[str], asked: Asked,
           ) -> tuple[list[HostStatus], str | None]:
    """Every selected host's status (inventory order) and, when the alerts could not be read,
    why. asked: the commands started before the inventory was loaded."""
    from nixfleet.flake import file_hashes
    from nixfleet.target import current_target

    selected = fleet.select(limits)
    # The hosts first, every SSH command started from this thread before anything else: what
    # this repository says is worked out while they answer. (A thread per host starts its
    # command only when it gets to run beside that work: of 16 lab hosts on a 2-core machine
    # the last started 0.16-0.36 s after the first, 0.15-0.22 s when started from here.)
    wanted = {name: status_argv(fleet.host_data[name]) for name in selected}
    asking = asked.ask(wanted)
    asked.remember(wanted)
    target = current_target()
    roots = [root, target.lock_dir(root)]
    with ThreadPoolExecutor(max_workers=max(2, min(33, len(selected) + 1))) as pool:
        answering = pool.map(answer_of, asking)
        alerts_future = pool.submit(firing_alerts, fleet, root, selected)
        files = file_hashes(target.flake_files(list(fleet.hosts.values()), root))
        answers = list(answering)
        try:
            alerts = alerts_future.result()
        except (NixfleetError, OSError, KeyError) as error:
            alerts = f"monitoring unreachable: {error}"
    rows = [judge(name, answer, files, roots,
                  int(fleet.hosts[name].boot.espGuard * MIB * target.boot_scale))
            for name, answer in zip(selected, answers, strict=True)]
    note = alerts if isinstance(alerts, str) else None
    if isinstance(alerts, dict):
        for row in rows:
            # The alerts that count are the alert gate's (deploy.alertGate: names,
            # severities); others, such as a busy CPU, are shown and judge nothing.
            gate = fleet.hosts[row.host].deploy.alertGate
            mine = alerts.get(row.host, [])
            row.alerts = [a.name + (f" ({a.severity})" if a.severity else "") for a in mine]
            counted = [a.name for a in mine
                       if a.name in gate.alerts or a.severity in gate.severities]
            if counted:
                row.problems.append(f"{row.host}: alerts firing: {', '.join(counted)}")
    return rows, note


def _space(row: HostStatus) -> str:
    boot = f"boot {_mib(row.boot_free)}" if row.boot_free is not None else "boot ?"
    store = f"store {row.store_free / 2**30:.1f} GiB" if row.store_free is not None else "store ?"
    return f"{boot}, {store} free"


def _deploy_cell(row: HostStatus) -> str:
    last = row.last_deploy
    if last is None:
        return "none recorded"
    return (f"{_when(last['time']) if last['time'] else '?'} by {last['by'] or '?'} "
            f"({last['id']}): {last['result'] or 'no result'}")


def _generation_cell(row: HostStatus, now: float) -> str:
    if row.generation is None:
        return "-"
    if not row.generation_date:
        return str(row.generation)
    try:
        moment = datetime.strptime(row.generation_date, "%Y-%m-%d %H:%M:%S").replace(
            tzinfo=UTC)
    except ValueError:
        return f"{row.generation} ({row.generation_date})"
    return f"{row.generation} ({_ago(now - moment.timestamp())})"


def print_table(rows: list[HostStatus], note: str | None) -> None:
    from rich.text import Text

    now = time.time()
    table = console.table("host", "flake", "system", "last deploy", "verified", "generation",
                          "failed units", "free", "alerts")
    for row in rows:
        if not row.reachable:
            table.add_row(row.host, Text(f"unreachable: {row.error}", style="red"),
                          "", "", "", "", "", "", "")
            continue
        alerts = ", ".join(row.alerts) if row.alerts else (
            "monitoring unreachable" if note else "none")
        table.add_row(
            row.host,
            Text(row.flake, style="green" if row.flake_state == "up-to-date" else "yellow"),
            row.system, _deploy_cell(row),
            Text(row.verified, style="green" if row.verified_state == "verified" else "yellow"),
            _generation_cell(row, now), ", ".join(row.failed_units) or "none", _space(row),
            alerts)
    out = console.console()
    console.print_table(table, out)
    if note:
        out.print(f"note: {note}", highlight=False, markup=False)
    problems = [p for row in rows for p in row.problems]
    for problem in problems:
        out.print(problem, highlight=False, markup=False)
    healthy = sum(row.ok for row in rows)
    out.print(f"{healthy} of {len(rows)} hosts up to date, verified and healthy", highlight=False)


def as_json(rows: list[HostStatus], note: str | None) -> dict[str, Any]:
    from dataclasses import asdict

    return {"ok": all(row.ok for row in rows), "monitoring": note or "ok",
            "hosts": [{**asdict(row), "ok": row.ok} for row in rows],
            "problems": [p for row in rows for p in row.problems]}


def cmd_status(args: argparse.Namespace) -> int:
    path = inventory_path(args)
    asked = Asked(path)
    asked.start_remembered()
    try:
        from nixfleet.inventory import load_inventory_file

        rows, note = gather(load_inventory_file(path), path.parent, args.limit, asked)
    finally:
        asked.ask({})  # ends what was started early and not used (a bad inventory, say)
    if args.json:
        print(json.dumps(as_json(rows, note), indent=2))
    else:
        print_table(rows, note)
    return 0 if all(row.ok for row in rows) else 1


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "status", help="is every host running what this repository says, and was it checked",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_limit_option(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=cmd_status)
