"""Lab hosts behave like NixOS hosts: generations, switch/boot/test, rollback, failures."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nixfleet import nixcheck
from nixfleet.flake import nixos_release
from tests.lab.conftest import (
    HOSTS,
    ROOT,
    lab_status,
    nixfleet,
    on,
    reset_after_the_module,
    wait_until,
    write_on,
)

pytestmark = pytest.mark.usefixtures("lab")

EXTRA_UNITS = "/etc/nixos/faults/{host}.json"
# NixOS's version is the release of the flake's nixpkgs input; the lab's says it is the lab's.
NIXOS_VERSION = f"{nixos_release(ROOT / 'nix' / 'flake.nix')}.lab"


def generation(host: str) -> int:
    return int(on(host, "readlink /nix/var/nix/profiles/system").stdout.strip()
               .removeprefix("system-").removesuffix("-link"))


def current_system(host: str) -> str:
    return on(host, "readlink /run/current-system").stdout.strip()


def set_extra_units(host: str, units: dict) -> None:
    write_on(host, EXTRA_UNITS.format(host=host), json.dumps(units))


@pytest.fixture
def fresh(request):
    """A host back at first boot after the test (its generations forgotten): for a test that
    leaves it broken, or in a state the next test on it cannot start from."""
    hosts: list[str] = []
    yield hosts.append
    if hosts:
        nixfleet("lab", "reset", *hosts)


# Hosts that a test leaves working, in a state the later tests here start from as well as from
# first boot (a generation set to boot next, the profile set back to an older system): back to
# first boot once, after the module, not after each of those tests.
reset_these_hosts_after_the_module = reset_after_the_module("razer", "dex5550")


def test_every_host_runs_generation_one_of_its_own_data():
    for host in HOSTS:
        version = json.loads(on(host, "nixos-version --json").stdout)
        assert version["nixosVersion"] == NIXOS_VERSION
        gens = json.loads(on(host, "nixos-rebuild list-generations --json").stdout)
        current = [g["generation"] for g in gens if g["current"]]
        assert current == [generation(host)]
        assert f"nixos-system-{host}-" in current_system(host)
    # p620 is a monitoring server with the node exporter enabled: the real binary runs.
    assert on("p620", "systemctl is-active prometheus-node-exporter").stdout.strip() == "active"


def test_pyinfra_reaches_all_four_lab_hosts():
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "pyinfra"), "inventory.py", "exec", "-y",
         "--", "nixos-version"], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "NIXFLEET_TARGET": "lab"})
    assert result.returncode == 0, result.stderr
    for host in HOSTS:
        assert re.search(rf"\[{host}\]\s+{re.escape(NIXOS_VERSION)} \(Lab\)",
                         result.stdout + result.stderr)


def test_switch_to_a_new_generation_and_back_with_rollback(fresh):
    host = "dex5550"
    fresh(host)
    before, system_before = generation(host), current_system(host)
    set_extra_units(host, {"lab-demo": {"execStart": "/bin/sleep infinity"}})
    on(host, "nixos-rebuild switch --flake /etc/nixos#dex5550")
    assert generation(host) == before + 1
    assert current_system(host) != system_before
    assert on(host, "systemctl is-active lab-demo").stdout.strip() == "active"

    on(host, "nixos-rebuild switch --rollback")
    assert generation(host) == before
    assert current_system(host) == system_before
    assert on(host, "systemctl is-active lab-demo", check=False).stdout.strip() != "active"


def test_a_unit_that_fails_makes_switch_fail_and_stays_failed(fresh):
    host = "p510"
    fresh(host)
    set_extra_units(host, {"broken": {"execStart": "/bin/false", "type": "oneshot"}})
    result = on(host, "nixos-rebuild switch", check=False)
    assert result.returncode == 4
    assert "the following units failed: broken.service" in result.stderr
    assert on(host, "systemctl is-failed broken").stdout.strip() == "failed"


def test_test_activates_without_touching_the_profile(fresh):
    host = "razer"
    fresh(host)
    before = generation(host)
    profile_target = on(host, "readlink -f /nix/var/nix/profiles/system").stdout
    set_extra_units(host, {"lab-demo": {"execStart": "/bin/sleep infinity"}})
    on(host, "nixos-rebuild test")
    assert generation(host) == before
    assert on(host, "readlink -f /nix/var/nix/profiles/system").stdout == profile_target
    assert current_system(host) != profile_target.strip()
    assert on(host, "systemctl is-active lab-demo").stdout.strip() == "active"


@pytest.mark.usefixtures("reset_these_hosts_after_the_module")
def test_boot_sets_the_profile_without_activating():
    host = "razer"
    before, system_before = generation(host), current_system(host)
    set_extra_units(host, {"lab-demo": {"execStart": "/bin/sleep infinity"}})
    on(host, "nixos-rebuild boot")
    assert generation(host) == before + 1
    assert current_system(host) == system_before
    assert on(host, "systemctl is-active lab-demo", check=False).stdout.strip() != "active"


def test_dry_activate_and_build_change_nothing():
    host = "p620"
    before, system_before = generation(host), current_system(host)
    on(host, "rm -rf /tmp/nixos-before && cp -a /etc/nixos /tmp/nixos-before")
    try:
        set_extra_units(host, {"lab-demo": {"execStart": "/bin/sleep infinity"}})
        result = on(host, "nixos-rebuild dry-activate")
        assert "would start the following units: lab-demo.service" in result.stdout
        built = on(host, "cd /tmp && nixos-rebuild build && readlink result").stdout.split()
        assert built[0] == built[-1] and built[0].startswith("/nix/store/")
        assert (generation(host), current_system(host)) == (before, system_before)
    finally:
        # What the test wrote, taken back: p620 is as it was, and needs no reset (a reset of
        # p620 just before the monitoring tests restarts Prometheus, which then waits for two
        # scrapes of its 60 s job before every dashboard query has series).
        on(host, "rm -rf /etc/nixos /tmp/result && mv /tmp/nixos-before /etc/nixos")


def test_toplevel_changes_exactly_when_the_hosts_data_changes():
    """Another host's data changing leaves this host's toplevel as it is."""
    attr = "path:/etc/nixos#nixosConfigurations.{h}.config.system.build.toplevel"
    eval_cmd = "nix eval --raw " + attr + ".outPath"
    before = {h: on("p620", eval_cmd.format(h=h)).stdout for h in ("p620", "razer")}
    try:
        on("p620", "cp /etc/nixos/hosts/razer.json /tmp/razer.json && "
                   "sed -i 's/Europe\\/London/UTC/' /etc/nixos/hosts/razer.json")
        after = {h: on("p620", eval_cmd.format(h=h)).stdout for h in ("p620", "razer")}
    finally:
        on("p620", "cp /tmp/razer.json /etc/nixos/hosts/razer.json")
    assert after["p620"] == before["p620"]
    assert after["razer"] != before["razer"]


def test_a_host_reboot_comes_back_by_itself():
    host = "p510"
    boot_id = on(host, "cat /proc/sys/kernel/random/boot_id").stdout
    system = current_system(host)
    on(host, "systemctl reboot", check=False)

    def back() -> bool:
        result = on(host, "cat /proc/sys/kernel/random/boot_id", check=False, timeout=10)
        return result.returncode == 0 and result.stdout != boot_id

    wait_until(back, 60, f"{host} to reboot")
    wait_until(lambda: on(host, "systemctl is-system-running --wait", check=False)
               .stdout.strip() in ("running", "degraded"), 60, f"{host} to finish booting")
    assert current_system(host) == system
    assert on(host, "readlink /run/booted-system").stdout.strip() == system
    assert lab_status()[host]["state"] == "running"


def test_gpu_stand_ins_answer_from_the_inventory():
    razer = on("razer", "lspci -nnk").stdout
    assert "[10de:1f10]" in razer and "Kernel driver in use: nvidia" in razer
    assert "[8086:3e9b]" in razer and "Kernel driver in use: i915" in razer
    assert on("razer", "nvidia-smi --query-gpu=name,memory.total --format=csv,noheader") \
        .stdout.strip() == "NVIDIA GeForce RTX 2070 Mobile, 8192 MiB"
    rocm = json.loads(on("p620", "rocm-smi --showproductname --json").stdout)
    assert rocm["card0"]["GFX Version"] == "gfx1100"
    assert rocm["card0"]["Card Model"] == "0x744c"
    dex = on("dex5550", "lspci -nnk").stdout
    assert "[8086:3ea0]" in dex and "Kernel driver in use: i915" in dex
    for tool in ("nvidia-smi", "rocm-smi"):
        assert on("dex5550", f"command -v {tool}", check=False).returncode != 0


@pytest.mark.usefixtures("reset_these_hosts_after_the_module")
def test_only_the_profiles_generation_is_current_when_two_hold_the_same_system():
    """After a rollback, a later generation can hold the very system of an older one."""
    host = "dex5550"
    first = generation(host)
    # A unit name no earlier generation had, so that this switch makes a new generation.
    set_extra_units(host, {f"lab-demo-{uuid.uuid4().hex[:8]}": {"execStart": "/bin/sleep 1d"}})
    on(host, "nixos-rebuild switch")
    assert generation(host) == first + 1
    old_system = on(host, f"readlink -f /nix/var/nix/profiles/system-{first}-link").stdout.strip()
    on(host, f"nix-env -p /nix/var/nix/profiles/system --set {old_system}")
    assert generation(host) == first + 2
    gens = json.loads(on(host, "nixos-rebuild list-generations --json").stdout)
    assert [g["generation"] for g in gens if g["current"]] == [first + 2]
    assert {g["generation"] for g in gens} >= {first, first + 2}


def test_ai_hosts_get_the_real_ai_providers_json_and_ollama_loads_their_models():
    real = nixcheck.evaluate("""{ nixDir }: let lib = /. + nixDir + "/lib"; in
      builtins.toJSON (import (lib + "/ai-providers.nix") {
        settings = (import (lib + "/fleet.nix") { hostsDir = /. + nixDir + "/hosts"; })
          .hosts.p620.features.ai.providers;
      })""", nixDir=str(ROOT / "nix"))
    assert on("p620", "cat /etc/ai-providers.json").stdout == real
    models = ["llama3.2:latest", "mistral-small3.1:latest"]

    def listed() -> list[str]:
        lines = on("p620", "ollama list", check=False).stdout.splitlines()
        return [line.split()[0] for line in lines[1:]]

    assert listed() == models
    # A removed model is pulled again when Ollama starts (NixOS: services.ollama.loadModels).
    on("p620", "ollama rm llama3.2 && systemctl restart ollama")
    wait_until(lambda: listed() == models, 15, "Ollama to pull llama3.2 again")
    request = json.dumps({"model": "llama3.2", "prompt": "hello", "stream": False})
    answer = json.loads(on("p620", "python3 -c " + shlex.quote(
        "import urllib.request as u; print(u.urlopen('http://127.0.0.1:11434/api/generate', "
        f"{request!r}.encode()).read().decode())")).stdout)
    assert answer["response"].startswith("Lab stand-in for Ollama (llama3.2)")
    assert on("razer", "command -v ollama", check=False).returncode != 0


def test_the_monitoring_server_is_the_binary_cache_its_clients_use_and_trust():
    info = on("razer", "python3 -c " + shlex.quote(
        "import urllib.request as u; "
        "print(u.urlopen('http://p620:5000/nix-cache-info', timeout=5).read().decode(), end='')"))
    assert info.stdout == "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n"
    # The key p620 signs with (agenix), whose public half every client trusts.
    public = on("p620", "nix key convert-secret-to-public < /run/agenix/binary-cache-key").stdout
    for host in ("razer", "p510", "dex5550"):
        config = on(host, "nix --extra-experimental-features nix-command show-config").stdout
        settings = dict(line.split(" = ", 1) for line in config.splitlines() if " = " in line)
        assert settings["substituters"].split() == ["http://p620:5000"], host
        assert settings["trusted-public-keys"].split() == [public.strip()], host
        assert settings["connect-timeout"] == "5", host
    # A path only p620 has comes to razer from the cache, its signature checked.
    path = on("p620", "readlink /run/current-system/kernel-modules").stdout.strip()
    fetched = on("razer", f"nix-store --delete {path} >/dev/null 2>&1; nix-store --realise "
                          f"{path} 2>&1 && nix-store --delete {path} >/dev/null 2>&1")
    assert f"copying path '{path}' from 'http://p620:5000'" in fetched.stdout


EXPORTER_INTERVAL = 30  # seconds between the NixOS exporter's reads (its --interval default)


def nvidia_source_read_after(moment: float) -> bool:
    """razer's NixOS exporter last read nvidia-smi, without error, in a read that began after
    `moment` (Unix time; the lab's hosts share this machine's clock)."""
    text = on("razer", "curl -s localhost:9101/metrics", check=False).stdout
    value = {}
    for family in text_string_to_metric_families(text):
        for item in family.samples:
            if item.labels.get("source") == "nvidia-smi":
                value[item.name.removeprefix("nixos_exporter_source_")] = item.value
    if not {"error", "duration_seconds", "last_read_timestamp_seconds"} <= set(value):
        return False
    began = value["last_read_timestamp_seconds"] - value["duration_seconds"]
    return began > moment and value["error"] == 0


def test_a_gpu_driver_unloaded_on_a_host_is_seen_by_its_tools_until_loaded():
    tool = "/usr/lib/nixfleet-lab/standins/nixfleet-lab-gpu-driver"
    on("razer", f"{tool} unload nvidia")
    try:
        assert "Kernel driver in use: nvidia" not in on("razer", "lspci -nnk").stdout
        smi = on("razer", "nvidia-smi", check=False)
        assert (smi.returncode, smi.stdout.split(".")[0]) == (
            9, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver")
    finally:
        loaded = float(on("razer", f"{tool} load nvidia && date +%s.%N").stdout.split()[-1])
        # The NixOS exporter may have read nvidia-smi while the driver was out (the likelier
        # the slower these SSH calls, i.e. the busier the machine): its error gauge stays 1
        # until its next read, up to its interval later. Left so, it failed the next test that
        # asks every source. A read that began before the driver came back may still be
        # running, its error not shown yet: only a read that began after counts. The exporter
        # is restarted (it reads every source as it starts) rather than waited for.
        on("razer", "systemctl restart nixfleet-nixos-exporter")
        wait_until(lambda: nvidia_source_read_after(loaded), 2 * EXPORTER_INTERVAL,
                   "razer's exporter to read nvidia-smi after the driver was loaded again")
    assert "Kernel driver in use: nvidia" in on("razer", "lspci -nnk").stdout
    assert on("razer", "nvidia-smi -L").returncode == 0
