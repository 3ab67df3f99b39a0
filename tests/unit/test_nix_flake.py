"""The fleet's NixOS flake (nix/), checked without nixpkgs: it parses, reads the inventory's host
data unchanged, declares an option for every feature flag, imports every module, names no host
in a module; and each check fails on a broken copy. Building it needs nixpkgs (nix/README.md).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from nixfleet import cli, nixcheck
from nixfleet.errors import NixfleetError
from nixfleet.flake import nixos_release
from nixfleet.inventory import Fleet, load_inventory_file
from nixfleet.model import Features
from nixfleet.nvidia import NvidiaBranch

pytestmark = pytest.mark.skipif(shutil.which("nix-instantiate") is None,
                                reason="needs nix-instantiate (any Nix 2.x)")

HOSTS = ["p620", "razer", "p510", "dex5550"]


@pytest.fixture
def fleet(root: Path, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    monkeypatch.setenv("NIXFLEET_TARGET", "fleet")
    return load_inventory_file(root / "inventory.py")


@pytest.fixture
def nix_copy(root: Path, tmp_path: Path) -> Path:
    """A private copy of nix/ to break."""
    copy = tmp_path / "nix"
    shutil.copytree(root / "nix", copy, ignore=shutil.ignore_patterns("lab"))
    return copy


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def evaluate_lib(root: Path, body: str) -> Any:
    """Evaluate `body` with `lib` = nix/lib and `fleet` = the flake's view of nix/hosts."""
    return nixcheck.evaluate(
        "{ nixDir }: let dir = /. + nixDir; lib = dir + \"/lib\"; "
        "fleet = import (lib + \"/fleet.nix\") { hostsDir = dir + \"/hosts\"; }; in " + body,
        nixDir=str(root / "nix"),
    )


# --- syntax --------------------------------------------------------------------------------


def test_every_nix_file_parses(root):
    files = nixcheck.nix_files([root / "nix"])
    assert len(files) > 20
    assert nixcheck.check_syntax(files) == []


def test_a_parse_error_is_reported_with_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.nix"
    bad.write_text("{\n  a = 1\n  b = 2;\n}\n")
    (tmp_path / "good.nix").write_text("{ a = 1; }\n")
    problems = nixcheck.check_syntax(nixcheck.nix_files([tmp_path]), relative_to=tmp_path)
    assert len(problems) == 1
    assert problems[0].startswith("bad.nix:3:5: syntax error")


def run_nixfleet(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli.main(list(args))
    return code, capsys.readouterr().out


def test_check_syntax_exits_non_zero_and_lists_every_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "ok.nix").write_text("{ }\n")
    code, out = run_nixfleet(capsys, "check-syntax", str(tmp_path))
    assert code == 0
    assert "1 .nix files parse" in out

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "bad.nix").write_text("{ a = ; }\n")
    (tmp_path / "worse.nix").write_text("let in in\n")
    monkeypatch.chdir(tmp_path)
    code, out = run_nixfleet(capsys, "check-syntax")
    assert code == 1
    assert "sub/bad.nix:1:7: syntax error" in out
    assert "worse.nix:1:" in out
    assert out.strip().endswith("2 problems")


def test_check_syntax_json(tmp_path, monkeypatch, capsys):
    (tmp_path / "bad.nix").write_text("{")
    monkeypatch.chdir(tmp_path)
    code, out = run_nixfleet(capsys, "check-syntax", "--json", "bad.nix")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False
    assert re.match(r"bad\.nix:\d+:\d+: syntax error", report["problems"][0])


def test_without_nix_the_checks_say_so(tmp_path, monkeypatch):
    (tmp_path / "a.nix").write_text("{ }\n")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NixfleetError, match="nix-instantiate not found"):
        nixcheck.check_syntax([tmp_path / "a.nix"])


# --- host data -----------------------------------------------------------------------------


def test_the_flake_reads_every_host_exactly_as_the_inventory_has_it(root, fleet):
    assert nixcheck.check_host_data(root / "nix", fleet.hosts) == []


