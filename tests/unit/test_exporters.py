"""The NixOS and systemd exporters, run against a host laid out in a directory and stand-in
tools (nix, nix-store, systemctl, lspci, nvidia-smi, rocm-smi) that print outputs captured
from the real tools (tests/fixtures/*/SOURCES.md) and log every call."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import nixfleet.exporters
from nixfleet.exporters import nixos, serve, systemd
from nixfleet.exporters.sources import Refresher, Source

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
STORE = "/nix/store"
GENERATION_TIMES = {1: 1_700_000_000, 2: 1_700_086_400, 3: 1_700_172_800}
NIX_DAEMON_SHOW = (
    "Id=nix-daemon.service\nLoadState=loaded\nActiveState=inactive\nSubState=dead\n\n"
    "Id=nix-daemon.socket\nLoadState=loaded\nActiveState=active\nSubState=listening\n"
)
PATH_INFO = (
    f"{STORE}/aaa-nixos-system-p620-25.05.20250101.abc\t  10000\n"
    f"{STORE}/bbb-hello-2.12.1\t  2500\n"
    f"{STORE}/ccc-hello-2.12.1.drv\t  1200\n"
    f"{STORE}/ddd-source\t  300\n"
)
GC_ROOTS = (
    f"/nix/var/nix/profiles/system-3-link -> {STORE}/aaa-nixos-system-p620-25.05.20250101.abc\n"
    f"/root/result -> {STORE}/bbb-hello-2.12.1\n"
    f"/proc/4242/maps -> {STORE}/eee-glibc-2.40\n"
    f"{{memory:7}} -> {STORE}/fff-bash-5.2\n"
)


class Host:
    """A NixOS host laid out under ``root`` and stand-in tools in ``bin``; ``calls()`` lists
    the stand-ins' invocations."""

    def __init__(self, tmp: Path):
        self.root = tmp / "host"
        self.bin = tmp / "bin"
        self.log = tmp / "calls.log"
        self.outputs = tmp / "outputs"
        for directory in (self.root, self.bin, self.outputs):
            directory.mkdir()
        self.log.touch()

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def tool(self, name: str, *cases: tuple[str, str], otherwise: str = "exit 2") -> None:
        """A stand-in: for the first shell pattern (``*`` matches anything) matching its
        arguments, print that case's output (or, with ``!`` in front, run it as a command)."""
        body = ["#!/bin/sh", f'echo "{name} $*" >> {shlex.quote(str(self.log))}', 'case "$*" in']
        for number, (pattern, answer) in enumerate(cases):
            if answer.startswith("!"):
                action = answer[1:]
            else:
                output = self.outputs / f"{name}-{number}"
                output.write_text(answer)
                action = f"cat {shlex.quote(str(output))}"
            body.append(f"  {pattern.replace(' ', chr(92) + ' ')}) {action} ;;")
        body += [f"  *) {otherwise} ;;", "esac", ""]
        script = self.bin / name
        script.write_text("\n".join(body))
        script.chmod(0o755)

    def calls(self, name: str | None = None) -> list[str]:
        lines = self.log.read_text().splitlines()
        return [line for line in lines if name is None or line.split()[0] == name]


