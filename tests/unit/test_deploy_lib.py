"""Deployer-side pieces of deploys that need no host: results, SSH arguments, HTTP checks,
the flake delta and the `nixfleet deploy` wrapper's pyinfra command line."""

from __future__ import annotations

import io
import subprocess
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nixfleet import deploy_cli, safety
from nixfleet.cli import build_parser
from nixfleet.deploy import parse_result
from nixfleet.flake import MANIFEST, changed_paths, delta_tarball, file_hashes, flake_hash
from nixfleet.model import HealthCheck
from nixfleet.ssh import ssh_argv


def test_parse_result_reads_the_hosts_lines():
    lines = ["noise", "NIXFLEET generation_before=3", "NIXFLEET diff=go: ∅ → 1.23.4, +11.1 KiB",
             "NIXFLEET closure_before=1048576", "NIXFLEET closure_after=3145728",
             "NIXFLEET phase_build=0.224", "NIXFLEET result=changed",
             "NIXFLEET reason=switch done", "NIXFLEET generation_after=4"]
    result = parse_result("razer", "switch", lines)
    assert (result.result, result.generation_before, result.generation_after) == \
        ("changed", "3", "4")
    assert result.diff == ["go: ∅ → 1.23.4, +11.1 KiB"]
    assert result.closure_delta == "+2.0 MiB"
    assert result.phases == {"build": 0.224}
    assert parse_result("p510", "switch", []).reason == "no result from the host"


def test_flake_delta_sends_only_changed_files_with_a_manifest():
    files = {"flake.nix": b"{ }", "hosts/a.json": b"{}", "hosts/b.json": b"[]"}
    remote = file_hashes({"flake.nix": b"{ }", "hosts/a.json": b"old", "gone.nix": b"x"})
    changed = changed_paths(files, remote)
    assert changed == ["hosts/a.json", "hosts/b.json"]
    with tarfile.open(fileobj=io.BytesIO(delta_tarball(files, changed))) as tar:
        names = tar.getnames()
        manifest = tar.extractfile(MANIFEST).read().decode()  # type: ignore[union-attr]
    assert names == ["hosts/a.json", "hosts/b.json", MANIFEST]
    assert manifest.split() == sorted(files)
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
    args = build_parser().parse_args(["-i", str(root / "inventory.py"), "deploy", "switch",
                                      "--limit", "nvidia", "--reboot", "--no-rollback",
                                      "--fail-percent", "50"])
    assert deploy_cli.cmd_deploy(args) == 0
    argv = seen[0]
    assert argv[1:4] == ["-y", "inventory.py", str(root / "deploys" / "switch.py")]
    assert argv[4:] == ["--limit", "nvidia", "--fail-percent", "50", "--data",
                        "no_rollback=true", "--data", "reboot=true"]