def test_host_data_that_disagrees_with_the_inventory_is_reported(nix_copy, fleet):
    edit(nix_copy / "hosts" / "razer.json", '"PCI:1:0:0"', '"PCI:2:0:0"')
    (nix_copy / "hosts" / "dex5550.json").unlink()
    problems = nixcheck.check_host_data(nix_copy, fleet.hosts)
    assert "host dex5550: in the inventory but not in nix/hosts (run `nixfleet generate`)" \
        in problems
    assert any(p.startswith("nix/hosts/razer.json: prime.nvidiaBusId: flake reads 'PCI:2:0:0'")
               for p in problems), problems


def test_hardware_data_reaches_the_hardware_modules(root):
    hardware = evaluate_lib(root, """
      builtins.mapAttrs (name: data: (import (lib + "/host-module.nix") {
        inherit data fleet; secrets = { }; secretsRoot = "/"; binaryCachePublicKey = "k";
      }).nixfleet.hardware) fleet.hosts""")
    assert hardware["p620"]["amd"] == {"enable": True, "rocm": True,
                                       "hsaOverrideGfxVersion": "11.0.0"}
    assert hardware["razer"]["nvidia"]["prime"] == {
        "sync": True, "intelBusId": "PCI:0:2:0", "nvidiaBusId": "PCI:1:0:0"}
    assert hardware["razer"]["nvidia"]["package"] == "stable"
    assert hardware["p510"]["nvidia"]["package"] == "legacy_580"
    assert hardware["p510"]["nvidia"]["prime"]["sync"] is False
    assert hardware["dex5550"]["intel"] == {"enable": True, "mediaDriver": "intel-media-driver"}
    assert [h for h in HOSTS if hardware[h]["nvidia"]["enable"]] == ["razer", "p510"]


def test_hosts_with_a_graphical_session_run_the_x_server(root):
    """razer's PRIME sync settings are Xorg's: its data says it has a graphical session, and
    the module that one turns on runs the X server."""
    graphical = evaluate_lib(root, """
      builtins.mapAttrs (name: data: (import (lib + "/host-module.nix") {
        inherit data fleet; secrets = { }; secretsRoot = "/"; binaryCachePublicKey = "k";
      }).nixfleet.graphical.enable) fleet.hosts""")
    assert graphical == {"p620": True, "razer": True, "p510": False, "dex5550": False}
    module = nixcheck.evaluate("""{ file, stubs }:
      let
        args = import (/. + stubs) // { config.nixfleet.graphical.enable = true; };
        m = (import (/. + file)) args;
      in { inherit (m.config) condition content; }""",
        file=str(root / "nix" / "modules" / "graphical.nix"),
        stubs=str(nixcheck.EXPRESSIONS / "stub-module-args.nix"))
    assert module == {"condition": True, "content": {"services": {"xserver": {"enable": True}}}}


def test_the_nixos_release_is_the_flakes_nixpkgs_branch(root, nix_copy):
    assert nixos_release(root / "nix" / "flake.nix") == "26.05"
    edit(nix_copy / "flake.nix", "nixpkgs/nixos-26.05", "nixpkgs/nixos-26.11")
    assert nixos_release(nix_copy / "flake.nix") == "26.11"
    edit(nix_copy / "flake.nix", "nixpkgs/nixos-26.11", "nixpkgs/nixos-unstable")
    with pytest.raises(NixfleetError, match=re.escape(
            "inputs.nixpkgs.url is github:NixOS/nixpkgs/nixos-unstable: no nixos-YY.MM branch")):
        nixos_release(nix_copy / "flake.nix")


def test_the_nvidia_module_offers_exactly_the_model_s_driver_branches(root):
    """The enum the NixOS module checks host data against is the model's NvidiaBranch, whose
    architecture table (nixfleet/nvidia.py) the model checks each GPU against."""
    branches = nixcheck.evaluate("""{ file, stubs }:
      ((import (/. + file)) (import (/. + stubs))).options.nixfleet.hardware.nvidia.package
        .type.values""", file=str(root / "nix" / "modules" / "hardware" / "nvidia.nix"),
        stubs=str(nixcheck.EXPRESSIONS / "stub-module-args.nix"))
    assert branches == list(get_args(NvidiaBranch))
    assert "legacy_580" in branches


