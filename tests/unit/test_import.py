"""`nixfleet import PATH`: hosts from a flake repository of the usual shape
(tests/fixtures/flake-repo: hosts/<name>/variables.nix importing shared and hardware-profile
files) into a copy of this repository's inventory.py, evaluated by nix-instantiate."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nixfleet.cli import main
from nixfleet.commands import import_flake
from nixfleet.inventory import load_inventory_file
from tests.unit.repo_support import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "flake-repo"
ADMIN_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGGa1qpwVLoSJtqTbhJ12m0NcLDrezd8GxKzGd55hExO"


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    """This repository's inventory.py and group_data/, in a directory of their own."""
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    shutil.copy(ROOT / "inventory.py", fleet / "inventory.py")
    shutil.copytree(ROOT / "group_data", fleet / "group_data")
    return fleet / "inventory.py"


def flake(tmp_path: Path, *hosts: str) -> Path:
    """The fixture repository with only `hosts` under hosts/."""
    repo = tmp_path / "flake"
    shutil.copytree(FIXTURE, repo)
    for host in (repo / "hosts").iterdir():
        if host.name not in hosts:
            shutil.rmtree(host)
    return repo


def run(capsys: pytest.CaptureFixture[str], inventory: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--inventory", str(inventory), "import", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_each_attribute_is_evaluated_alone_and_paths_and_errors_are_named():
    read = import_flake.read_variables(FIXTURE / "hosts" / "workbox" / "variables.nix")
    assert read.values["hostName"] == "workbox"
    assert read.values["gpu"] == "amd"  # from hardware-profiles/amd-workstation.nix
    assert read.values["username"] == "olafkfreund"  # from shared/variables.nix
    assert read.values["theme"] == {"scheme": "gruvbox-dark-medium"}
    assert read.values["paths"] == {"flakeDir": "/home/olafkfreund/.config/nixos"}
    assert "secretsFile" not in read.values and "monitoringServer" not in read.values
    where = FIXTURE / "hosts" / "workbox"
    assert read.skipped == [
        "monitoringServer (workbox: the monitoring server is chosen in modules/monitoring.nix)",
        f"paths.hostDir (a path: {where})",
        f"secretsFile (a path: {where}/secrets.yaml)",
        f"theme.wallpaper (a path: {where}/wallpaper.png)"]


def test_without_write_it_prints_what_it_would_add_and_changes_nothing(
        tmp_path, inventory, capsys):
    before = inventory.read_bytes()
    code, out, err = run(capsys, inventory, str(flake(tmp_path, "workbox", "nas")))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert 'add ("workbox", {' in lines and 'add ("nas", {' in lines
    assert ("hosts/workbox/variables.nix: skipped monitoringServer (workbox: the monitoring "
            "server is chosen in modules/monitoring.nix); paths.hostDir (a path: hosts/workbox); "
            "secretsFile (a path: hosts/workbox/secrets.yaml); theme.wallpaper (a path: "
            "hosts/workbox/wallpaper.png)") in lines
    assert lines[-1] == "inventory.py: would add nas, workbox (--write writes it)"
    assert inventory.read_bytes() == before


def test_write_adds_the_hosts_and_the_inventory_loads_with_them(tmp_path, inventory, capsys):
    repo = flake(tmp_path, "workbox", "nas")
    code, out, err = run(capsys, inventory, str(repo), "--write")
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == "inventory.py: add nas, workbox: written"

    fleet = load_inventory_file(inventory)
    assert list(fleet.hosts) == ["p620", "razer", "p510", "dex5550", "nas", "workbox"]
    workbox, nas = fleet.hosts["workbox"], fleet.hosts["nas"]
    assert (workbox.hardware_class, workbox.graphics.compute, workbox.roles) == (
        "amd", "rocm", ["workstation"])
    assert [(u.name, u.fullName, u.email, u.sshKey, u.groups) for u in workbox.users] == [
        ("olafkfreund", "Olaf K-Freund", "olaf@example.org", ADMIN_KEY,  # inventory.py's key
         ["wheel", "networkmanager", "video"])]
    assert (workbox.system.timezone, workbox.system.locale, workbox.system.keyboardLayouts) == (
        "Europe/Oslo", "en_GB.UTF-8", ["gb", "us"])
    assert workbox.system.environment == {"EDITOR": "nvim", "BROWSER": "firefox"}
    assert workbox.system.nfsExports == [
        "/export/media 192.168.1.0/24(rw,sync,no_subtree_check)",
        "/export/backup 192.168.1.10(rw,sync,no_root_squash)"]
    assert workbox.system.theme == {"scheme": "gruvbox-dark-medium"}
    assert workbox.system.paths.flakeDir == "/home/olafkfreund/.config/nixos"
    assert workbox.system.nameservers == ["1.1.1.1", "8.8.8.8"]  # group_data/all.py's
    assert (nas.hardware_class, nas.graphics.compute, nas.users[0].name) == (
        "intel", "none", "storage")
    assert "workbox" in fleet.groups["amd"] and "nas" in fleet.groups["intel"]
    assert max(len(line) for line in inventory.read_text().splitlines()) <= 100

    # A second import finds them there, the same.
    code, out, _ = run(capsys, inventory, str(repo), "--write")
    assert code == 0
    assert out.splitlines() == [
        "unchanged nas",
        "hosts/workbox/variables.nix: skipped monitoringServer (workbox: the monitoring server "
        "is chosen in modules/monitoring.nix); paths.hostDir (a path: hosts/workbox); "
        "secretsFile (a path: hosts/workbox/secrets.yaml); theme.wallpaper (a path: "
        "hosts/workbox/wallpaper.png)",
        "unchanged workbox", "inventory.py: nothing to change"]


def test_an_unknown_gpu_is_named_and_the_other_hosts_still_import(tmp_path, inventory, capsys):
    code, out, _ = run(capsys, inventory, str(flake(tmp_path, "oddball", "nas")), "--write")
    assert code == 1
    assert ("oddball: not imported: gpu 'matrox' is none of amd, nvidia, intel, hybrid, "
            "intel-nvidia, nvidia-intel") in out.splitlines()
    assert set(load_inventory_file(inventory).hosts) == {"p620", "razer", "p510", "dex5550",
                                                          "nas"}


def test_a_host_already_there_is_refused_without_force_and_nothing_is_written(
        tmp_path, inventory, capsys):
    repo = flake(tmp_path, "p620", "nas")
    before = inventory.read_bytes()
    code, out, _ = run(capsys, inventory, str(repo), "--write")
    assert code == 1
    lines = out.splitlines()
    assert ('p620: in inventory.py already, differs: users[0].groups: ["wheel", '
            '"networkmanager", "video", "audio", "docker", "libvirtd"] -> ["wheel", '
            '"networkmanager", "video"]; system.timezone: "Europe/London" -> '
            '"America/New_York"; system.environment.BROWSER: "google-chrome-stable" -> '
            '"firefox"') in lines
    assert lines[-1] == ("inventory.py: nothing written: p620 is there already (--force "
                         "replaces the imported keys)")
    assert inventory.read_bytes() == before

    code, out, _ = run(capsys, inventory, str(repo), "--write", "--force")
    assert code == 0
    assert out.splitlines()[-1] == "inventory.py: add nas; replace p620: written"
    p620 = load_inventory_file(inventory).hosts["p620"]
    assert p620.system.timezone == "America/New_York"
    # What the import does not set stays: the roles, features, GPU details and host key.
    assert p620.roles == ["workstation"] and p620.features.monitoring.mode == "server"
    assert p620.rocm is not None and p620.rocm.hsaOverrideGfxVersion == "11.0.0"
    assert p620.ssh.hostKey is not None


@pytest.mark.parametrize(("exists", "message"), [
    (False, "flake-less: not a directory"), (True, "flake-less: no hosts/<name>/variables.nix")])
def test_a_path_that_is_no_flake_repository_is_one_line(tmp_path, inventory, capsys, exists,
                                                        message):
    if exists:
        (tmp_path / "flake-less").mkdir()
    code, out, err = run(capsys, inventory, str(tmp_path / "flake-less"))
    assert code == 1 and out == ""
    assert err.startswith("nixfleet: error: ") and message in err and err.count("\n") == 1


def test_a_user_without_a_key_anywhere_needs_ssh_key(tmp_path, inventory, capsys):
    repo = flake(tmp_path, "nas")
    variables = repo / "hosts" / "nas" / "variables.nix"
    variables.write_text(variables.read_text().replace("  sshKey =", "  # sshKey ="))
    code, out, _ = run(capsys, inventory, str(repo))
    assert code == 1
    assert out.splitlines()[0] == ("nas: not imported: user storage: no SSH public key (none "
                                   "in variables.nix, no user storage in inventory.py; give "
                                   "one with --ssh-key)")
    code, out, _ = run(capsys, inventory, str(repo), "--ssh-key", ADMIN_KEY, "--write")
    assert code == 0
    assert load_inventory_file(inventory).hosts["nas"].users[0].sshKey == ADMIN_KEY
