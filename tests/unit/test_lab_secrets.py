"""Lab secrets without a running lab: dummy values for the lab hosts' keys, what the lab flake
carries, and the lab activation's agenix part (with the real age CLI)."""

from __future__ import annotations

import grp
import importlib.util
import json
import os
import pwd
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pyrage
import pytest

from nixfleet.errors import NixfleetError
from nixfleet.inventory import Fleet, load_inventory_file
from nixfleet.lab.config import LabPaths
from nixfleet.lab.secrets import (
    ensure_lab_secrets,
    lab_fleet,
    lab_store,
    nix_public_key,
    ssh_public_key,
)
from nixfleet.lab.target import lab_flake_files
from nixfleet.secrets.agefile import read_header, ssh_key_tag
from tests.unit.test_lab_flake import toplevels

ROOT = Path(__file__).resolve().parents[2]
ACTIVATION = ROOT / "nixfleet" / "lab" / "files" / "switch_to_configuration.py"


def keygen(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
                   check=True)


def host_key_path(paths: LabPaths, host: str) -> Path:
    return paths.host_dir(host) / "upper" / "etc" / "ssh" / "ssh_host_ed25519_key"


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return load_inventory_file(ROOT / "inventory.py")


@pytest.fixture
def paths(tmp_path: Path, fleet: Fleet) -> LabPaths:
    """A lab state directory as `lab up` leaves it: the admin key and each host's key."""
    paths = LabPaths(state=tmp_path / "state", cache=tmp_path / "cache")
    keygen(paths.key)
    for host in fleet.hosts:
        keygen(host_key_path(paths, host))
    return paths


def ensure(fleet: Fleet, paths: LabPaths) -> list[str]:
    lines: list[str] = []
    ensure_lab_secrets(lab_fleet(fleet.hosts.values(), paths, fleet.groups), ROOT, paths,
                       lines.append)
    return lines


def decrypt(data: bytes, key: Path) -> bytes:
    return pyrage.decrypt(data, [pyrage.ssh.Identity.from_buffer(key.read_bytes())])


def test_lab_up_creates_a_dummy_for_every_secret_and_only_once(fleet, paths):
    assert ensure(fleet, paths) == [f"lab: secrets: 16 created, 0 re-encrypted to the lab's "
                                    f"keys ({paths.state / 'secrets'})"]
    files = sorted(p.name for p in (paths.state / "secrets").iterdir())
    assert len(files) == 16 and "wifi-password.age" in files
    before = {p.name: p.read_bytes() for p in (paths.state / "secrets").iterdir()}
    assert ensure(fleet, paths) == []
    assert {p.name: p.read_bytes() for p in (paths.state / "secrets").iterdir()} == before
    value = decrypt(before["wifi-password.age"], host_key_path(paths, "razer"))
    assert value.startswith(b"lab-dummy-wifi-password-")
    assert decrypt(before["wifi-password.age"], paths.key) == value  # the lab admin's too
    with pytest.raises(pyrage.DecryptError):
        decrypt(before["wifi-password.age"], host_key_path(paths, "p620"))


def test_a_reset_host_gets_its_secrets_re_encrypted_with_the_same_values(fleet, paths):
    ensure(fleet, paths)
    old = (paths.state / "secrets" / "wifi-password.age").read_bytes()
    value = decrypt(old, paths.key)
    key = host_key_path(paths, "razer")
    key.unlink()
    Path(f"{key}.pub").unlink()
    keygen(key)  # `lab reset razer`: a new host key
    with pytest.raises(NixfleetError, match=r"lab secret \S+ is not encrypted to razer's lab "
                                            r"host key; run `nixfleet lab up`"):
        lab_flake_files(fleet.hosts.values(), ROOT, paths)
    assert ensure(fleet, paths)[0].startswith("lab: secrets: 0 created, 12 re-encrypted")
    new = (paths.state / "secrets" / "wifi-password.age").read_bytes()
    assert new != old and decrypt(new, key) == value