def test_the_monitoring_server_is_the_binary_cache_and_its_clients_use_it(root):
    caches = evaluate_lib(root, """
      builtins.mapAttrs (name: data: (import (lib + "/host-module.nix") {
        inherit data fleet; secrets = { }; secretsRoot = "/";
        binaryCachePublicKey = builtins.readFile (dir + "/binary-cache.pub");
      }).nixfleet.binaryCache) fleet.hosts""")
    public_key = (root / "nix" / "binary-cache.pub").read_text()
    assert caches["p620"]["server"]["enable"] is True
    assert caches["p620"]["client"]["enable"] is False
    for host in ("razer", "p510", "dex5550"):
        assert caches[host]["server"]["enable"] is False
        assert caches[host]["client"] == {"enable": True, "url": "http://p620:5000"}
        assert caches[host]["publicKey"] == public_key


# --- feature options -----------------------------------------------------------------------


def test_every_module_evaluates_with_the_stub_lib(root):
    modules = nixcheck.read_modules(root / "nix" / "modules")
    assert modules.problems == ()
    assert sorted(modules.read) == list(modules.files)
    assert len(modules.files) > 10


def test_every_feature_flag_of_the_model_is_a_module_option(root):
    assert nixcheck.check_options(nixcheck.read_modules(root / "nix" / "modules")) == []


def test_the_option_walk_covers_nested_flags():
    flags = nixcheck.feature_flag_paths(Features)
    assert "development.python" in flags
    assert "ai.providers.defaultProvider" in flags
    assert "monitoring.features.alerting" in flags
    assert "monitoring.serverHost" in flags
    assert "programs.print" in flags


def test_a_misspelt_feature_option_is_reported(nix_copy):
    edit(nix_copy / "modules" / "features" / "development.nix",
         "python = mkEnableOption", "pyhton = mkEnableOption")
    problems = nixcheck.check_options(nixcheck.read_modules(nix_copy / "modules"))
    assert any(p.startswith("features.development.python: no module in") for p in problems)
    assert any("option nixfleet.features.development.pyhton is not a feature flag of the "
               "inventory model (did you mean nixfleet.features.development.python?)" in p
               for p in problems), problems


def test_a_model_flag_without_a_module_is_reported(root):
    class Gaming(BaseModel):
        enable: bool = False
        steam: bool = False

    class MoreFeatures(Features):
        gaming: Gaming = Gaming()

    problems = nixcheck.check_options(nixcheck.read_modules(root / "nix" / "modules"),
                                      model=MoreFeatures)
    assert [p.split(":")[0] for p in problems] == ["features.gaming.enable",
                                                   "features.gaming.steam"]


def test_a_module_that_does_not_evaluate_is_reported(nix_copy):
    edit(nix_copy / "modules" / "features" / "cloud.nix",
         "aws = mkEnableOption", "aws = mkEnableOptoin")
    problems = nixcheck.read_modules(nix_copy / "modules").problems
    assert len(problems) == 1
    assert "features/cloud.nix: cannot read the module's options" in problems[0]
    assert "mkEnableOptoin" in problems[0]


def test_check_nix_reports_a_module_that_parses_but_does_not_evaluate_once(nix_copy, fleet):
    edit(nix_copy / "modules" / "features" / "cloud.nix",
         "aws = mkEnableOption", "aws = lib.mkEnableOptoin")
    problems = nixcheck.check_all(nix_copy, fleet.hosts)
    unreadable = [p for p in problems if "cannot read the module's options" in p]
    assert len(unreadable) == 1, problems
    assert "features/cloud.nix" in unreadable[0] and "mkEnableOptoin" in unreadable[0]
    assert any(p.startswith("features.cloud.aws: no module") for p in problems), problems


# --- imports, host names, home files, the flake's host list --------------------------------


def test_every_module_file_is_imported(root):
    assert nixcheck.check_imports(nixcheck.read_modules(root / "nix" / "modules")) == []


def test_a_module_left_out_of_the_imports_is_reported(nix_copy):
    edit(nix_copy / "modules" / "default.nix", "    ./features/cloud.nix\n", "")
    problems = nixcheck.check_imports(nixcheck.read_modules(nix_copy / "modules"))
    assert len(problems) == 1
    assert "features/cloud.nix: not imported by" in problems[0]


