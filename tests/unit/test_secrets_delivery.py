"""The delivery check: the AgenixFiles fact (command and parser) and the comparison with the
rules and local values; hashes are compared, never shown."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from nixfleet.facts.errors import FactParseError
from nixfleet.facts.secrets import (
    AGENIX_DIR,
    AgenixFile,
    AgenixFiles,
    AgenixState,
    parse_agenix_files,
)
from nixfleet.secrets.delivery import Expected, compare
from nixfleet.secrets.rules import SecretSpec
from nixfleet.secrets.store import sha256_bytes

VALUE = b"the-value\n"
SHA = sha256_bytes(VALUE)


def test_the_fact_reads_generation_and_one_line_per_entry() -> None:
    text = (f"generation 3\n{SHA} olafkfreund users 600 api-openai\n"
            f"{SHA} root docker 440 docker-auth\n- root root 755 odd name\n")
    assert parse_agenix_files(text) == AgenixState(3, {
        "api-openai": AgenixFile(SHA, "olafkfreund", "users", "0600"),
        "docker-auth": AgenixFile(SHA, "root", "docker", "0440"),
        "odd name": AgenixFile(None, "root", "root", "0755"),
    })


def test_no_output_is_no_agenix_directory() -> None:
    assert parse_agenix_files("") == AgenixState(None, {})


def test_garbage_is_a_parse_error() -> None:
    with pytest.raises(FactParseError, match="agenix files: expected SHA256 OWNER GROUP MODE"):
        parse_agenix_files("stat: cannot stat '/run/agenix/x': Permission denied\n")


def test_the_command_prints_hashes_owners_and_modes_of_the_generation(tmp_path: Path) -> None:
    generation = tmp_path / "agenix.d" / "7"
    generation.mkdir(parents=True)
    (generation / "api-openai").write_bytes(VALUE)
    (generation / "api-openai").chmod(0o600)
    (generation / "wifi-password").write_bytes(b"other")
    (generation / "wifi-password").chmod(0o400)
    (tmp_path / "agenix").symlink_to(generation)
    command = AgenixFiles().command().get_raw_value().replace(AGENIX_DIR, str(tmp_path / "agenix"))
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    state = parse_agenix_files(output.stdout)
    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    assert state.generation == 7
    assert state.files == {"api-openai": AgenixFile(SHA, user, group, "0600"),
                           "wifi-password": AgenixFile(sha256_bytes(b"other"), user, group,
                                                       "0400")}
    assert "the-value" not in output.stdout


def test_the_command_says_nothing_without_agenix(tmp_path: Path) -> None:
    command = AgenixFiles().command().get_raw_value().replace(AGENIX_DIR, str(tmp_path / "no"))
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    assert output.stdout == ""


def spec(name: str, owner: str = "root", group: str = "root", mode: str = "0400") -> SecretSpec:
    return SecretSpec(name, owner, group, mode, f"secrets/{name}.age")


def entry(sha: str | None = SHA, owner: str = "root", group: str = "root",
          mode: str = "0400") -> dict:
    return {"sha256": sha, "owner": owner, "group": group, "mode": mode}


def test_a_host_holding_exactly_its_secrets_is_ok() -> None:
    expected = [Expected(spec("api-openai", "olafkfreund", "users", "0600"), SHA),
                Expected(spec("smtp-password"), SHA)]
    actual = {"generation": 2, "files": {"api-openai": entry(owner="olafkfreund", group="users",
                                                            mode="0600"),
                                         "smtp-password": entry(mode="400")}}
    delivery = compare("razer", expected, actual)
    assert delivery.problems == []
    assert delivery.ok == ["api-openai", "smtp-password"]
    assert delivery.generation == 2


def test_missing_unexpected_and_differing_secrets_are_one_line_each() -> None:
    expected = [Expected(spec("smtp-password"), SHA), Expected(spec("github-token"), SHA),
                Expected(spec("api-openai", "olafkfreund", "users", "0600"), SHA),
                Expected(spec("docker-auth", group="docker", mode="0440"), None,
                         "none of your identities is a recipient")]
    actual = {"generation": 1, "files": {
        "smtp-password": entry(sha="0" * 64),
        "api-openai": entry(owner="root", group="users", mode="0644"),
        "docker-auth": entry(group="docker", mode="0440"),
        "wifi-password": entry()}}
    lines = [p.line for p in compare("p510", expected, actual).problems]
    assert lines == [
        "p510: smtp-password: content differs from the local value (sha256 mismatch)",
        "p510: github-token: missing from /run/agenix (expected root:root 0400)",
        "p510: api-openai: owner is root, expected olafkfreund",
        "p510: api-openai: mode is 0644, expected 0600",
        "p510: docker-auth: content not checked: none of your identities is a recipient",
        "p510: wifi-password: in /run/agenix but the host is not a recipient",
    ]
    assert not any(SHA in line or "0" * 64 in line for line in lines)


def test_a_host_without_agenix_misses_everything() -> None:
    delivery = compare("dex5550", [Expected(spec("smtp-password"), SHA)], {})
    assert [p.kind for p in delivery.problems] == ["missing"]