def link(path: Path, target: str, mtime: float | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    if mtime is not None:
        os.utime(path, (mtime, mtime), follow_symlinks=False)


def system_dir(host: Host, name: str, modules: str) -> Path:
    """A system toplevel as NixOS lays it out: kernel, initrd, kernel-modules, nixos-version."""
    system = host.root / "systems" / name
    system.mkdir(parents=True)
    (system / "nixos-version").write_text("25.05.20250101.abc")
    for part, target in (("kernel", "linux-6.6"), ("initrd", "initrd-6.6"),
                         ("kernel-modules", modules)):
        (host.root / "systems" / target).touch()
        link(system / part, str(host.root / "systems" / target))
    return system


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Host:
    """p620 after three switches (the running system needs a reboot: its kernel modules differ
    from the booted one's), with systemd-boot entries, one channel, a finished nixfleet deploy
    and an AMD GPU (rocm-smi) on the PCI bus next to an NVIDIA one."""
    host = Host(tmp_path)
    profiles = host.path("/nix/var/nix/profiles")
    for number, stamp in GENERATION_TIMES.items():
        link(profiles / f"system-{number}-link",
             f"{STORE}/{number}{'a' * 31}-nixos-system-p620-25.05.2025010{number}.abc", stamp)
    link(profiles / "system", "system-3-link")
    current = system_dir(host, "current", "modules-new")
    link(host.path("/run/current-system"), str(current))
    link(host.path("/run/booted-system"), str(system_dir(host, "booted", "modules-old")))
    deployed = host.path("/var/lib/nixfleet/last-deploy")
    deployed.parent.mkdir(parents=True)
    deployed.write_text(f"{'f' * 64} {STORE}/aaa-nixos-system-p620-25.05.20250101.abc\n")
    entries = host.path("/boot/loader/entries")
    entries.mkdir(parents=True)
    for number in GENERATION_TIMES:
        (entries / f"nixos-generation-{number}.conf").write_text("title NixOS\n")
    (entries / "README").write_text("not an entry\n")
    channels = host.path("/nix/var/nix/profiles/per-user/root/channels")
    channels.mkdir(parents=True)
    (channels / "manifest.nix").write_text("[ ]")
    (channels / "nixos").mkdir()

    store = str(host.root)
    host.tool("nix", (f"*path-info*--store {store}*", PATH_INFO))
    host.tool("nix-store", (f"--store {store} --gc --print-roots", GC_ROOTS))
    host.tool(
        "systemctl",
        ("show*nix-daemon.service nix-daemon.socket", NIX_DAEMON_SHOW),
        ("list-units --all --output=json*", captured("systemd/systemctl-list-units-all.json")),
        ("is-system-running", "!" + shlex.join(
            ["sh", "-c", 'cat "$0"; exit 1',
             str(FIXTURES / "systemd/systemctl-is-system-running-degraded.txt")])),
        ("show*NRestarts*", captured("systemd/systemctl-show-services-nrestarts.txt")),
    )  # fmt: skip
    host.tool("lspci", ("-nnk", captured("gpu/lspci-nnk-xps15-9570-hybrid.txt")))
    host.tool("nvidia-smi", ("--query-gpu=*", captured("gpu/nvidia-smi-csv-h100-mig-590.csv")))
    host.tool("rocm-smi",
              ("*--showpower*--json", captured("gpu/rocm-smi-json-6x-mi100-rocm571.json")))
    monkeypatch.setenv("PATH", f"{host.bin}:{os.environ['PATH']}")
    return host


def captured(name: str) -> str:
    return (FIXTURES / name).read_text()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def nixos_exporter(host: Host, clock: Clock | None = None) -> tuple[Refresher, CollectorRegistry]:
    refresher = Refresher(nixos.sources(nixos.Host(str(host.root)), 30, 300),
                          clock or time.monotonic)
    refresher.refresh_due()
    return refresher, serve.registry_of(nixos.PREFIX, refresher, nixos.FAMILIES)


def systemd_exporter() -> tuple[Refresher, CollectorRegistry]:
    refresher = Refresher(systemd.sources(15))
    refresher.refresh_due()
    return refresher, serve.registry_of(systemd.PREFIX, refresher, systemd.FAMILIES)


def scrape(registry: CollectorRegistry) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The exposition as {family: {sorted labels: value}}, checked by promtool when present."""
    text = generate_latest(registry).decode()
    promtool_check(text)
    values: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for item in family.samples:
            values.setdefault(item.name, {})[tuple(sorted(item.labels.items()))] = item.value
    return values


# The original exporters' names, kept so that dashboards and alerts read the same, although
# these are gauges (a generation can be deleted) and the convention keeps _total for counters.
ORIGINAL_GAUGES_NAMED_TOTAL = frozenset({
    "nixos_generations_total", "nixos_store_derivations_total", "nixos_gc_roots_total",
    "nixos_channels_total", "nixos_boot_entries_total", "systemd_units_total",
})  # fmt: skip


def promtool_check(text: str) -> None:
    """``promtool check metrics``: the exposition parses (exit 1 otherwise) and its only lint
    findings (exit 3) are the original names above."""
    promtool = shutil.which("promtool")
    if promtool is None:
        return  # scripts/setup installs it; without it the parser above still checks the format
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=30)
    findings = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    allowed = [line for line in findings if line.split()[0] in ORIGINAL_GAUGES_NAMED_TOTAL
               and 'should not have "_total" suffix' in line]
    assert result.returncode in (0, 3) and findings == allowed, "\n".join(findings)


def value(values: dict, name: str, **labels: str) -> float:
    return values[name][tuple(sorted(labels.items()))]


# --- the NixOS exporter ----------------------------------------------------------------------


def test_nixos_metrics_of_the_system_profile_store_and_boot(host: Host) -> None:
    _, registry = nixos_exporter(host)
    values = scrape(registry)

    assert value(values, "nixos_generations_total") == 3
    assert value(values, "nixos_generation_current") == 3
    assert value(values, "nixos_last_rebuild_timestamp") == GENERATION_TIMES[3]
    assert value(values, "nixos_reboot_required") == 1
    assert value(values, "nixos_system_info", nixos_version="25.05.20250101.abc",
                 configuration_revision="") == 1
    assert value(values, "nixos_deployed_flake_info", flake_hash="f" * 64,
                 toplevel=f"{STORE}/aaa-nixos-system-p620-25.05.20250101.abc") == 1
    assert value(values, "nixos_store_size_bytes") == 14000
    assert value(values, "nixos_store_paths") == 4
    assert value(values, "nixos_store_derivations_total") == 1
    assert value(values, "nixos_gc_roots_total") == 2  # processes' roots are left out
    assert value(values, "nixos_nix_daemon_active") == 1  # the socket listens
    assert value(values, "nixos_channels_total") == 1
    assert value(values, "nixos_boot_entries_total") == 3
    errors = values["nixos_exporter_source_error"]
    assert set(errors.values()) == {0.0}
    assert {dict(labels)["source"] for labels in errors} == {
        "generations", "system", "deploy", "last_deploy", "verification", "nix_daemon",
        "channels", "boot", "store", "gc_roots", "lspci", "nvidia-smi", "rocm-smi"}
    # No deploy journal, no verification yet: the system is not verified; a switch since boot.
    assert "nixos_last_deploy_timestamp" not in values
    assert value(values, "nixos_system_verified") == 0
    assert value(values, "nixos_booted_system_differs") == 1


def test_nixos_metrics_of_the_last_deploy_and_its_verification(host: Host) -> None:
    state = host.path("/var/lib/nixfleet")
    (state / "result-20261207-121212-2").write_text(
        "NIXFLEET started=1796600000 alice@deployer\nNIXFLEET result=rolled-back\n")
    running = os.path.realpath(host.path("/run/current-system"))
    (state / "verified").write_text(f"{running} 1796600100 passed\n")
    values = scrape(nixos_exporter(host)[1])
    assert value(values, "nixos_last_deploy_timestamp") == 1796600000
    assert value(values, "nixos_last_deploy_success") == 0
    assert value(values, "nixos_last_deploy_info", deploy_id="20261207-121212-2",
                 result="rolled-back") == 1
    assert value(values, "nixos_system_verified") == 1
    assert value(values, "nixos_last_verification_timestamp") == 1796600100
    # Verified as another system, or failed: 0; a damaged record is the source's error.
    (state / "verified").write_text(f"{running} 1796600200 failed\n")
    assert value(scrape(nixos_exporter(host)[1]), "nixos_system_verified") == 0
    (state / "verified").write_text("garbage\n")
    values = scrape(nixos_exporter(host)[1])
    assert "nixos_system_verified" not in values
    assert value(values, "nixos_exporter_source_error", source="verification") == 1


def test_boot_entries_of_grub_and_none_in_a_container(tmp_path: Path) -> None:
    grub = tmp_path / "boot" / "grub" / "grub.cfg"
    grub.parent.mkdir(parents=True)
    grub.write_text(  # as NixOS's install-grub writes it: older generations in a submenu
        'menuentry "NixOS" --class nixos --unrestricted {\n  linux ...\n}\n'
        'submenu "NixOS - All configurations" --class submenu {\n'
        'menuentry "NixOS - Configuration 42 (2025-06-14 - 25.05)" --class nixos {\n}\n'
        'menuentry "NixOS - Configuration 41 (2025-06-14 - 25.05)" --class nixos {\n}\n}\n'
    )

    assert nixos.count_boot_entries(str(tmp_path / "boot")) == 3
    assert nixos.count_boot_entries(str(tmp_path / "no-boot")) is None


def test_gpu_metrics_of_every_tool_with_model_and_slot(host: Host) -> None:
    _, registry = nixos_exporter(host)
    values = scrape(registry)

    assert value(values, "nixfleet_gpu_info", slot="0000:00:02.0",
                 model="UHD Graphics 630 (Mobile)", vendor="intel", driver="i915") == 1
    assert value(values, "nixfleet_gpu_info", slot="0000:01:00.0",
                 model="GeForce GTX 1050 Ti Mobile", vendor="nvidia", driver="nvidia") == 1
    h100 = {"gpu": "0", "model": "NVIDIA H100 80GB HBM3", "slot": "0000:00:09.0"}
    assert value(values, "nixfleet_gpu_memory_total_bytes", **h100) == 81559 * 1024**2
    assert value(values, "nixfleet_gpu_memory_used_bytes", **h100) == 59 * 1024**2
    assert value(values, "nixfleet_gpu_temperature_celsius", **h100) == 42
    assert value(values, "nixfleet_gpu_power_watts", **h100) == 71.15
    # The H100 reports its utilization as [N/A]: absent, not 0.
    assert tuple(sorted(h100.items())) not in values["nixfleet_gpu_utilization_ratio"]
    mi100 = {"gpu": "1", "model": "Instinct MI100", "slot": "0000:22:00.0"}
    assert value(values, "nixfleet_gpu_utilization_ratio", **mi100) == 0.0
    assert value(values, "nixfleet_gpu_memory_total_bytes", **mi100) == 32752 * 1024**2
    assert value(values, "nixfleet_gpu_temperature_celsius", **mi100) == 30.0
    assert value(values, "nixfleet_gpu_power_watts", **mi100) == 37.0
    assert len(values["nixfleet_gpu_power_watts"]) == 1 + 6  # one H100, six MI100


def test_a_gpu_tool_that_is_not_installed_is_no_error(host: Host) -> None:
    for tool in ("nvidia-smi", "rocm-smi"):
        (host.bin / tool).unlink()
    if shutil.which("nvidia-smi") or shutil.which("rocm-smi"):
        pytest.skip("this machine has a real GPU tool on PATH")
    _, registry = nixos_exporter(host)
    values = scrape(registry)

    assert "nixfleet_gpu_power_watts" not in values
    assert value(values, "nixos_exporter_source_error", source="nvidia-smi") == 0
    assert values["nixfleet_gpu_info"]  # lspci still lists the GPUs


def test_a_failing_source_is_absent_with_its_error_gauge_and_the_rest_stays(host: Host) -> None:
    host.tool("nix", otherwise="echo 'error: cannot open the Nix database' >&2; exit 1")
    not_loaded = FIXTURES / "gpu/nvidia-smi-driver-not-loaded.txt"
    host.tool("nvidia-smi", otherwise=f"cat {not_loaded}; exit 9")
    (host.path("/run/current-system")).unlink()
    refresher, registry = nixos_exporter(host)
    values = scrape(registry)

    for source in ("store", "nvidia-smi", "system"):
        assert value(values, "nixos_exporter_source_error", source=source) == 1
    for absent in ("nixos_store_size_bytes", "nixos_store_paths",
                   "nixos_store_derivations_total", "nixos_reboot_required", "nixos_system_info"):
        assert absent not in values
    assert value(values, "nixos_exporter_source_error", source="gc_roots") == 0
    assert value(values, "nixos_generations_total") == 3
    readings = refresher.readings()
    assert readings["store"].error == "nix path-info exited 1: error: cannot open the Nix database"
    assert readings["nvidia-smi"].error is not None
    assert readings["nvidia-smi"].error.startswith("nvidia-smi exited 9: NVIDIA-SMI has failed")


def test_a_failed_source_drops_its_old_values_and_recovers(host: Host) -> None:
    clock = Clock()
    refresher, registry = nixos_exporter(host, clock)
    assert value(scrape(registry), "nixos_channels_total") == 1

    channels = host.path("/nix/var/nix/profiles/per-user/root/channels")
    shutil.rmtree(channels)
    channels.write_text("not a directory")
    clock.now = 31
    refresher.refresh_due()
    values = scrape(registry)
    assert "nixos_channels_total" not in values
    assert value(values, "nixos_exporter_source_error", source="channels") == 1

    channels.unlink()
    clock.now = 62
    refresher.refresh_due()
    assert value(scrape(registry), "nixos_channels_total") == 0  # no channels profile: none


def test_scrapes_never_run_a_command_and_the_store_is_read_on_its_own_interval(host: Host) -> None:
    clock = Clock()
    refresher, registry = nixos_exporter(host, clock)
    after_first_read = len(host.calls())
    assert len(host.calls("nix")) == 1 and len(host.calls("nix-store")) == 1

    for _ in range(50):
        scrape(registry)
    assert len(host.calls()) == after_first_read

    clock.now = 5  # the running and booted system is read most often
    assert refresher.refresh_due() == 5
    assert len(host.calls("systemctl")) == 1  # only the system was due
    clock.now = 30  # the cheap sources are due, the store is not
    assert refresher.refresh_due() == 5  # the system's next read
    assert len(host.calls("systemctl")) == 2 and len(host.calls("lspci")) == 2
    assert len(host.calls("nix")) == 1 and len(host.calls("nix-store")) == 1
    clock.now = 300
    refresher.refresh_due()
    assert len(host.calls("nix")) == 2 and len(host.calls("nix-store")) == 2


def test_the_background_thread_refreshes(host: Host) -> None:
    sources = nixos.sources(nixos.Host(str(host.root)), 0.05, 0.05)
    refresher = Refresher([s for s in sources if s.name == "store"])
    refresher.start()
    try:
        deadline = time.monotonic() + 10
        while len(host.calls("nix")) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        refresher.stop()
    assert len(host.calls("nix")) >= 3


def test_a_command_that_hangs_is_killed_with_its_children(host: Host) -> None:
    from nixfleet.exporters.sources import CommandFailed, run

    started = time.monotonic()
    with pytest.raises(CommandFailed, match=r"sleepy: no answer within 0\.3 s"):
        run("sleepy", "sleep 30 | cat", timeout=0.3)
    assert time.monotonic() - started < 5


# --- the systemd exporter --------------------------------------------------------------------


def test_systemd_units_states_and_restarts(host: Host) -> None:
    _, registry = systemd_exporter()
    values = scrape(registry)

    units = json.loads(captured("systemd/systemctl-list-units-all.json"))
    assert value(values, "systemd_units_total") == len(units) == 25
    assert value(values, "systemd_units_active") == sum(u["active"] == "active" for u in units)
    assert value(values, "systemd_units_failed") == 1
    states = values["systemd_unit_state"]
    assert states == {
        (("state", "failed"), ("unit", "broken-thing.service")): 2,
        (("state", "inactive"), ("unit", "dbus.service")): 0,
        (("state", "inactive"), ("unit", "dirmngr.service")): 0,
        (("state", "inactive"), ("unit", "gpg-agent.service")): 0,
        (("state", "inactive"), ("unit", "pk-debconf-helper.service")): 0,
        (("state", "active"), ("unit", "sleeper.service")): 1,
    }
    assert value(values, "systemd_system_state") == 2  # degraded, though systemctl exits 1
    assert value(values, "systemd_unit_restarts_total", unit="restarter.service") == 3
    assert value(values, "systemd_unit_restarts_total", unit="sleeper.service") == 0
    assert set(values["systemd_exporter_source_error"].values()) == {0.0}


def test_activating_units_and_other_system_states_count_as_other(host: Host) -> None:
    # The plain listing (systemd < 247), with sleeper caught while it starts.
    units = re.sub(r"^(sleeper\.service +loaded) active +running",
                   r"\1 activating start", captured("systemd/systemctl-list-units-all-plain.txt"),
                   flags=re.MULTILINE)
    assert "activating start" in units
    host.tool("systemctl", ("list-units*", units), ("is-system-running", "maintenance\n"),
              ("show*", captured("systemd/systemctl-show-services-nrestarts.txt")))
    _, registry = systemd_exporter()
    values = scrape(registry)

    assert value(values, "systemd_unit_state", unit="sleeper.service", state="activating") == 3
    assert value(values, "systemd_system_state") == 0


def test_systemd_exporter_without_systemd_reports_errors_not_zeros(host: Host) -> None:
    message = "System has not been booted with systemd as init system (PID 1). Can't operate."
    host.tool("systemctl", ("is-system-running", "offline\n"),
              otherwise=f"echo {shlex.quote(message)} >&2; exit 1")
    refresher, registry = systemd_exporter()
    values = scrape(registry)

    assert "systemd_units_total" not in values and "systemd_unit_state" not in values
    assert value(values, "systemd_exporter_source_error", source="units") == 1
    assert value(values, "systemd_system_state") == 0
    assert refresher.readings()["units"].error == f"systemctl exited 1: {message}"


# --- HTTP ------------------------------------------------------------------------------------


@pytest.fixture
def http() -> Iterator[Callable[[CollectorRegistry, str], tuple[int, str]]]:
    servers: list[serve.MetricsServer] = []

    def get(registry: CollectorRegistry, path: str) -> tuple[int, str]:
        server = serve.MetricsServer(("127.0.0.1", 0), registry, "test exporter")
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    yield get
    for server in servers:
        server.shutdown()
        server.server_close()


def test_metrics_over_http_answer_200_even_with_failing_sources(host: Host, http) -> None:
    host.tool("nix", otherwise="exit 1")
    _, registry = nixos_exporter(host)

    status, body = http(registry, "/metrics")
    assert status == 200
    assert 'nixos_exporter_source_error{source="store"} 1.0' in body
    assert "nixos_generations_total 3.0" in body
    assert "process_resident_memory_bytes" in body
    assert http(registry, "/nope")[0] == 404


def test_a_collector_that_breaks_still_gives_200(http) -> None:
    class Broken:
        def collect(self):
            raise RuntimeError("bug")

    registry = CollectorRegistry()
    registry.register(Broken())

    status, body = http(registry, "/metrics")
    assert status == 200
    assert body.startswith("# nixfleet exporter: formatting the metrics failed")
    assert list(text_string_to_metric_families(body)) == []


def test_a_source_whose_samples_fail_is_an_error_too() -> None:
    def broken(value: int) -> Iterator:
        raise ValueError("no such thing")
        yield

    refresher = Refresher([Source("odd", lambda: 1, broken, 10)])
    refresher.refresh_due()
    assert refresher.readings()["odd"].error == "no such thing"


# --- packaging -------------------------------------------------------------------------------


def test_the_exporters_run_without_pyinfra_and_answer_their_help() -> None:
    code = ("import sys, nixfleet.exporters.nixos, nixfleet.exporters.systemd; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyinfra', 'pydantic')))")
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, cwd=ROOT)
    assert imported.stdout.strip() == "[]"
    for module, option in (("nixos", "--store-interval"), ("systemd", "--interval")):
        helped = subprocess.run([sys.executable, "-m", f"nixfleet.exporters.{module}", "--help"],
                                capture_output=True, text=True, check=True, cwd=ROOT)
        assert option in helped.stdout


def test_a_parser_error_is_pyinfras_fact_error_only_where_pyinfra_is_loaded() -> None:
    from pyinfra.api.exceptions import FactProcessError

    import nixfleet.facts.errors  # noqa: F401  (what every fact imports)
    from nixfleet.facts.parsers.systemd import parse_system_state

    with pytest.raises(FactProcessError, match="systemctl is-system-running: not a system state"):
        parse_system_state("garbage")
    code = ("from nixfleet.facts.parsers.systemd import parse_system_state\n"
            "try:\n    parse_system_state('garbage')\n"
            "except ValueError as error:\n    print([c.__name__ for c in type(error).__mro__])")
    alone = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, cwd=ROOT)
    assert alone.stdout.split("'")[1::2] == [
        "FactParseError", "ValueError", "Exception", "BaseException", "object"]


def test_console_scripts_and_ports_match_the_flake() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["nixfleet-nixos-exporter"] == "nixfleet.exporters.nixos:main"
    assert scripts["nixfleet-systemd-exporter"] == "nixfleet.exporters.systemd:main"
    client = (ROOT / "nix/modules/monitoring/client.nix").read_text()
    assert '"nixfleet-nixos-exporter"' in client and '"nixfleet-systemd-exporter"' in client
    ports = json.loads((ROOT / "nix/lib/ports.json").read_text())
    assert (ports["nixosExporter"], ports["systemdExporter"]) == (nixos.PORT, systemd.PORT)


def test_the_package_docstring_lists_every_metric() -> None:
    documented = nixfleet.exporters.__doc__ or ""
    families = [*nixos.FAMILIES, *systemd.FAMILIES]
    missing = [f.name for f in families if f.name not in documented]
    assert not missing
    for prefix in (nixos.PREFIX, systemd.PREFIX):
        assert f"{prefix}_source_error{{source}}" in documented


def test_the_exporter_serves_its_host_end_to_end(host: Host) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "nixfleet.exporters.nixos", "--address", "127.0.0.1",
         "--port", str(port), "--root", str(host.root)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline, body = time.monotonic() + 20, ""
        while time.monotonic() < deadline and not body:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    body = r.read().decode()
            except OSError:
                time.sleep(0.05)
        assert "nixos_generation_current 3.0" in body
        assert 'nixos_exporter_source_error{source="store"} 0.0' in body
    finally:
        process.terminate()
        process.wait(timeout=10)