def test_the_lab_flake_carries_each_hosts_list_and_the_files(fleet, paths):
    ensure(fleet, paths)
    files = lab_flake_files(fleet.hosts.values(), ROOT, paths)
    manifests = {h: json.loads(files[f"hosts/{h}.secrets.json"]) for h in fleet.hosts}
    names = {h: {s["name"] for s in m} for h, m in manifests.items()}
    assert names["razer"] >= {"wifi-password", "github-token", "api-openai"}
    assert "wifi-password" not in names["p620"] | names["p510"] | names["dex5550"]
    assert "binary-cache-key" in names["p620"] and "postgres-password" in names["dex5550"]
    api = next(s for s in manifests["razer"] if s["name"] == "api-openai")
    assert api == {"name": "api-openai", "owner": "olafkfreund", "group": "users",
                   "mode": "0600"}
    for host, secret_names in names.items():
        tag = ssh_key_tag(Path(f"{host_key_path(paths, host)}.pub").read_text())
        for name in secret_names:
            assert tag in read_header(files[f"secrets/{name}.age"]).ssh_recipients
    assert not any(b"lab-dummy" in content for content in files.values())


def test_without_lab_values_the_flake_says_to_run_lab_up(fleet, paths):
    with pytest.raises(NixfleetError, match=r"lab secret \S+: no .*; run `nixfleet lab up`"):
        lab_flake_files(fleet.hosts.values(), ROOT, paths)


def test_a_repository_without_rules_has_no_secrets(fleet, paths, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "nix" / "lab", repo / "nix" / "lab")
    files = lab_flake_files(fleet.hosts.values(), repo, paths)
    assert json.loads(files["hosts/razer.secrets.json"]) == []
    assert not any(path.startswith("secrets/") for path in files)


# --- the binary cache's signing key ----------------------------------------------------------


def test_the_binary_cache_key_is_a_nix_key_whose_public_half_the_flake_carries(fleet, paths):
    ensure(fleet, paths)
    store = lab_store(lab_fleet(fleet.hosts.values(), paths, fleet.groups), ROOT, paths)
    assert store is not None
    secret = store.decrypt("binary-cache-key")
    files = lab_flake_files(fleet.hosts.values(), ROOT, paths)

    assert secret.startswith(b"nixfleet-lab-cache-1:")
    assert files["binary-cache.pub"].decode() == nix_public_key(secret)
    # An older lab's dummy value: no cache settings until `lab up` replaces it by a key.
    store.update("binary-cache-key", lambda _: b"lab-dummy-binary-cache-key-0123\n")
    assert "binary-cache.pub" not in lab_flake_files(fleet.hosts.values(), ROOT, paths)
    assert ensure(fleet, paths)[0].startswith("lab: secrets: 1 created, 0 re-encrypted")
    assert nix_public_key(store.decrypt("binary-cache-key")) is not None
    assert ensure(fleet, paths) == []


def test_the_fetch_key_is_an_ssh_key_whose_public_half_the_flake_carries(fleet, paths,
                                                                         tmp_path):
    ensure(fleet, paths)
    store = lab_store(lab_fleet(fleet.hosts.values(), paths, fleet.groups), ROOT, paths)
    assert store is not None
    secret = store.decrypt("builder-ssh-key")
    files = lab_flake_files(fleet.hosts.values(), ROOT, paths)
    # OpenSSH reads it, and derives the public half the flake carries.
    key = tmp_path / "key"
    key.write_bytes(secret)
    key.chmod(0o600)
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True,
                             text=True, check=True).stdout.split()
    assert files["builder-ssh.pub"].decode() == " ".join(derived[:2]) == ssh_public_key(secret)
    # An older lab's dummy value: replaced by a key at the next `lab up`.
    store.update("builder-ssh-key", lambda _: b"lab-dummy-builder-ssh-key-0123\n")
    assert "builder-ssh.pub" not in lab_flake_files(fleet.hosts.values(), ROOT, paths)
    assert ensure(fleet, paths)[0].startswith("lab: secrets: 1 created, 0 re-encrypted")
    assert ssh_public_key(store.decrypt("builder-ssh-key")) is not None


