"""Deployer-side pieces of deploys that need no host: results, SSH arguments, HTTP checks,
the flake delta and the `nixfleet deploy` wrapper's pyinfra command line."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import subprocess
import tarfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from nixfleet import safety
from nixfleet.cli import build_parser
from nixfleet.commands.deploy import cmd_deploy
from nixfleet.facts.deploy import DeployState, deploy_state_command, parse_deploy_state
from nixfleet.facts.errors import FactParseError
from nixfleet.flake import MANIFEST, changed_paths, delta_tarball, file_hashes, flake_hash
from nixfleet.model import HealthCheck
from nixfleet.operations.nixos import plan_rebuild
from nixfleet.outcome import Action, Result, StepOutcome
from nixfleet.remote import protocol
from nixfleet.ssh import ssh_argv


def test_the_protocol_reads_the_hosts_lines_into_a_typed_outcome():
    lines = ["noise", "NIXFLEET generation_before=3", "NIXFLEET diff=go: ∅ → 1.23.4, +11.1 KiB",
             "NIXFLEET closure_before=1048576", "NIXFLEET closure_after=3145728",
             "NIXFLEET phase_build=0.224", "NIXFLEET drift=edited flake.nix",
             "NIXFLEET backup=/etc/nixos.nixfleet-backup-1", "NIXFLEET result=changed",
             "NIXFLEET reason=switch done", "NIXFLEET generation_after=4",
             "NIXFLEET duration=1.50", ""]
    outcome = protocol.parse("razer", Action.SWITCH, lines)
    assert (outcome.result, outcome.generation_before, outcome.generation_after) == \
        (Result.CHANGED, 3, 4)
    assert outcome.diff == ["go: ∅ → 1.23.4, +11.1 KiB"]
    assert outcome.closure_delta == "+2.0 MiB"
    assert outcome.phases == {"build": 0.224}
    assert outcome.drift == ["edited flake.nix"] and outcome.duration == 1.5
    assert outcome.backup == "/etc/nixos.nixfleet-backup-1"
    missing = protocol.parse("p510", Action.SWITCH, [])
    assert (missing.result, missing.reason) == (Result.FAILED, "no result from the host")
    assert missing.generation_before is None and missing.closure_delta is None


def test_summary_json_has_typed_values():
    outcome = protocol.parse("p620", Action.BOOT, [
        "NIXFLEET generation_before=7", "NIXFLEET result=unchanged", "NIXFLEET generation_after=",
        "NIXFLEET duration=0.20"])
    row = json.loads(json.dumps(outcome.to_json()))
    assert row["generation_before"] == 7 and row["generation_after"] is None
    assert row["duration"] == 0.2 and row["closure_delta"] is None
    assert (row["action"], row["result"]) == ("boot", "unchanged")
    assert set(row) >= {"host", "reason", "toplevel", "flake", "closure_before", "closure_after",
                        "diff", "would", "drift", "backup", "phases"}


@pytest.mark.parametrize(("action", "builds", "profile", "activation", "live", "reboot"), [
    (Action.PUSH, False, False, "", False, False),
    (Action.BUILD, True, False, "", False, False),
    (Action.DRY_ACTIVATE, True, False, "dry-activate", False, False),
    (Action.TEST, True, False, "test", True, False),
    (Action.BOOT, True, True, "boot", False, True),
    (Action.SWITCH, True, True, "switch", True, True),
])
def test_each_action_carries_what_it_implies(action, builds, profile, activation, live, reboot):
    assert (action.builds, action.sets_profile, action.activation, action.live,
            action.may_reboot) == (builds, profile, activation, live, reboot)
    flags = protocol.action_flags(action)
    assert flags == {"build": int(builds), "set_profile": int(profile), "activate": activation,
                     "live": int(live), "keep_root": int(action is Action.BUILD)}


def test_already_there_is_one_rule_per_action():
    new, old = "/nix/store/new", "/nix/store/old"
    assert Action.SWITCH.satisfied_by(new, current=new, profile=new)
    assert not Action.SWITCH.satisfied_by(new, current=new, profile=old)
    assert Action.TEST.satisfied_by(new, current=new, profile=old)
    assert Action.BOOT.satisfied_by(new, current=old, profile=new)
    assert not Action.BOOT.satisfied_by(new, current=new, profile=old)
    assert not Action.BUILD.satisfied_by(new, current=new, profile=new)
    assert not Action.SWITCH.satisfied_by(None, current=None, profile=None)


def _state(files: dict[str, bytes], **system: str | None) -> DeployState:
    return DeployState(files=file_hashes(files), **system)  # type: ignore[arg-type]


def test_a_host_with_the_flake_and_system_deployed_is_a_no_op_from_facts():
    files = {"flake.nix": b"{ }", "hosts/a.json": b"{}"}
    want = flake_hash(files)
    done = {"last_hash": want, "record_hash": want, "last_toplevel": "/s",
            "current_system": "/s", "profile_system": "/s"}
    assert plan_rebuild(Action.SWITCH, files, _state(files, **done)).noop == "already active"
    assert plan_rebuild(Action.BOOT, files, _state(files, **done)).noop == \
        "already the boot default"
    assert plan_rebuild(Action.BUILD, files, _state(files, **done)).noop is None
    # Anything off and the host is asked: an edited file, a stray, a record that differs.
    edited = plan_rebuild(Action.SWITCH, {**files, "flake.nix": b"{ x = 1; }"},
                          _state(files, **done))
    assert edited.noop is None and edited.send and edited.changed == ["flake.nix"]
    stray = DeployState(files=file_hashes(files), strays=("nixos",), last_hash=want,
                        record_hash=want, last_toplevel="/s", current_system="/s",
                        profile_system="/s")
    assert plan_rebuild(Action.SWITCH, files, stray).send
    assert plan_rebuild(Action.SWITCH, files, _state(files, **{**done, "record_hash": "x"})
                        ).noop is None
    assert plan_rebuild(Action.SWITCH, files, _state(files, **{**done, "current_system": "/o"})
                        ).noop is None
    assert plan_rebuild(Action.PUSH, files, _state(files)).noop == "flake already there"
    assert plan_rebuild(Action.SWITCH, files, _state(files, **done)).preview(Action.SWITCH) \
        == "would build, switch"


def test_the_deploy_state_fact_reads_files_strays_and_the_system():
    sha = "a" * 64
    state = parse_deploy_state("\n".join([
        "generation system-12-link", "current /nix/store/x-system", "profile /nix/store/y",
        "last-deploy abc /nix/store/x-system", f"record {sha}", f"{sha}  ./hosts/two words.json",
        f"{sha}  ./flake.nix", "stray nixos"]))
    assert list(state.files.items()) == [("flake.nix", sha), ("hosts/two words.json", sha)]
    assert state.strays == ("nixos",) and state.generation == 12
    assert (state.current_system, state.profile_system) == ("/nix/store/x-system", "/nix/store/y")
    assert (state.last_hash, state.last_toplevel, state.record_hash) == \
        ("abc", "/nix/store/x-system", sha)
    empty = parse_deploy_state("generation \ncurrent \nprofile \nlast-deploy \nrecord ")
    assert empty.generation is None and empty.last_hash is None and empty.files == {}
    with pytest.raises(FactParseError):
        parse_deploy_state("garbage line")


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_the_deploy_state_command_on_a_real_flake_directory(tmp_path: Path, shell: str):
    """One find hands the files to sha256sum and names the strays (a link, an empty
    directory); a missing flake directory is no files, and the command ends normally."""
    flake = tmp_path / "flake"
    (flake / "hosts" / "empty").mkdir(parents=True)
    (flake / "flake.nix").write_text("{ }")
    (flake / "hosts" / "two words.json").write_text("{}")
    (flake / ".hidden").write_text("x")
    (flake / "link").symlink_to("flake.nix")
    for preflight in (False, True):
        result = subprocess.run([shell, "-c", deploy_state_command(str(flake), preflight)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        state = parse_deploy_state(result.stdout)
        assert state.files == {p: hashlib.sha256(content).hexdigest() for p, content in [
            (".hidden", b"x"), ("flake.nix", b"{ }"), ("hosts/two words.json", b"{}")]}
        assert sorted(state.strays) == ["hosts/empty", "link"]
    missing = subprocess.run([shell, "-c", deploy_state_command(str(tmp_path / "gone"), False)],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 0 and parse_deploy_state(missing.stdout).files == {}


def test_a_step_after_the_remote_one_replaces_or_adds_to_its_result():
    outcome = protocol.parse("dex5550", Action.SWITCH, [
        "NIXFLEET generation_before=3", "NIXFLEET result=changed", "NIXFLEET reason=switch done",
        "NIXFLEET generation_after=4"])
    outcome.after(StepOutcome("confirmed over a fresh SSH connection"))
    assert (outcome.result, outcome.reason) == \
        (Result.CHANGED, "switch done; confirmed over a fresh SSH connection")
    outcome.after(StepOutcome("no confirmation", Result.ROLLED_BACK, 3))
    assert (outcome.result, outcome.reason, outcome.generation_after) == \
        (Result.ROLLED_BACK, "no confirmation", 3)


def test_flake_delta_sends_only_changed_files_with_a_manifest():
    files = {"flake.nix": b"{ }", "hosts/a.json": b"{}", "hosts/b.json": b"[]"}
    remote = file_hashes({"flake.nix": b"{ }", "hosts/a.json": b"old", "gone.nix": b"x"})
    changed = changed_paths(files, remote)
    assert changed == ["hosts/a.json", "hosts/b.json"]
    with tarfile.open(fileobj=io.BytesIO(delta_tarball(files, changed))) as tar:
        names = tar.getnames()
        manifest = tar.extractfile(MANIFEST).read().decode()  # type: ignore[union-attr]
    assert names == ["hosts/a.json", "hosts/b.json", MANIFEST]
    # sha256sum's format, sorted by path: the host checks and hashes it with coreutils alone.
    assert manifest == "".join(f"{hashlib.sha256(files[p]).hexdigest()}  {p}\n"
                               for p in sorted(files))
    assert flake_hash(files) == hashlib.sha256(manifest.encode()).hexdigest()
    assert flake_hash(files) != flake_hash({**files, "flake.nix": b"{ x = 1; }"})


def test_ssh_argv_checks_host_keys_and_uses_the_hosts_connection_data():
    data = {"ssh_hostname": "10.0.0.5", "ssh_port": 2222, "ssh_user": "admin",
            "ssh_key": "/k", "ssh_known_hosts_file": "/kh"}
    argv = ssh_argv(data)
    assert argv[-1] == "admin@10.0.0.5"
    assert "StrictHostKeyChecking=yes" in argv and "UserKnownHostsFile=/kh" in argv
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-i") + 1] == "/k"


@pytest.fixture
def web():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/ok" else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://{{address}}:{server.server_address[1]}"
    server.shutdown()


def test_http_checks_from_the_deployer(web):
    ok = HealthCheck(name="ok", http=f"{web}/ok", timeout=2, period=1)
    bad = HealthCheck(name="bad", http=f"{web}/down", timeout=2, period=1)
    assert safety.http_failure(ok, "127.0.0.1") is None
    failure = safety.http_failure(bad, "127.0.0.1")
    assert failure is not None and failure.startswith("check bad: http://127.0.0.1:")
    assert failure.endswith("gave HTTP 503, expected HTTP 200")


def test_nixfleet_deploy_passes_its_options_to_pyinfra(monkeypatch, root):
    seen: list[list[str]] = []

    def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        seen.append(argv)
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(subprocess, "run", run)
    args = build_parser().parse_args(["--inventory", str(root / "inventory.py"), "deploy",
                                      "switch", "--limit", "nvidia", "--reboot", "--no-rollback",
                                      "--fail-percent", "50"])
    assert cmd_deploy(args) == 0
    argv = seen[0]
    assert argv[1:4] == ["-y", "inventory.py", str(root / "deploys" / "switch.py")]
    assert argv[4:] == ["--limit", "nvidia", "--fail-percent", "50", "--data",
                        "no_rollback=true", "--data", "reboot=true"]


class _Operation:
    """What DeployRun reads of pyinfra's OperationMeta."""

    def __init__(self, lines: list[str] | None) -> None:
        self.lines = lines

    def is_complete(self) -> bool:
        return self.lines is not None

    @property
    def stdout_lines(self) -> list[str]:
        return self.lines or []

    stderr_lines: list[str] = []


