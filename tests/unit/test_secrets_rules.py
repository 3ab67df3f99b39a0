"""Secrets rules: resolution against the fleet, generated secrets.nix / nix/secrets.json."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from nixfleet import render
from nixfleet.errors import NixfleetError
from nixfleet.inventory import build_fleet, load_group_data, load_inventory_file
from nixfleet.secrets import rules as secret_rules
from nixfleet.secrets.rules import host_secrets, load_rules
from tests.unit import secrets_support as support


@pytest.fixture(scope="module")
def fleet():
    return load_inventory_file(support.ROOT / "inventory.py")


@pytest.fixture(scope="module")
def rules(fleet):
    return load_rules(fleet, support.ROOT)


def test_committed_generated_files_are_current(rules, root):
    assert render.stale(secret_rules.generated_files(rules, root)) == []


def test_the_originals_assignments(rules):
    everyone = ["olafkfreund", "p620", "razer", "p510", "dex5550"]
    expected = {
        "user-password-olafkfreund": everyone, "api-openai": everyone, "api-gemini": everyone,
        "api-anthropic": everyone, "api-langchain": everyone, "api-github-token": everyone,
        "ssh-host-ed25519-key": everyone, "docker-auth": everyone, "smtp-password": everyone,
        "github-token": ["olafkfreund", "p620", "razer"],
        "wifi-password": ["olafkfreund", "razer"],
        "postgres-password": ["olafkfreund", "p510", "dex5550"],
        "nextcloud-admin-password": ["olafkfreund", "p510", "dex5550"],
        "binary-cache-key": ["olafkfreund", "p620"],  # for nix/modules/binary-cache.nix
        # for nixfleet/builder.py: targets fetch from a builder's store over SSH
        "builder-ssh-key": everyone,
        # for nix/modules/monitoring/server.nix: the monitoring server's Grafana
        "grafana-admin-password": ["olafkfreund", "p620"],
    }
    assert {n: [r.name for r in rule.recipients] for n, rule in rules.secrets.items()} == expected
    assert rules.groups["workstations"] == ("p620", "razer")
    assert rules.groups["servers"] == ("p510", "dex5550")


def test_owner_group_mode(rules):
    data = json.loads(secret_rules.secrets_json(rules))
    assert data["api-openai"] == {"file": "secrets/api-openai.age", "owner": "olafkfreund",
                                  "group": "users", "mode": "0600",
                                  "hosts": ["p620", "razer", "p510", "dex5550"]}
    assert data["docker-auth"]["owner"] == "root"
    assert (data["docker-auth"]["group"], data["docker-auth"]["mode"]) == ("docker", "0440")
    assert data["user-password-olafkfreund"]["owner"] == "olafkfreund"
    assert data["user-password-olafkfreund"]["mode"] == "0400"
    assert data["smtp-password"]["owner"] == "root"
    assert data["wifi-password"]["hosts"] == ["razer"]
    assert data["postgres-password"]["hosts"] == ["p510", "dex5550"]


def test_host_secrets(fleet, root):
    p510 = {s.name: s for s in host_secrets(fleet, "p510", root)}
    assert "postgres-password" in p510
    assert "wifi-password" not in p510 and "github-token" not in p510
    assert p510["api-openai"].path == "/run/agenix/api-openai"
    assert p510["api-openai"].file == "secrets/api-openai.age"
    razer = [s.name for s in host_secrets(fleet, "razer", root)]
    assert "wifi-password" in razer and "github-token" in razer
    with pytest.raises(NixfleetError, match="unknown host 'nope'"):
        host_secrets(fleet, "nope", root)


def test_secrets_nix_is_what_agenix_reads(rules, root):
    """Evaluated by Nix, secrets.nix gives each file exactly the resolved recipients' keys."""
    if not shutil.which("nix-instantiate"):
        pytest.skip("nix-instantiate not installed")
    result = subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "--store",
                             "dummy://", str(root / "secrets" / "secrets.nix")],
                            capture_output=True, text=True, check=True)
    evaluated = json.loads(result.stdout)
    assert evaluated == {rule.file: {"publicKeys": [r.key for r in rule.recipients]}
                         for rule in rules.secrets.values()}


def test_per_user_secrets_go_where_the_user_is(host_entries, root, keys):
    extra_user = {"name": "alice", "fullName": "Alice", "sshKey": keys["outsider"].public}
    host_entries[1][1]["users"].append(extra_user)  # razer
    fleet = build_fleet(host_entries, load_group_data(root / "group_data"))
    rules = load_rules(fleet, root)
    alice = rules.secrets["user-password-alice"]
    assert (alice.hosts, alice.owner, alice.mode) == (["razer"], "alice", "0400")
    assert rules.groups["allUsers"] == ("olafkfreund", "alice")


def _resolve(fleet, secrets, defaults=None):
    return secret_rules.resolve(fleet, secrets, defaults or {})


