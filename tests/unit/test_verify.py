"""Post-deploy verification without hosts: which checks run where (from the inventory), the
report and its table, the SSH config, and `nixfleet verify`'s bad input."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from nixfleet.inventory import load_inventory_file
from nixfleet.target import target_named
from nixfleet.verify.plugin import check_name, one_line, ssh_config_text
from nixfleet.verify.report import Failure, HostVerification, Verification
from tests.fleet.support import Reads, listens, run_together, started_at

ROOT = Path(__file__).resolve().parents[2]

# A suite that needs no host: it checks the inventory's view only (spec), so what runs where
# and what the report says can be seen without SSH.
SUITE = '''
import pytest


@pytest.mark.fleet(hosts=lambda spec, session: spec.features.ai.ollama)
def test_the_host_runs_ollama(spec):
    assert spec.features.ai.ollama


@pytest.mark.fleet(each=lambda spec, session: [(g.slot, g) for g in spec.gpus], arg="gpu")
def test_its_gpu_is_not_intel(spec, gpu):
    assert gpu.vendor != "intel", f"{gpu.slot} is an Intel GPU"


@pytest.mark.fleet(hosts=lambda spec, session: False)
def test_no_host_needs_this(spec):
    raise AssertionError("never runs")


def test_a_note(spec, note):
    if spec.name == "p620":
        note("reboot required")
'''


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    """A configuration repository (the real inventory) whose tests/fleet holds SUITE beside
    the suite's conftest and support."""
    for name in ("inventory.py", "known_hosts"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "group_data", tmp_path / "group_data")
    fleet = tmp_path / "tests" / "fleet"
    fleet.mkdir(parents=True)
    for name in ("__init__.py", "fleet/__init__.py", "fleet/conftest.py", "fleet/support.py"):
        shutil.copy(ROOT / "tests" / name, tmp_path / "tests" / name)
    (fleet / "test_demo.py").write_text(textwrap.dedent(SUITE))
    return tmp_path


def run_suite(repo: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    report = repo / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/fleet", "-p", "no:cacheprovider", "-q",
         f"--verify-report={report}", *args],
        cwd=repo, capture_output=True, text=True, timeout=120)
    return result, json.loads(report.read_text()) if report.exists() else {}


def test_each_check_runs_on_the_hosts_the_inventory_gives_it(suite):
    result, report = run_suite(suite)
    assert result.returncode == 1, result.stdout  # the Intel GPUs fail their check
    hosts = {h["host"]: h for h in report["hosts"]}
    # The Ollama check on p620 and p510 only (ai.ollama); the GPU check once per GPU (razer
    # has two); the unmarked check everywhere.
    assert {h: hosts[h]["passed"] + len(hosts[h]["failures"]) for h in hosts} == {
        "p620": 3, "razer": 3, "p510": 3, "dex5550": 2}
    assert "1 deselected" in result.stdout  # the check no host needs: left out, not skipped
    assert "skipped" not in result.stdout
    assert hosts["p620"]["notes"] == ["reboot required"] and hosts["razer"]["notes"] == []


def test_a_failed_check_is_one_line_naming_host_and_check(suite):
    result, report = run_suite(suite, "--hosts=nvidia")  # razer and p510
    hosts = {h["host"]: h for h in report["hosts"]}
    assert set(hosts) == {"razer", "p510"}
    assert hosts["p510"]["ok"] and hosts["p510"]["passed"] == 3
    assert hosts["razer"]["failures"] == [{
        "check": "demo: its gpu is not intel (0000:00:02.0)",
        "line": "0000:00:02.0 is an Intel GPU"}]
    assert "  razer: demo: its gpu is not intel (0000:00:02.0): 0000:00:02.0 is an Intel GPU\n" \
        in result.stdout
    assert result.returncode == 1