@dataclass(frozen=True)
class _Host:
    name: str


def _run(tmp_path, monkeypatch, stage):
    from types import SimpleNamespace

    from pyinfra.api.state import StateStage

    from nixfleet.deploy import DeployRun, HostPlan
    from nixfleet.outcome import HostOutcome

    monkeypatch.setenv("NIXFLEET_INVENTORY", str(tmp_path / "inventory.py"))
    state = SimpleNamespace(current_stage=getattr(StateStage, stage),
                            failed_hosts={_Host("p510")}, callbacks=[],
                            inventory=[_Host(n) for n in ("p620", "razer", "p510", "dex5550")])
    state.add_callback_handler = state.callbacks.append
    run = DeployRun(state)  # type: ignore[arg-type]
    preview = HostOutcome("razer", Action.SWITCH, Result.WOULD_CHANGE, "would build, switch")
    run.plans["razer"] = HostPlan(Action.SWITCH, _Operation([  # type: ignore[arg-type]
        "NIXFLEET generation_before=3", "NIXFLEET result=changed", "NIXFLEET reason=switch done",
        "NIXFLEET generation_after=4", "NIXFLEET duration=0.50"]), preview)
    noop = HostOutcome("p620", Action.SWITCH, Result.UNCHANGED, "already active",
                       generation_before=7, generation_after=7)
    run.plans["p620"] = HostPlan(Action.SWITCH, _Operation(None), noop,  # type: ignore[arg-type]
                                 noop=True)
    run.plans["dex5550"] = HostPlan(Action.SWITCH, _Operation(None), preview)  # type: ignore[arg-type]
    run.record("razer", StepOutcome("confirmed over a fresh SSH connection"))
    return run