@pytest.mark.parametrize(("secrets", "message"), [
    ({"wifi-password": {"recipients": ["allUsers", "razr"]}},
     "secrets/rules.py: wifi-password: unknown recipient 'razr' (did you mean 'razer'?)"),
    ({"x": {"recipients": ["allHosts"], "mod": "0400"}},
     "secrets/rules.py: x: unknown field 'mod' (did you mean 'mode'?)"),
    ({"x": {"recipients": ["allHosts"], "mode": "644"}}, None),
    ({"x": {"recipients": ["allHosts"], "mode": "rw"}},
     "secrets/rules.py: x: mode must be an octal string"),
    ({"x": {"recipients": []}}, "secrets/rules.py: x: recipients must be a non-empty list"),
    ({"../x": {"recipients": ["allHosts"]}}, "secrets/rules.py: invalid secret name '../x'"),
    ({"x": {"recipients": ["allHosts"], "owner": "{user}"}},
     "secrets/rules.py: x: '{user}' as owner or group needs '{user}'"),
])
def test_bad_rules_are_one_line_errors(fleet, secrets, message):
    if message is None:
        assert _resolve(fleet, secrets).secrets["x"].mode == "0644"
        return
    with pytest.raises(NixfleetError) as error:
        _resolve(fleet, secrets)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def _with_host_key(host_entries, root, key):
    host_entries[0][1]["ssh"]["hostKey"] = key
    return build_fleet(host_entries, load_group_data(root / "group_data"))


def _wire(*parts: bytes) -> str:
    return base64.b64encode(b"".join(len(p).to_bytes(4, "big") + p for p in parts)).decode()


def test_host_key_that_is_not_a_valid_public_key(host_entries, root):
    # Passes the model's check (type and blob agree), but is no ed25519 key: 31 bytes.
    fleet = _with_host_key(host_entries, root, f"ssh-ed25519 {_wire(b'ssh-ed25519', b'x' * 31)}")
    with pytest.raises(NixfleetError, match=r"^host p620: ssh.hostKey: not a valid ssh-ed25519 "
                       r"public key$"):
        load_rules(fleet, root)


def test_host_key_age_cannot_use(host_entries, root):
    point = b"\x04" + b"1" * 64
    key = f"ecdsa-sha2-nistp256 {_wire(b'ecdsa-sha2-nistp256', b'nistp256', point)}"
    fleet = _with_host_key(host_entries, root, key)
    with pytest.raises(NixfleetError, match=r"^host p620: ssh.hostKey: ecdsa-sha2-nistp256 keys "
                       r"cannot be age recipients \(use ssh-ed25519 or ssh-rsa\)$"):
        load_rules(fleet, root)


def test_host_without_key_named_by_a_rule(host_entries, root):
    del host_entries[1][1]["ssh"]["hostKey"]
    fleet = build_fleet(host_entries, load_group_data(root / "group_data"))
    with pytest.raises(NixfleetError, match=r"^host razer: ssh.hostKey is not set, but "):
        load_rules(fleet, root)


def test_bad_rule_via_cli_changes_nothing(repo):
    rules_file = repo / "secrets" / "rules.py"
    rules_file.write_text(rules_file.read_text().replace('"razer"]', '"razr"]'))
    before = support.snapshot(repo)
    result = support.run_secrets(repo, "init")
    support.one_line_error(result, "secrets/rules.py: wifi-password: unknown recipient 'razr'")
    assert support.snapshot(repo) == before


def test_bad_host_key_via_cli_changes_nothing(repo, keys):
    entries = support.inventory_entries(keys)
    entries[2][1]["ssh"]["hostKey"] = f"ssh-ed25519 {_wire(b'ssh-ed25519', b'y' * 33)}"
    support.write_inventory(repo, entries)
    assert support.run_secrets(repo, "init").returncode != 0
    before = support.snapshot(repo)
    result = support.run_secrets(repo, "rekey", "--all")
    support.one_line_error(result, "host p510: ssh.hostKey: not a valid ssh-ed25519 public key")
    assert support.snapshot(repo) == before


def test_init_writes_generated_files_once(tmp_path, keys):
    repo = support.make_repo(tmp_path, keys, init=False)
    result = support.run_secrets(repo, "init")
    assert result.returncode == 0, result.stderr
    assert "wrote secrets/secrets.nix" in result.stdout.decode()
    assert (repo / "nix" / "secrets.json").is_file()
    again = support.run_secrets(repo, "init")
    assert "wrote" not in again.stdout.decode()


def test_rules_file_missing(tmp_path, keys):
    repo = support.make_repo(tmp_path, keys)
    (repo / "secrets" / "rules.py").unlink()
    result = support.run_secrets(repo, "list")
    support.one_line_error(result, "secrets/rules.py not found")
    assert not Path(repo / "secrets" / "rules.py").exists()
