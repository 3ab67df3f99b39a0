"""The fleet model and inventory.py: groups, pyinfra's view, and bad data failing early."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nixfleet.errors import InventoryError
from nixfleet.inventory import build_fleet, load_group_data, load_inventory_file

PYINFRA = str(Path(sys.executable).parent / "pyinfra")


def fleet_of(entries: list, root: Path):
    return build_fleet(entries, load_group_data(root / "group_data"))


def entry(entries: list, name: str) -> dict[str, Any]:
    return next(data for host, data in entries if host == name)


def run_pyinfra(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYINFRA, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ, "NIXFLEET_TARGET": "fleet", **(env or {})},
    )


def test_the_four_hosts_and_their_derived_groups(root):
    fleet = load_inventory_file(root / "inventory.py")
    assert list(fleet.hosts) == ["p620", "razer", "p510", "dex5550"]
    assert fleet.groups["amd"] == ["p620"]
    assert fleet.groups["nvidia"] == ["razer", "p510"]
    assert fleet.groups["intel"] == ["dex5550"]
    assert fleet.groups["workstations"] == ["p620", "razer"]
    assert fleet.groups["servers"] == ["p510", "dex5550"]
    assert fleet.groups["laptops"] == ["razer"]
    assert fleet.groups["monitoring_server"] == ["p620"]
    assert fleet.groups["monitoring_clients"] == ["razer", "p510", "dex5550"]
    assert fleet.groups["ollama"] == ["p620", "p510"]


def test_values_of_the_reference_fleet(root):
    fleet = load_inventory_file(root / "inventory.py")
    p620, razer, dex = fleet.hosts["p620"], fleet.hosts["razer"], fleet.hosts["dex5550"]
    assert p620.rocm is not None and p620.rocm.hsaOverrideGfxVersion == "11.0.0"
    assert razer.prime is not None
    assert (razer.prime.intelBusId, razer.prime.nvidiaBusId) == ("PCI:0:2:0", "PCI:1:0:0")
    assert razer.graphics.compute == "cuda" and p620.graphics.compute == "rocm"
    assert dex.graphics.videoDriver == "modesetting" and dex.graphics.compute == "none"
    assert p620.features.monitoring.features.alerting
    assert razer.features.monitoring.serverHost == "p620"
    assert not dex.features.cloud.enable
    assert "ollama" not in dex.features.ai.providers.enabled


def test_the_workstation_and_the_laptop_have_a_graphical_session(root):
    fleet = load_inventory_file(root / "inventory.py")
    assert [h.name for h in fleet.hosts.values() if h.graphical] == ["p620", "razer"]


def test_each_nvidia_gpu_gets_a_driver_branch_that_supports_it(root):
    fleet = load_inventory_file(root / "inventory.py")
    razer, p510 = fleet.hosts["razer"], fleet.hosts["p510"]
    assert [g.architecture for g in razer.gpus] == [None, "turing"]
    assert razer.graphics.nvidiaPackage == "stable"
    # p510's Quadro P2000 is Pascal, which nixos-26.05's stable (595) driver no longer drives.
    assert [g.architecture for g in p510.gpus] == ["pascal"]
    assert p510.graphics.nvidiaPackage == "legacy_580"


def test_limit_selects_with_pyinfra_rules(root):
    fleet = load_inventory_file(root / "inventory.py")
    assert fleet.select(["nvidia"]) == ["razer", "p510"]
    assert fleet.select(["amd"]) == ["p620"]
    assert fleet.select(["p*"]) == ["p620", "p510"]
    assert fleet.select([]) == list(fleet.hosts)
    with pytest.raises(InventoryError, match=r"--limit 'nvidai' matches no host or group "
                       r"\(did you mean 'nvidia'\?\); hosts: p620, razer, p510, dex5550; "
                       r"groups: amd"):
        fleet.select(["nvidai"])
    with pytest.raises(InventoryError, match=r"--limit 'zzz' matches no host or group; hosts"):
        fleet.select(["zzz"])  # nothing close: no guess


PICK_WITH_PYINFRA = """
import sys
from pyinfra.api import State
from pyinfra.context import ctx_state
from pyinfra_cli.cli import _apply_inventory_limit
from pyinfra_cli.inventory import make_inventory