def test_a_changed_host_is_verified_and_a_failed_check_fails_it(tmp_path, monkeypatch, capsys):
    """After pyinfra's last operation, the hosts the run changed (with verify in their plan)
    are verified; a failed check makes the host one of pyinfra's failed hosts (exit 1) and
    joins the summary."""
    from nixfleet.verify import run as verify_run
    from nixfleet.verify.report import Failure, HostVerification, Verification

    asked = []

    def fake_verify(inventory, hosts, workers=None, junit=None, identities=(), log=None):
        asked.append(list(hosts))
        return Verification({"razer": HostVerification("razer", 20, [Failure(
            "ollama: ollama serves the configured default model",
            "default model mistral-small3.1:latest missing (has: none)")])})

    monkeypatch.setattr(verify_run, "verify", fake_verify)
    run = _run(tmp_path, monkeypatch, "Disconnect")
    for plan in run.plans.values():
        plan.verify = True
    run.settle()  # what the callback does after the last operation
    assert asked == [["razer"]]  # changed; p620 was unchanged, dex5550 never ran
    assert {h.name for h in run.state.failed_hosts} == {"p510", "razer"}
    run.finish()
    out = capsys.readouterr().out
    assert ("razer: FAILED ollama: ollama serves the configured default model: default model "
            "mistral-small3.1:latest missing (has: none)") in out
    rows = {r["host"]: r for r in json.loads(
        (tmp_path / ".deploy-logs" / run.deploy_id / "summary.json").read_text())}
    assert rows["razer"]["verification"]["ok"] is False
    assert rows["razer"]["verification"]["failures"][0]["line"].startswith("default model")
    assert rows["p620"]["verification"] is None