def test_a_missing_module_is_reported(nix_copy):
    (nix_copy / "modules" / "features" / "cloud.nix").unlink()
    modules = nixcheck.read_modules(nix_copy / "modules")
    imports = nixcheck.check_imports(modules)
    assert any("imports" in p and "features/cloud.nix, which does not exist" in p
               for p in imports), imports
    options = nixcheck.check_options(modules)
    assert any(p.startswith("features.cloud.aws: no module") for p in options)


def test_no_module_names_a_host(root, fleet):
    files = nixcheck.module_files(root / "nix" / "modules")
    assert nixcheck.check_no_host_names(files, fleet.hosts) == []


def test_a_host_name_inside_a_module_is_reported(nix_copy, fleet):
    edit(nix_copy / "modules" / "hardware" / "amd.nix", "{\n  config,",
         "# tuned for p620\n{\n  config,")
    problems = nixcheck.check_no_host_names(nixcheck.module_files(nix_copy / "modules"),
                                            fleet.hosts)
    assert len(problems) == 1
    assert problems[0].endswith("amd.nix:2:13: host name 'p620' inside a module "
                                "(use host data instead)")


def test_every_user_of_every_host_has_a_home_file(root, fleet):
    assert nixcheck.check_home_files(root / "nix", fleet.hosts) == []


def test_the_flake_builds_each_host_file_with_the_modules_and_home_files(root, fleet):
    assert nixcheck.check_flake(root / "nix", fleet.hosts) == []


def test_the_flake_host_list_is_the_hosts_directory(nix_copy, fleet):
    extra = json.loads((nix_copy / "hosts" / "dex5550.json").read_text())
    (nix_copy / "hosts" / "extra.json").write_text(json.dumps({**extra, "name": "extra"}))
    (nix_copy / "users" / "olafkfreund" / "extra_home.nix").write_text("{ }\n")
    problems = nixcheck.check_flake(nix_copy, fleet.hosts)
    assert len(problems) == 1
    assert "nixosConfigurations are ['dex5550', 'extra', 'p510', 'p620', 'razer']" in problems[0]


def test_a_missing_home_file_is_reported(nix_copy, fleet):
    (nix_copy / "users" / "olafkfreund" / "p510_home.nix").unlink()
    assert len(nixcheck.check_home_files(nix_copy, fleet.hosts)) == 1
    problems = nixcheck.check_flake(nix_copy, fleet.hosts)
    assert "nix/users/olafkfreund/p510_home.nix is missing" in problems[0]


# --- secrets -------------------------------------------------------------------------------


def test_secrets_json_has_the_agreed_shape(root, fleet):
    assert nixcheck.check_secrets_data(root / "nix", fleet.hosts) == []


def test_bad_secrets_json_is_reported(nix_copy, fleet):
    path = nix_copy / "secrets.json"
    secrets = json.loads(path.read_text())
    secrets["wifi-password"]["mode"] = "400"
    secrets["wifi-password"]["hosts"] = ["razr"]
    secrets["github-token"]["file"] = "secrets/github.age"
    del secrets["smtp-password"]["owner"]
    path.write_text(json.dumps(secrets))
    problems = nixcheck.check_secrets_data(nix_copy, fleet.hosts)
    assert len(problems) == 4
    assert any("github-token: file must be secrets/github-token.age" in p for p in problems)
    assert any("smtp-password: keys must be" in p and "missing ['owner']" in p for p in problems)
    assert any("wifi-password: mode must be an octal string" in p for p in problems)
    assert any("wifi-password: unknown hosts ['razr']" in p for p in problems)