def test_each_host_is_checked_in_a_process_of_its_own(suite):
    """Forked after collection, one process per host; --fleet-workers 1 runs them in turn,
    with the same result."""
    (suite / "tests" / "fleet" / "test_pid.py").write_text(textwrap.dedent('''
        import os

        def test_the_process(spec, note):
            note(f"pid {os.getpid()}")
    '''))
    forked, report = run_suite(suite, "-k", "process")
    pids = {h["host"]: h["notes"][0] for h in report["hosts"]}
    assert len(set(pids.values())) == 4, pids
    assert forked.returncode == 0 and "4 passed" in forked.stdout
    in_turn, report = run_suite(suite, "-k", "process", "--fleet-workers=1")
    assert len({h["notes"][0] for h in report["hosts"]}) == 1
    assert in_turn.returncode == 0 and "4 passed" in in_turn.stdout


@pytest.mark.parametrize("hosts", ["dex5550", "dex5550,razer"])
def test_a_host_that_does_not_answer_fails_each_check_at_once_in_one_line(suite, hosts):
    """dex5550 (and razer) at a port where nothing listens: each of its checks fails with ssh's
    reason at once (one connection attempt, not one per command), the table says it once;
    alone, or beside another host (in processes forked after the connections were tried)."""
    inventory = suite / "inventory.py"
    for name in hosts.split(","):
        text = inventory.read_text()
        start = text.index(f'("{name}", {{')
        at = text.index('"ssh": {', start) + len('"ssh": {')
        inventory.write_text(text[:at] + '"host": "127.0.0.1", "port": 1, ' + text[at:])
    (suite / "tests" / "fleet" / "test_ssh.py").write_text(textwrap.dedent('''
        def test_it_answers(host):
            assert host.run("true").rc == 0

        def test_it_answers_again(host):
            assert host.run("true").rc == 0
    '''))
    result, report = run_suite(suite, "-k", "answers", f"--hosts={hosts}")
    assert {h["host"] for h in report["hosts"]} == set(hosts.split(","))
    for host in report["hosts"]:
        lines = {f["line"] for f in host["failures"]}
        assert len(host["failures"]) == 2 and len(lines) == 1, host
        (line,) = lines
        assert line.startswith("unreachable over SSH: ") and "Connection refused" in line, line
        assert f"  {host['host']}: every check (2): {line}\n" in result.stdout
    assert result.returncode == 1


def _point_at(inventory: Path, name: str, address: str, port: int) -> None:
    text = inventory.read_text()
    start = text.index(f'("{name}", {{')
    at = text.index('"ssh": {', start) + len('"ssh": {')
    inventory.write_text(text[:at] + f'"host": "{address}", "port": {port}, ' + text[at:])