def test_the_deploy_run_prints_one_summary_and_writes_typed_json(tmp_path, monkeypatch, capsys):
    run = _run(tmp_path, monkeypatch, "Disconnect")
    run.finish()
    out = capsys.readouterr().out
    rows = {r["host"]: r for r in json.loads(
        (tmp_path / ".deploy-logs" / run.deploy_id / "summary.json").read_text())}
    assert (rows["razer"]["result"], rows["razer"]["generation_after"],
            rows["razer"]["duration"]) == ("changed", 4, 0.5)
    assert rows["razer"]["reason"] == "switch done; confirmed over a fresh SSH connection"
    assert (rows["p620"]["result"], rows["p620"]["generation_before"]) == ("unchanged", 7)
    assert rows["dex5550"]["result"] == "failed"  # queued, never run: pyinfra stopped it
    assert (rows["p510"]["result"], rows["p510"]["action"]) == ("unreachable", None)
    assert out.count(f"nixfleet deploy {run.deploy_id}") == 1 and "summary: " in out


def test_a_dry_run_shows_what_would_happen_and_writes_nothing(tmp_path, monkeypatch, capsys):
    run = _run(tmp_path, monkeypatch, "Prepare")
    monkeypatch.setattr("sys.argv", ["pyinfra", "inventory.py", "deploys/switch.py", "--dry"])
    run.finish()
    out = capsys.readouterr().out
    assert "what would happen (nothing was changed)" in out and "would-change" in out
    assert "summary:" not in out and not (tmp_path / ".deploy-logs").exists()