@pytest.mark.skipif(shutil.which("nix-instantiate") is None, reason="needs nix-instantiate")
def test_the_monitoring_server_serves_the_cache_its_clients_trust(fleet, paths, tmp_path):
    ensure(fleet, paths)
    files = lab_flake_files(fleet.hosts.values(), ROOT, paths)
    for name, content in files.items():
        (tmp_path / "flake" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "flake" / name).write_bytes(content)
    lab = toplevels(tmp_path, "etcFiles", "units")
    units = {host: json.loads(lab[host]["units"]) for host in fleet.hosts}
    settings = {host: json.loads(lab[host]["etcFiles"]).get("nix/settings.conf")
                for host in fleet.hosts}

    # As nix/lib/host-module.nix: the monitoring server serves, the hosts naming it use it.
    assert [h for h in fleet.hosts if "nix-serve" in units[h]] == ["p620"]
    assert units["p620"]["nix-serve"] == {
        "description": "nix-serve binary cache (lab stand-in)", "port": 5000,
        "execStart": "/usr/lib/nixfleet-lab/standins/nix-serve --listen :5000",
        "serviceExtra": ["Environment=NIX_SECRET_KEY_FILE=/run/agenix/binary-cache-key"],
        "type": "simple", "restart": "on-failure"}
    # Every host trusts the key (what a builder host signs for it too); the server asks no cache.
    assert settings["p620"] == f"trusted-public-keys = {files['binary-cache.pub'].decode()}\n"
    for host in ("razer", "p510", "dex5550"):
        assert settings[host] == ("substituters = http://p620:5000\n"
                                  f"trusted-public-keys = {files['binary-cache.pub'].decode()}\n"
                                  "connect-timeout = 5\n")


# --- the lab activation's agenix part ---------------------------------------------------------


@pytest.fixture
def activation(tmp_path, monkeypatch) -> ModuleType:
    if not shutil.which("age"):
        pytest.skip("the age CLI is not installed (scripts/setup installs it)")
    spec = importlib.util.spec_from_file_location("switch_to_configuration", ACTIVATION)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    keygen(tmp_path / "host" / "ssh_host_ed25519_key")
    monkeypatch.setattr(module, "AGENIX", tmp_path / "run" / "agenix")
    monkeypatch.setattr(module, "AGENIX_GENERATIONS", tmp_path / "run" / "agenix.d")
    monkeypatch.setattr(module, "AGE_IDENTITIES", (tmp_path / "host" / "ssh_host_ed25519_key",))
    (tmp_path / "run").mkdir()
    return module


def age_file(tmp_path: Path, name: str, value: bytes) -> str:
    public = (tmp_path / "host" / "ssh_host_ed25519_key.pub").read_text()
    path = tmp_path / "store" / f"{name}.age"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(pyrage.encrypt(value, [pyrage.ssh.Recipient.from_str(public)]))
    return str(path)


def secret(tmp_path: Path, name: str, value: bytes, mode: str = "0400") -> dict:
    return {"name": name, "file": age_file(tmp_path, name, value), "mode": mode,
            "owner": pwd.getpwuid(os.getuid()).pw_name, "group": grp.getgrgid(os.getgid()).gr_name}