ctx_state.set(State())
inventory = make_inventory("inventory.py", cwd=".")
print(" ".join(sorted(h.name for h in _apply_inventory_limit(inventory, sys.argv[1:]))))
"""


@pytest.mark.parametrize(("limit", "hosts"), [("nvidia", "p510 razer"), ("amd", "p620"),
                                              ("intel", "dex5550")])
def test_pyinfra_applies_limit_to_the_same_hosts(root, limit, hosts):
    """pyinfra's own --limit code, fed our inventory, picks these hosts (in a subprocess:
    importing pyinfra_cli monkey-patches the process with gevent)."""
    result = subprocess.run([sys.executable, "-c", PICK_WITH_PYINFRA, limit], cwd=root,
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == hosts


def test_pyinfra_debug_inventory_lists_the_four_hosts(root):
    result = run_pyinfra("inventory.py", "debug-inventory", "--json", cwd=root)
    assert result.returncode == 0, result.stderr
    hosts = json.loads(result.stdout)
    assert [h["name"] for h in hosts] == ["p620", "razer", "p510", "dex5550"]


def test_pyinfra_limit_typo_fails_loudly(root):
    result = run_pyinfra("inventory.py", "debug-inventory", "--limit", "nvidai", cwd=root)
    assert result.returncode != 0
    assert ("--limit 'nvidai' matches no host or group (did you mean 'nvidia'?); hosts: p620, "
            "razer, p510, dex5550; groups: amd, ") in result.stderr
    assert "pyinfra error in inventory.py line " in result.stderr  # the user's file
    result = run_pyinfra("inventory.py", "debug-inventory", "--limit=nvidai", cwd=root)
    assert result.returncode != 0


def test_nixfleet_inventory_json_is_what_pyinfra_sees(root):
    ours = subprocess.run([sys.executable, "-m", "nixfleet", "inventory", "--json"], cwd=root,
                          capture_output=True, text=True, check=True).stdout
    theirs = run_pyinfra("inventory.py", "debug-inventory", "--json", cwd=root).stdout
    normalise = lambda hosts: [{**h, "groups": sorted(h["groups"])} for h in hosts]  # noqa: E731
    assert normalise(json.loads(ours)) == normalise(json.loads(theirs))


def test_nixfleet_inventory_limit(root):
    result = subprocess.run([sys.executable, "-m", "nixfleet", "inventory", "--limit", "nvidia",
                             "--json"], cwd=root, capture_output=True, text=True, check=True)
    assert [h["name"] for h in json.loads(result.stdout)] == ["razer", "p510"]
    result = subprocess.run([sys.executable, "-m", "nixfleet", "inventory", "--limit", "nvidai"],
                            cwd=root, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith("nixfleet: error: --limit 'nvidai' matches no host")
    assert len(result.stderr.strip().splitlines()) == 1


def test_strict_host_key_checking_everywhere(root):
    fleet = load_inventory_file(root / "inventory.py")
    for data in fleet.host_data.values():
        assert data["ssh_strict_host_key_checking"] == "yes"
        assert data["ssh_known_hosts_file"] == str(root / "known_hosts")


# --- bad data: one line naming host and field -----------------------------------------------

def _break_monitoring_typo(entries):
    entry(entries, "razer")["features"]["monitoring"]["mdoe"] = "client"


def _break_wrong_type(entries):
    features = entry(entries, "p510")["features"]
    features["development"] = {**features["development"], "enable": "yes"}


def _break_unknown_class(entries):
    entry(entries, "dex5550")["hardware_class"] = "arm"


def _break_unknown_role(entries):
    entry(entries, "razer")["roles"] = ["laptop", "gaming"]


def _break_server_host(entries):
    entry(entries, "p510")["features"]["monitoring"]["serverHost"] = "razer"


def _break_duplicate(entries):
    entries.append(("razer", dict(entry(entries, "razer"))))


def _dex_admin(entries) -> dict:
    """dex5550's own copy of the admin user (the inventory shares one dict between hosts)."""
    users = entry(entries, "dex5550")["users"]
    users[0] = dict(users[0])
    return users[0]