def test_a_declined_deploy_says_nothing_was_deployed_and_exits_1(tmp_path, monkeypatch, capsys):
    run = _run(tmp_path, monkeypatch, "Prepare")
    monkeypatch.setattr("sys.argv", ["pyinfra", "inventory.py", "deploys/switch.py"])
    exits: list[int] = []
    monkeypatch.setattr("os._exit", exits.append)
    run.finish()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "nixfleet: nothing was deployed\n"
    assert exits == [1]


class _Terminal(io.StringIO):
    def __init__(self, typed: str, terminal: bool) -> None:
        super().__init__(typed)
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


@pytest.mark.parametrize(("typed", "terminal", "goes_on"), [
    ("\n", True, True),  # Enter on a terminal: the only way on
    ("n\n", True, False), ("y\n", True, False), ("", True, False),  # end of input: Ctrl-D
    ("\n", False, False), ("", False, False),  # no terminal: an Enter piped in, /dev/null
])
def test_only_enter_typed_on_a_terminal_confirms_a_deploy(monkeypatch, typed, terminal,
                                                          goes_on):
    from nixfleet.deploy import confirm

    monkeypatch.setattr("sys.stdin", _Terminal(typed, terminal))
    assert confirm("Detected changes displayed above, skip this step with -y") is goes_on


def test_the_summary_lists_hosts_in_inventory_order(tmp_path, monkeypatch, capsys):
    """Plans are made as the hosts' facts come back (razer, p620, dex5550 here; p510 failed
    to connect): the summary and summary.json follow the inventory."""
    from pyinfra.api.state import StateStage

    run = _run(tmp_path, monkeypatch, "Disconnect")
    run.finish()
    rows = json.loads((tmp_path / ".deploy-logs" / run.deploy_id / "summary.json").read_text())
    assert [r["host"] for r in rows] == ["p620", "razer", "p510", "dex5550"]
    out = capsys.readouterr().out
    assert [out.index(f"│ {h} ") for h in ("p620", "razer", "p510", "dex5550")] == sorted(
        out.index(f"│ {h} ") for h in ("p620", "razer", "p510", "dex5550"))
    monkeypatch.setattr("sys.argv", ["pyinfra", "inventory.py", "deploys/switch.py", "--dry"])
    run.state.current_stage = StateStage.Prepare  # not executed: --dry's table of previews
    run.finish()
    out = capsys.readouterr().out
    assert "what would happen" in out and out.index("│ p620 ") < out.index("│ razer ")


def test_a_locked_out_host_is_one_line_naming_the_holder_and_fails(tmp_path, monkeypatch,
                                                                   capsys):
    """deploy.sh exits EXIT_LOCKED with its lines (pyinfra takes that exit as success, so it
    prints none of them): the host is one stderr line, one of pyinfra's failed hosts, and its
    row keeps the generation the plan's fact read."""
    from nixfleet.deploy import HostPlan
    from nixfleet.outcome import HostOutcome

    run = _run(tmp_path, monkeypatch, "Disconnect")
    reason = "locked by bob@desk (deploy 20261207-101010-7) since 2026-12-07 10:10:10 UTC"
    run.plans["dex5550"] = HostPlan(Action.SWITCH, _Operation([  # type: ignore[arg-type]
        "NIXFLEET result=locked", f"NIXFLEET reason={reason}"]), HostOutcome(
        "dex5550", Action.SWITCH, Result.WOULD_CHANGE, "would build, switch",
        generation_before=12))
    run.settle()  # what the callback does after the last operation
    assert capsys.readouterr().err == f"nixfleet: dex5550: {reason}\n"
    assert {h.name for h in run.state.failed_hosts} == {"p510", "dex5550"}
    run.finish()
    rows = {r["host"]: r for r in json.loads(
        (tmp_path / ".deploy-logs" / run.deploy_id / "summary.json").read_text())}
    assert (rows["dex5550"]["result"], rows["dex5550"]["reason"]) == ("locked", reason)
    assert (rows["dex5550"]["generation_before"], rows["dex5550"]["generation_after"]) == (12, 12)