def test_activation_decrypts_into_a_new_generation_and_drops_the_old(activation, tmp_path,
                                                                     capsys):
    agenix = tmp_path / "run" / "agenix"
    first = [secret(tmp_path, "api-openai", b"v1", "0600"), secret(tmp_path, "smtp", b"s")]
    assert activation.install_secrets(first)
    assert os.readlink(agenix) == str(tmp_path / "run" / "agenix.d" / "1")
    assert (agenix / "api-openai").read_bytes() == b"v1"
    assert (agenix / "api-openai").stat().st_mode & 0o777 == 0o600
    assert (agenix / "smtp").stat().st_mode & 0o777 == 0o400
    assert activation.install_secrets([secret(tmp_path, "api-openai", b"v2", "0600")])
    assert os.readlink(agenix).endswith("agenix.d/2")
    assert sorted(p.name for p in agenix.iterdir()) == ["api-openai"]
    assert (agenix / "api-openai").read_bytes() == b"v2"
    assert sorted(p.name for p in (tmp_path / "run" / "agenix.d").iterdir()) == ["2"]
    assert b"v1" not in capsys.readouterr().err.encode()


def test_a_secret_that_cannot_be_decrypted_fails_and_keeps_the_previous_secrets(
        activation, tmp_path, capsys):
    agenix = tmp_path / "run" / "agenix"
    assert activation.install_secrets([secret(tmp_path, "smtp", b"good")])
    damaged = secret(tmp_path, "smtp", b"newer")
    data = bytearray(Path(damaged["file"]).read_bytes())
    data[-5] ^= 0xFF  # the payload, not the header: only decryption notices
    Path(damaged["file"]).write_bytes(bytes(data))
    assert not activation.install_secrets([damaged, secret(tmp_path, "other", b"o")])
    err = capsys.readouterr().err
    assert "[agenix] error: smtp: age: error:" in err
    assert "keeping the previous secrets (generation 1)" in err
    assert os.readlink(agenix).endswith("agenix.d/1")
    assert (agenix / "smtp").read_bytes() == b"good"
    assert sorted(p.name for p in (tmp_path / "run" / "agenix.d").iterdir()) == ["1"]


def test_an_unknown_owner_fails_activation(activation, tmp_path, capsys):
    bad = {**secret(tmp_path, "smtp", b"x"), "owner": "no-such-user-here"}
    assert not activation.install_secrets([bad])
    assert "unknown owner or group no-such-user-here:" in capsys.readouterr().err
    assert not (tmp_path / "run" / "agenix").exists()


# --- the delivery check against the lab's values ---------------------------------------------


def test_the_check_compares_each_host_with_its_rules_and_reports_unreachable_ones(
        fleet, paths, monkeypatch):
    from nixfleet.secrets import delivery

    ensure(fleet, paths)
    keyed = lab_fleet(fleet.hosts.values(), paths, fleet.groups)
    store = lab_store(keyed, ROOT, paths)
    assert store is not None
    razer = {name: {"sha256": store.sha256(name), "owner": rule.owners["razer"],
                    "group": rule.group, "mode": rule.mode.lstrip("0")}
             for name, rule in store.rules.secrets.items() if "razer" in rule.owners}
    answer = json.dumps({delivery.FACT: {"razer": {"generation": 4, "files": razer}}})
    calls = []

    def run_pyinfra(inventory, args, limits=()):
        calls.append((args, list(limits)))
        return subprocess.CompletedProcess(args, 1, answer, "    [p620] SSH error (Connection "
                                           "refused)\n--> pyinfra error: No hosts remaining!\n")

    monkeypatch.setattr(delivery, "run_pyinfra", run_pyinfra)
    result = delivery.check_delivery(store, keyed, ROOT / "inventory.py", ["razer", "p620"])
    assert calls == [(["fact", delivery.FACT, "--json"], ["razer", "p620"])]
    assert [(d.host, d.reachable, d.generation) for d in result] == [("p620", False, None),
                                                                   ("razer", True, 4)]
    assert [p.line for p in result[0].problems] == [
        "p620: unreachable: SSH error (Connection refused)"]
    assert result[1].problems == [] and sorted(result[1].ok) == sorted(razer)
