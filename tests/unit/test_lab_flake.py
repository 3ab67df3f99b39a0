"""The lab flake gives each host what the real flake's modules would, without a running lab:
/etc/ai-providers.json from the real flake's own nix/lib/ai-providers.nix, Ollama's models from
the same table; and the lab activation installs a generation's /etc files as NixOS does."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from nixfleet import nixcheck
from nixfleet.inventory import Fleet, load_inventory_file
from nixfleet.lab import secrets as lab_secrets
from nixfleet.lab import target
from nixfleet.lab.config import LabPaths

ROOT = Path(__file__).resolve().parents[2]
ACTIVATION = ROOT / "nixfleet" / "lab" / "files" / "switch_to_configuration.py"
needs_nix = pytest.mark.skipif(shutil.which("nix-instantiate") is None,
                               reason="needs nix-instantiate (any Nix 2.x)")


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NIXFLEET_TARGET", "fleet")
        return load_inventory_file(ROOT / "inventory.py")


def lab_flake(fleet: Fleet, root: Path, directory: Path,
              monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """The lab flake's files for `root`, written to `directory` (its secrets left out: they
    need a lab's host keys, tests/unit/test_lab_secrets.py has them)."""
    monkeypatch.setattr(lab_secrets, "lab_secret_files", lambda *args: {})
    paths = LabPaths(state=directory / "state", cache=directory / "cache")
    files = target.lab_flake_files(fleet.hosts.values(), root, paths)
    for name, content in files.items():
        path = directory / "flake" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return files


def toplevels(directory: Path, *attributes: str) -> dict[str, dict[str, Any]]:
    """Each lab host's toplevel derivation attributes (evaluated, not built), from the lab
    flake written under directory/flake: these (default: etcFiles swBin units)."""
    wanted = " ".join(attributes or ("etcFiles", "swBin", "units"))
    return nixcheck.evaluate("""{ flakeDir }:
      builtins.mapAttrs (name: host: {
        inherit (host.config.system.build.toplevel) """ + wanted + """;
      }) ((import (/. + flakeDir + "/flake.nix")).outputs {
        self = null;
        labpkgs = (import (/. + flakeDir + "/labpkgs/flake.nix")).outputs { self = null; };
      }).nixosConfigurations
    """, flakeDir=str(directory / "flake"))


@needs_nix
def test_the_lab_renders_ai_providers_json_as_the_real_flake(fleet, tmp_path, monkeypatch):
    lab_flake(fleet, ROOT, tmp_path, monkeypatch)
    lab = toplevels(tmp_path)
    # What modules/features/ai.nix writes: the real flake's host data through its own reader.
    real = nixcheck.evaluate("""{ nixDir }: let lib = /. + nixDir + "/lib"; in
      builtins.mapAttrs (name: data: builtins.toJSON (import (lib + "/ai-providers.nix") {
        settings = data.features.ai.providers;
        secretsDir = "/run/agenix";
      })) (import (lib + "/fleet.nix") { hostsDir = /. + nixDir + "/hosts"; }).hosts
    """, nixDir=str(ROOT / "nix"))

    assert sorted(lab) == sorted(real) == sorted(fleet.hosts)
    for host in fleet.hosts:
        etc = json.loads(lab[host]["etcFiles"])
        assert etc["ai-providers.json"] == real[host], host
        assert sorted(etc) == ["ai-providers.json", "nixfleet/health.tsv"]
    p620 = json.loads(json.loads(lab["p620"]["etcFiles"])["ai-providers.json"])
    assert p620["providers"]["ollama"]["models"] == ["mistral-small3.1", "llama3.2"]