# Two hosts' systems, each made of its own data only: a change of web2's data changes every
# host's flake files, and web2's system alone.
DRY_FLAKE = b"""{ outputs = _: { nixosConfigurations = builtins.mapAttrs (name: _: {
  config.system.build.toplevel = derivation {
    name = "nixos-system-${name}"; system = "x86_64-linux"; builder = "/bin/sh";
    args = [ "-c" "echo ${builtins.readFile (./hosts + "/${name}.json")} > $out" ];
  }; }) { web1 = 0; web2 = 0; }; }; }
"""
OFFLINE = "build-users-group =\nsandbox = false\nsubstituters =\n"


def test_dry_run_tells_a_system_change_from_a_flake_only_change(tmp_path):
    """--dry evaluates each host's toplevel (no build) and compares it with the running one:
    after web2's data changed, web1 receives new flake files but keeps its system."""
    from nixfleet import localbuild
    from nixfleet.deploy import dry_preview

    before = {"flake.nix": DRY_FLAKE, "hosts/web1.json": b"1", "hosts/web2.json": b"1"}
    after = {**before, "hosts/web2.json": b"2"}
    running: dict[str, str] = {}
    for name in ("web1", "web2"):
        path, error = localbuild.evaluate(before, "path:/etc/nixos", name, OFFLINE, tmp_path)
        assert path is not None and path.endswith(f"-nixos-system-{name}"), error
        running[name] = path
    otherwise = "would send 1 changed flake files, build, switch"

    def preview(name: str, files: dict[str, bytes]) -> str:
        state = _state(before, current_system=running[name], profile_system=running[name])
        return dry_preview(Action.SWITCH, name, files, "path:/etc/nixos", state, OFFLINE, 1,
                           otherwise)

    assert preview("web1", after) == ("would send 1 changed flake files: flake only (the "
                                      "system stays as is)")
    assert preview("web2", after) == otherwise
    broken = {**after, "flake.nix": b"{ outputs = _: { }; }"}  # cannot evaluate: as before
    assert preview("web1", broken) == otherwise


# --- what pyinfra prints of a host the deploy did not deploy ----------------------------------


@pytest.mark.parametrize(("answer", "turn", "status"), [
    ("printf 'NIXFLEET result=locked\\nNIXFLEET reason=locked by bob@desk\\n'; exit 75", None,
     None),
    ("echo never run; exit 1", "not attempted: wave 1 stopped the rollout", None),
    ("printf 'NIXFLEET result=changed\\nNIXFLEET reason=switch done\\n'", None, "Success"),
], ids=["locked", "not-attempted", "deployed"])
def test_pyinfra_says_success_only_of_a_host_the_deploy_deployed(monkeypatch, caplog, answer,
                                                                 turn, status):
    """The rebuild operation run by pyinfra on @local, deploy.sh replaced by its answer: a host
    that found another deploy's lock (exit EXIT_LOCKED, a success to pyinfra) or whose wave never
    came gets no "[host] Success" line; a deployed one does."""
    from pyinfra.api import Config, Inventory, State
    from pyinfra.api.connect import connect_all
    from pyinfra.api.operation import add_op
    from pyinfra.api.operations import run_ops

    from nixfleet.operations import nixos

    monkeypatch.setattr(protocol, "SCRIPT", answer)
    inventory = Inventory((["@local"], {}))
    state = State(inventory, Config())
    connect_all(state)
    files = {"flake.nix": b"{ }"}
    add_op(state, nixos.rebuild, name="nixos-rebuild switch", action=Action.SWITCH,
           flake_files=files, flake_dir="/nonexistent", flake_ref="path:/nonexistent",
           deploy_id="test", owner="bob@desk", known=DeployState(files={}),
           turn=None if turn is None else (lambda host: turn),
           _success_exit_codes=[0, protocol.EXIT_LOCKED])
    with caplog.at_level(logging.INFO, logger="pyinfra"):
        run_ops(state)
    said = [ANSI.sub("", r.getMessage()) for r in caplog.records]
    assert not state.failed_hosts, said
    assert [line for line in said if line.startswith("[@local]") and line.endswith(
        ("Success", "No changes"))] == ([f"[@local] {status}"] if status else []), said


ANSI = re.compile(r"\x1b\[[0-9;]*m")