class SilentSshd:
    """A listening socket that accepts connections and never answers (a stopped sshd: the
    kernel completes the handshake, no banner comes); it counts the connections."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.port = self.socket.getsockname()[1]
        self.accepted: list[socket.socket] = []  # held open: the client gives up, not this
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.accepted.append(self.socket.accept()[0])

    def close(self) -> None:
        self.socket.shutdown(socket.SHUT_RDWR)
        self.socket.close()
        self.thread.join(timeout=5)
        for connection in self.accepted:
            connection.close()


@pytest.mark.parametrize("hosts", ["dex5550", "dex5550,razer"])
def test_a_host_whose_sshd_is_silent_is_tried_once(suite, hosts):
    """dex5550's sshd accepts and never answers: its three checks fail with ssh's reason
    after one connection attempt (one connect timeout), not one each; alone, or beside
    another host (tried before the per-host processes fork, not again in them)."""
    silent = SilentSshd()
    try:
        _point_at(suite / "inventory.py", "dex5550", "127.0.0.1", silent.port)
        (suite / "tests" / "fleet" / "test_ssh.py").write_text(textwrap.dedent('''
            def test_it_answers(host):
                assert host.run("true").rc == 0

            def test_it_answers_again(host):
                assert host.run("true").rc == 0

            def test_it_answers_a_third_time(host):
                assert host.run("true").rc == 0
        '''))
        result, report = run_suite(suite, "-k", "answers", f"--hosts={hosts}")
    finally:
        silent.close()
    host = next(h for h in report["hosts"] if h["host"] == "dex5550")
    assert [f["line"] for f in host["failures"]] == [
        "unreachable over SSH: Connection timed out during banner exchange"] * 3, host
    assert len(silent.accepted) == 1, f"{len(silent.accepted)} connection attempts"
    assert result.returncode == 1


def test_an_unknown_host_pattern_is_one_clear_line(suite):
    result, _ = run_suite(suite, "--hosts=nope")
    assert result.returncode != 0
    assert "--limit 'nope' matches no host or group" in result.stdout + result.stderr


def test_the_report_table_names_each_failed_check_in_one_line():
    result = Verification()
    result.hosts["p620"] = HostVerification("p620", 26, notes=["reboot required"])
    result.hosts["razer"] = HostVerification("razer", 20, [Failure(
        "monitoring: the exporter serves its metrics and is scraped (nixos-exporter)",
        "nothing listens on :9101")])
    assert result.lines() == [
        "host   checks  result",
        "p620       26  ok (reboot required)",
        "razer      21  FAILED 1",
        "  razer: monitoring: the exporter serves its metrics and is scraped (nixos-exporter): "
        "nothing listens on :9101",
    ]
    assert not result.ok
    again = Verification.from_json(json.loads(json.dumps(result.to_json())))
    assert again.lines() == result.lines()


def test_check_names_read_like_sentences():
    assert check_name("tests/fleet/test_ollama.py::test_ollama_serves_the_configured_default_"
                      "model[p620]") == "ollama: ollama serves the configured default model"
    assert check_name("tests/fleet/test_agenix.py::test_the_secret_is_in_place[p620-api-openai]"
                      ) == "agenix: the secret is in place (api-openai)"


def test_a_failure_is_one_line():
    assert one_line(AssertionError("nothing listens on :9101\nassert False")) \
        == "nothing listens on :9101"
    assert one_line(RuntimeError("CommandResult(command=b'id -u', exit_status=255, ...)")) \
        == "SSH failed (host unreachable or its key refused)"
    assert one_line(KeyError("x")) == "KeyError: 'x'"


class CountingHost:
    """This machine as a testinfra host, counting the commands it runs (each one an SSH
    command on a fleet host)."""

    def __init__(self) -> None:
        import testinfra

        self.local = testinfra.get_host("local://")
        self.backend = self.local.backend
        self.commands: list[str] = []

    def run(self, command: str):
        self.commands.append(command)
        return self.local.run(command)


READ_TOGETHER = [
    "printf 'no newline at the end'",
    "echo out; echo err >&2; exit 3",
    "printf 'caf\\303\\251\\n\\n'",  # not ASCII; blank lines
    "cat",  # stdin: nothing
    "echo only err >&2",
]


def test_a_hosts_reads_run_in_one_command_and_answer_as_each_alone():
    host = CountingHost()
    together = run_together(host, READ_TOGETHER)
    assert len(host.commands) == 1
    for command in READ_TOGETHER:
        alone = host.local.run(command)
        answer = together[command]
        assert (answer.rc, answer.stdout, answer.stderr) == (alone.rc, alone.stdout,
                                                             alone.stderr), command
    assert together["printf 'caf\\303\\251\\n\\n'"].stdout == "caf\u00e9\n\n"


def test_a_read_not_among_the_hosts_reads_runs_when_asked():
    host = CountingHost()
    reads = Reads(host, ["echo read", "exit 3"])
    assert reads.check_output("echo read") == "read" and len(host.commands) == 1
    with pytest.raises(AssertionError, match=r"^Unexpected exit code 3 for "):
        reads.check_output("exit 3")
    assert reads.check_output("echo live") == "live"
    assert host.commands[1:] == ["echo live"]


def test_listening_sockets_and_exporter_starts_are_read_from_their_output():
    ss = ("State  Recv-Q Send-Q Local Address:Port  Peer Address:PortProcess\n"
          "LISTEN 0      5            0.0.0.0:9102       0.0.0.0:*\n"
          "LISTEN 0      4096               *:9100             *:*\n"
          "LISTEN 0      128             [::]:22            [::]:*\n")
    assert [listens(ss, port) for port in (9100, 9102, 22, 9101, 910)] == [
        True, True, True, False, False]
    starts = ("Id=prometheus-node-exporter.service\nActiveEnterTimestamp=@1796025483\n\n"
              "Id=nixfleet-nixos-exporter.service\nActiveEnterTimestamp=\n\n"
              "Id=nixfleet-systemd-exporter.service\nActiveEnterTimestamp=@1796025490\n")
    assert started_at(starts) == {"node-exporter": 1796025483, "systemd-exporter": 1796025490}


def test_the_ssh_config_checks_host_keys_strictly_and_multiplexes():
    fleet = load_inventory_file(ROOT / "inventory.py", target_named("lab"))
    text = ssh_config_text(fleet, ["razer"], Path("/tmp/control"))
    data = fleet.host_data["razer"]
    assert text.splitlines()[:4] == ["Host razer", f"  HostName {data['ssh_hostname']}",
                                     "  Port 22", "  User root"]
    for line in ("StrictHostKeyChecking yes", "BatchMode yes", "ControlMaster auto",
                 "ControlPath /tmp/control/%C", f"IdentityFile {data['ssh_key']}",
                 f"UserKnownHostsFile {data['ssh_known_hosts_file']}"):
        assert f"  {line}\n" in text


def nixfleet(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nixfleet", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("args", "message"), [
    (["--limit", "nope"], "nixfleet: error: --limit 'nope' matches no host or group"),
    (["-n", "0"], "nixfleet: error: -n must be at least 1, got 0"),
    (["--junit", "/nonexistent/dir/report.xml"],
     "nixfleet: error: --junit /nonexistent/dir/report.xml: its directory does not exist"),
])
def test_verify_refuses_bad_input_in_one_line(args, message):
    result = nixfleet("verify", *args)
    assert result.returncode == 1
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1
    assert result.stdout == ""


def _tmp_logs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("nixfleet-verify-*.log")) | {
        p for p in Path(tempfile.gettempdir()).glob("nixfleet-verify-*") if p.is_dir()
        and p.name != f"nixfleet-verify-{os.getuid()}"}  # the hosts' SSH control sockets


def test_a_failed_verification_keeps_its_log_under_deploy_logs_and_nothing_in_tmp(suite):
    before = _tmp_logs()
    result = nixfleet("verify", "--limit", "razer", cwd=suite)  # razer's Intel GPU fails
    assert result.returncode == 1
    (log,) = (suite / ".deploy-logs").glob("verify-*/verify.log")
    assert f"pytest's output: {log}\n" in result.stdout
    assert "is an Intel GPU" in log.read_text()
    assert _tmp_logs() == before
    passed = nixfleet("verify", "--limit", "p510", cwd=suite)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert list((suite / ".deploy-logs").glob("verify-*/verify.log")) == [log]  # its own: gone


def test_a_killed_verification_ends_its_pytest_and_leaves_nothing_in_tmp(suite):
    (suite / "tests" / "fleet" / "test_slow.py").write_text(textwrap.dedent('''
        import time

        def test_slowly(spec):
            time.sleep(60)
    '''))
    before = _tmp_logs()
    run = subprocess.Popen([sys.executable, "-m", "nixfleet", "verify", "--limit", "p510"],
                           cwd=suite, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        logs = suite / ".deploy-logs"
        deadline = time.monotonic() + 30
        while not any(logs.glob("verify-*/verify.log")) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)  # pytest collecting
        run.terminate()
        assert run.wait(timeout=10) == 128 + 15
    finally:
        run.kill()
        run.communicate()
    survivors = subprocess.run(["pgrep", "-f", str(suite)], capture_output=True, text=True)
    assert survivors.stdout == ""
    assert _tmp_logs() == before


def test_verify_without_a_suite_says_so(tmp_path):
    for name in ("inventory.py", "known_hosts"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "group_data", tmp_path / "group_data")
    result = nixfleet("verify", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (f"nixfleet: error: no verification suite: "
                             f"{tmp_path / 'tests' / 'fleet'} is missing\n")