@needs_nix
def test_a_host_without_ai_providers_gets_no_ai_providers_json(fleet, tmp_path, monkeypatch):
    host = fleet.hosts["razer"]
    providers = host.features.ai.providers.model_copy(update={"enable": False})
    ai = host.features.ai.model_copy(update={"providers": providers})
    features = host.features.model_copy(update={"ai": ai})
    changed = Fleet(hosts={"razer": host.model_copy(update={"features": features})},
                    groups={}, host_data={})
    lab_flake(changed, ROOT, tmp_path, monkeypatch)

    assert sorted(json.loads(toplevels(tmp_path)["razer"]["etcFiles"])) == [
        "nixfleet/health.tsv"]
    # Nor ai-cli: modules/features/ai.nix installs it with the providers' configuration.
    assert json.loads(toplevels(tmp_path)["razer"]["swBin"]) == {}


@needs_nix
def test_ollama_loads_the_ollama_providers_models_into_its_state_directory(
        fleet, tmp_path, monkeypatch):
    lab_flake(fleet, ROOT, tmp_path, monkeypatch)
    lab = toplevels(tmp_path)
    ollama_hosts = [h for h in fleet.hosts if "ollama" in json.loads(lab[h]["units"])]

    assert ollama_hosts == fleet.groups["ollama"] == ["p620", "p510"]
    unit = json.loads(lab["p620"]["units"])["ollama"]
    assert unit["execStart"] == ("/usr/lib/nixfleet-lab/standins/ollama serve "
                                 "--load-models mistral-small3.1,llama3.2")
    assert unit["port"] == 11434
    assert unit["serviceExtra"] == ["Environment=OLLAMA_HOST=0.0.0.0:11434",
                                    "Environment=OLLAMA_MODELS=/var/lib/ollama/models",
                                    "StateDirectory=ollama"]
    # p510's Ollama is not scraped (no aiMetrics): only local, as modules/features/ai.nix.
    assert "Environment=OLLAMA_HOST=127.0.0.1:11434" in (
        json.loads(lab["p510"]["units"])["ollama"]["serviceExtra"])
    ai_cli = {"ai-cli": "/usr/lib/nixfleet-lab/ai-cli", "ai-chat": "/usr/lib/nixfleet-lab/ai-cli"}
    assert json.loads(lab["p620"]["swBin"]) == {
        "ollama": "/usr/lib/nixfleet-lab/standins/ollama", **ai_cli}
    assert json.loads(lab["razer"]["swBin"]) == ai_cli


def test_the_lab_flake_carries_the_real_flakes_lib_files(fleet, tmp_path, monkeypatch):
    files = lab_flake(fleet, ROOT, tmp_path, monkeypatch)
    # A configuration without nix/lib (the lab tests' copies) gets this checkout's.
    copy = tmp_path / "copy"
    shutil.copytree(ROOT / "nix" / "lab", copy / "nix" / "lab")
    copied = lab_flake(fleet, copy, tmp_path / "other", monkeypatch)

    for name in ("lib/ports.json", "lib/ai-providers.nix"):
        assert files[name] == copied[name] == (ROOT / "nix" / name).read_bytes()
    assert "ports.json" not in files


def test_the_lab_flake_carries_its_lock_and_its_input_where_the_hosts_have_them(
        fleet, tmp_path, monkeypatch):
    """Nix 2.8 cannot fetch an input locked by a relative path into a store that lacks it: the
    hosts' lock names their copy of labpkgs by the repository's narHash."""
    files = lab_flake(fleet, ROOT, tmp_path, monkeypatch)
    ours = json.loads((ROOT / "nix" / "lab" / "flake.lock").read_text())["nodes"]["labpkgs"]
    theirs = json.loads(files["flake.lock"])["nodes"]["labpkgs"]
    assert theirs["original"] == ours["original"] == {"path": "./labpkgs", "type": "path"}
    assert theirs["locked"] == {"narHash": ours["locked"]["narHash"],
                                "path": "/etc/nixos/labpkgs", "type": "path"}
    for name in ("flake.nix", "versions.json"):
        assert files[f"labpkgs/{name}"] == (ROOT / "nix" / "lab" / "labpkgs" / name).read_bytes()