def _break_user_key(entries):
    del _dex_admin(entries)["sshKey"]


def _break_user_key_garbage(entries):
    _dex_admin(entries)["sshKey"] = "ssh-ed25519 bm90IGEga2V5"


def _break_host_name(entries):
    entries.append(("evil;rm -rf", dict(entry(entries, "dex5550"))))


def _break_unknown_top_level(entries):
    entry(entries, "p620")["featurs"] = {}


def _break_missing_server(entries):
    del entry(entries, "razer")["features"]["monitoring"]["serverHost"]


def _break_pascal_on_stable(entries):
    entry(entries, "p510")["graphics"]["nvidiaPackage"] = "stable"


def _break_pascal_open_modules(entries):
    entry(entries, "p510")["graphics"]["nvidiaOpen"] = True


def _break_ada_on_legacy_470(entries):
    razer = entry(entries, "razer")
    razer["gpus"][1]["model"] = "AD106M [GeForce RTX 4070 Max-Q / Mobile]"
    razer["graphics"] = {"videoDriver": "nvidia", "compute": "cuda",
                         "nvidiaPackage": "legacy_470"}


def _break_prime_sync_without_a_graphical_session(entries):
    entry(entries, "razer")["graphical"] = False


def _break_nvidia_model_without_chip(entries):
    entry(entries, "razer")["gpus"][1]["model"] = "GeForce RTX 2070 Mobile"


def _break_check_command_syntax(entries):
    # A check that could never pass (it cannot even be parsed) would fail every deploy.
    entry(entries, "p510")["deploy"] = {"checks": [
        {"name": "disk", "command": "test $(df --output=pcent / | tail -1 -lt 95"}]}


def _break_build_on_typo(entries):
    entry(entries, "razer")["deploy"] = {"buildOn": "p62"}


def _break_build_on_value(entries):
    entry(entries, "razer")["deploy"] = {"buildOn": "Local"}


def _break_builder_built_elsewhere(entries):
    # dex5550's own system is built on p620: it is not set up to build for razer.
    entry(entries, "dex5550")["deploy"] = {"buildOn": "p620"}
    entry(entries, "razer")["deploy"] = {"buildOn": "dex5550"}