def test_each_host_declares_exactly_its_secrets(root, fleet):
    declared = evaluate_lib(root, """
      let secrets = builtins.fromJSON (builtins.readFile (dir + "/secrets.json")); in
      builtins.mapAttrs (host: data: import (lib + "/secrets.nix") {
        inherit secrets host; root = "/repo";
      }) fleet.hosts""")
    secrets = json.loads((root / "nix" / "secrets.json").read_text())
    for host in HOSTS:
        assert declared[host] == {
            name: {"file": f"/repo/secrets/{name}.age", "owner": s["owner"],
                   "group": s["group"], "mode": s["mode"]}
            for name, s in secrets.items() if host in s["hosts"]}
    admin = fleet.hosts["razer"].admin.name
    assert declared["razer"]["api-openai"]["owner"] == admin
    assert declared["razer"]["api-openai"]["mode"] == "0600"
    assert declared["razer"]["docker-auth"] | {"file": ""} == {
        "file": "", "owner": "root", "group": "docker", "mode": "0440"}
    assert declared["p620"][f"user-password-{admin}"]["owner"] == admin
    assert "wifi-password" in declared["razer"]
    assert "wifi-password" not in declared["p620"]
    assert "github-token" in declared["p620"]
    assert "postgres-password" in declared["dex5550"]
    assert "postgres-password" not in declared["razer"]
    assert [h for h in HOSTS if "binary-cache-key" in declared[h]] == ["p620"]


# --- what the modules are fed: AI providers (monitoring: tests/unit/test_monitoring.py) ---


def test_ai_providers_json_follows_the_host_settings_and_the_provider_table(root):
    config = evaluate_lib(root, """
      builtins.mapAttrs (name: data: import (lib + "/ai-providers.nix") {
        settings = data.features.ai.providers;
      }) fleet.hosts""")
    p620 = config["p620"]
    assert {k: p620[k] for k in ("defaultProvider", "enableFallback", "costOptimization",
                                 "timeout", "maxRetries")} == {
        "defaultProvider": "anthropic", "enableFallback": True, "costOptimization": False,
        "timeout": 30, "maxRetries": 3}
    providers = p620["providers"]
    assert {name: p["priority"] for name, p in providers.items()} == {
        "openai": 1, "anthropic": 2, "gemini": 3, "ollama": 4}
    assert providers["openai"]["defaultModel"] == "gpt-4o-mini"
    assert providers["openai"]["apiKeyFile"] == "/run/agenix/api-openai"
    assert providers["anthropic"]["defaultModel"] == "claude-3-5-sonnet-20241022"
    assert providers["gemini"]["baseUrl"] == "https://generativelanguage.googleapis.com/v1beta"
    assert providers["ollama"] == {
        "priority": 4, "models": ["mistral-small3.1", "llama3.2"],
        "defaultModel": "mistral-small3.1", "baseUrl": "http://localhost:11434",
        "apiKeyFile": None, "requiresApiKey": False, "enabled": True,
        "prices": {"mistral-small3.1": {"input": 0, "output": 0},
                   "llama3.2": {"input": 0, "output": 0}}}
    # The price table ai-cli -c ranks by (USD per million tokens).
    assert providers["openai"]["prices"]["gpt-4o-mini"] == {"input": 0.15, "output": 0.6}
    assert config["dex5550"]["providers"]["ollama"]["enabled"] is False
    assert config["dex5550"]["providers"]["gemini"]["enabled"] is True


# --- the command ---------------------------------------------------------------------------


def test_check_nix_passes_on_the_repository(root, monkeypatch, capsys):
    monkeypatch.setenv("NIXFLEET_TARGET", "fleet")
    code, out = run_nixfleet(capsys, "--inventory", str(root / "inventory.py"), "check-nix")
    assert code == 0, out
    assert out.startswith("nix/ agrees with the inventory (4 hosts)")


def test_check_nix_fails_on_a_broken_flake(root, nix_copy, monkeypatch, capsys):
    shutil.copy(root / "inventory.py", nix_copy.parent / "inventory.py")
    shutil.copytree(root / "group_data", nix_copy.parent / "group_data")
    edit(nix_copy / "modules" / "features" / "networking.nix", "tailscale = mkEnableOption",
         "tailScale = mkEnableOption")
    monkeypatch.setenv("NIXFLEET_TARGET", "fleet")
    code, out = run_nixfleet(capsys, "--inventory", str(nix_copy.parent / "inventory.py"),
                             "check-nix", "--json")
    assert code == 1
    report = json.loads(out)
    assert any("features.networking.tailscale" in p for p in report["problems"])