@needs_nix
def test_lab_hosts_report_the_nixos_release_of_the_real_flakes_nixpkgs(fleet, tmp_path,
                                                                       monkeypatch):
    files = lab_flake(fleet, ROOT, tmp_path, monkeypatch)
    assert files["lib/fleet-flake.nix"] == (ROOT / "nix" / "flake.nix").read_bytes()
    systems = toplevels(tmp_path, "name", "nixosVersion")
    # Not data.system.stateVersion (25.05, the release the hosts were installed with).
    assert {h.system.stateVersion for h in fleet.hosts.values()} == {"25.05"}
    for name, system in systems.items():
        assert system == {"name": f"nixos-system-{name}-26.05.lab", "nixosVersion": "26.05.lab"}


# --- the lab activation's /etc ---------------------------------------------------------------


@pytest.fixture
def activation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("switch_to_configuration", ACTIVATION)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    monkeypatch.setattr(module, "ETC", tmp_path / "etc")
    (tmp_path / "etc").mkdir()
    return module


def generation(directory: Path, files: dict[str, str] | None) -> Path:
    """A toplevel with these environment.etc files (None: one from before etc.json)."""
    (directory / "etc" / "systemd" / "system").mkdir(parents=True)
    for name, text in (files or {}).items():
        (directory / "etc" / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / "etc" / name).write_text(text)
    if files is not None:
        (directory / "etc.json").write_text(json.dumps(sorted(files)))
    return directory


def test_activation_links_the_generations_etc_files_and_removes_dropped_ones(
        activation, tmp_path, capsys):
    etc = tmp_path / "etc"
    (etc / "hostname").write_text("p620\n")
    first = generation(tmp_path / "gen1", {"ai-providers.json": '{"timeout":30}',
                                           "nixfleet/health.tsv": "ollama\n"})
    second = generation(tmp_path / "gen2", {"nixfleet/health.tsv": "grafana\n"})
    older = generation(tmp_path / "gen0", None)

    assert activation.install_etc(first)
    assert os.readlink(etc / "static") == str(first / "etc")
    assert os.readlink(etc / "ai-providers.json") == str(etc / "static" / "ai-providers.json")
    assert (etc / "ai-providers.json").read_text() == '{"timeout":30}'
    assert (etc / "nixfleet" / "health.tsv").read_text() == "ollama\n"
    assert not (etc / "systemd").exists()  # units are installed in /run, not linked here

    assert activation.install_etc(second)
    assert not (etc / "ai-providers.json").is_symlink()
    assert (etc / "nixfleet" / "health.tsv").read_text() == "grafana\n"
    assert "removing obsolete symlink" in capsys.readouterr().err

    assert activation.install_etc(older)
    assert not (etc / "nixfleet" / "health.tsv").is_symlink()
    assert (etc / "hostname").read_text() == "p620\n"


# --- the lab activation's nix.sshServe -------------------------------------------------------


def test_ssh_serve_keys_reach_root_with_the_forced_command_and_go_again(activation, tmp_path,
                                                                          monkeypatch):
    authorized = tmp_path / "authorized_keys"
    authorized.write_text("ssh-ed25519 AAAAdeployer nixfleet-lab-deployer\n")
    monkeypatch.setattr(activation, "ROOT_AUTHORIZED_KEYS", authorized)
    keys = activation.ETC / "ssh" / "authorized_keys.d" / "nix-ssh"
    monkeypatch.setattr(activation, "SSH_SERVE_KEYS", keys)
    keys.parent.mkdir(parents=True)
    keys.write_text("ssh-ed25519 AAAAfetch builder-ssh-key\n")
    assert activation.install_ssh_serve()
    assert authorized.read_text().splitlines() == [
        "ssh-ed25519 AAAAdeployer nixfleet-lab-deployer",
        'restrict,command="nix-store --serve" ssh-ed25519 AAAAfetch builder-ssh-key']
    assert activation.install_ssh_serve()  # again: the same file, the key once
    assert len(authorized.read_text().splitlines()) == 2
    assert oct(authorized.stat().st_mode & 0o777) == "0o600"
    keys.unlink()  # a generation without sshServe: only the deployer's key is left
    assert activation.install_ssh_serve()
    assert authorized.read_text() == "ssh-ed25519 AAAAdeployer nixfleet-lab-deployer\n"