BAD_DATA = [
    (_break_build_on_typo, "host razer: deploy.buildOn: 'p62' is not a host of the fleet "
                           "(did you mean 'p620'?)"),
    (_break_build_on_value, "host razer: deploy.buildOn: target, local or a fleet host's "
                            "name, got 'Local'"),
    (_break_builder_built_elsewhere,
     "host razer: deploy.buildOn: 'dex5550' cannot build for others: its own system is built "
     "elsewhere (its deploy.buildOn is 'p620')"),
    (_break_monitoring_typo,
     "host razer: features.monitoring.mdoe: unknown field (did you mean 'mode'?)"),
    (_break_wrong_type, "host p510: features.development.enable: Input should be a valid "
                        "boolean, got 'yes'"),
    (_break_unknown_class, "host dex5550: hardware_class: Input should be 'amd', 'nvidia' or "
                           "'intel', got 'arm'"),
    (_break_unknown_role, "host razer: roles.1: Input should be 'workstation', 'laptop', "
                          "'server' or 'sff', got 'gaming'"),
    (_break_server_host, "host p510: features.monitoring.serverHost: 'razer' is not a "
                         "monitoring server (servers: p620)"),
    (_break_duplicate, "host razer: duplicate host"),
    (_break_user_key, "host dex5550: users.0.sshKey: Field required"),
    (_break_user_key_garbage, "host dex5550: users.0.sshKey: SSH public key blob does not "
                              "match its type ssh-ed25519"),
    (_break_host_name, "host 'evil;rm -rf': unsafe host name"),
    (_break_unknown_top_level, "host p620: featurs: unknown field (did you mean 'features'?)"),
    (_break_missing_server, "host razer: features.monitoring.serverHost: a monitoring client "
                            "needs one"),
    (_break_pascal_on_stable, "host p510: graphics.nvidiaPackage: stable (the 595 driver) does "
                              "not support the GP106GL [Quadro P2000] (Pascal); use legacy_580"),
    (_break_pascal_open_modules, "host p510: graphics.nvidiaOpen: NVIDIA's open kernel modules "
                                 "need Turing or newer; the GP106GL [Quadro P2000] is Pascal"),
    (_break_ada_on_legacy_470,
     "host razer: graphics.nvidiaPackage: legacy_470 (the 470 driver) does not support the "
     "AD106M [GeForce RTX 4070 Max-Q / Mobile] (Ada); use stable"),
    (_break_prime_sync_without_a_graphical_session,
     "host razer: prime.sync: PRIME sync only configures the X server; set graphical: true "
     "(or sync: false)"),
    (_break_check_command_syntax,
     "host p510: deploy.checks.0: command: not valid sh, the check could never pass: "),
    (_break_nvidia_model_without_chip,
     "host razer: gpus.1: model: cannot tell the NVIDIA architecture of 'GeForce RTX 2070 "
     "Mobile'; name the GPU as lspci does, chip first (e.g. 'GP106GL [Quadro P2000]')"),
]


@pytest.mark.parametrize(("breaker", "message"), BAD_DATA, ids=[b.__name__ for b, _ in BAD_DATA])
def test_bad_data_is_one_clear_line(host_entries, root, breaker, message):
    breaker(host_entries)
    with pytest.raises(InventoryError) as raised:
        fleet_of(host_entries, root)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_conflicting_group_data_is_refused(host_entries, root, tmp_path):
    group_data = load_group_data(root / "group_data")
    group_data["laptops"] = {"graphics": {"videoDriver": "modesetting", "compute": "none"}}
    with pytest.raises(InventoryError, match=r"host razer: graphics: set differently by "
                       r"group_data/nvidia.py and group_data/laptops.py"):
        build_fleet(host_entries, group_data)


def test_bad_inventory_under_pyinfra_is_one_line(root, tmp_path):
    """The same check fires when pyinfra itself loads a broken inventory.py."""
    shutil.copytree(root / "group_data", tmp_path / "group_data")
    text = (root / "inventory.py").read_text()
    (tmp_path / "inventory.py").write_text(
        text.replace('"mode": "client", "serverHost"', '"mdoe": "client", "serverHost"'))
    result = run_pyinfra("inventory.py", "debug-inventory", cwd=tmp_path,
                         env={"PYTHONPATH": str(root)})
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1
    # Named after the user's inventory.py and its call of nixfleet_inventory, not nixfleet's code.
    call = next(number for number, line in enumerate(text.splitlines(), 1)
                if "= nixfleet_inventory(" in line)
    assert errors[0].endswith(f"pyinfra error in inventory.py line {call}: host razer: "
                              "features.monitoring.mdoe: unknown field (did you mean 'mode'?); "
                              "known: enable, features, mode, serverHost"), errors[0]


def test_unknown_target_is_refused(root):
    result = run_pyinfra("inventory.py", "debug-inventory", cwd=root,
                         env={"NIXFLEET_TARGET": "labb"})
    assert result.returncode != 0
    assert "NIXFLEET_TARGET: unknown target 'labb' (known: fleet, lab)" in result.stderr
