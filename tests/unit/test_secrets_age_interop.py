"""nixfleet's files and the reference age CLI read each other (binary and armored)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from nixfleet.secrets.agefile import read_header, ssh_key_tag
from tests.unit import secrets_support as support

pytestmark = pytest.mark.skipif(not shutil.which("age"), reason="the age CLI is not installed")

VALUE = b"hunter2-\xe2\x9c\x93\n"


def age_decrypt(path, key) -> subprocess.CompletedProcess:
    return subprocess.run(["age", "-d", "-i", str(key.private), str(path)], capture_output=True)


def age_encrypt(repo, keys, names, target, armored: bool) -> None:
    recipients = repo.parent / "recipients.txt"
    recipients.write_text("".join(f"{keys[n].public}\n" for n in names))
    subprocess.run(["age", "-e", *(["-a"] if armored else []), "-R", str(recipients),
                    "-o", str(target)], input=VALUE, check=True)


def test_age_decrypts_nixfleet_files_with_host_keys(repo, keys):
    result = support.run_secrets_process(repo, "create", "postgres-password", stdin=VALUE)
    assert result.returncode == 0, result.stderr
    path = repo / "secrets" / "postgres-password.age"
    for name in ("olafkfreund", "p510", "dex5550"):  # dex5550's key is RSA
        decrypted = age_decrypt(path, keys[name])
        assert decrypted.returncode == 0, (name, decrypted.stderr)
        assert decrypted.stdout == VALUE
    for name in ("p620", "razer", "outsider"):
        assert age_decrypt(path, keys[name]).returncode != 0


def test_header_tags_are_the_recipients_keys(repo, keys):
    assert support.run_secrets(repo, "create", "wifi-password", stdin=VALUE).returncode == 0
    header = read_header((repo / "secrets" / "wifi-password.age").read_bytes())
    assert header.ssh_recipients == {ssh_key_tag(keys["olafkfreund"].public),
                                     ssh_key_tag(keys["razer"].public)}


@pytest.mark.parametrize("armored", [False, True], ids=["binary", "armored"])
def test_nixfleet_reads_files_age_wrote(repo, keys, armored):
    target = repo / "secrets" / "github-token.age"
    age_encrypt(repo, keys, ["olafkfreund", "p620", "razer"], target, armored)
    assert target.read_bytes().startswith(b"-----BEGIN AGE" if armored else b"age-encryption")
    shown = support.run_secrets(repo, "show", "github-token", "-i", str(keys["razer"].private))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == VALUE
    # Same recipients as the rule: status is clean for it and rekey leaves it alone.
    status = support.run_secrets(repo, "status", "-i", str(keys["p620"].private))
    assert "ok       github-token: recipients match the rules" in status.stdout.decode()
    before = target.read_bytes()
    rekey = support.run_secrets(repo, "rekey", "github-token", "-i", str(keys["p620"].private))
    assert rekey.returncode == 0, rekey.stderr
    assert target.read_bytes() == before


@pytest.mark.parametrize("armored", [False, True], ids=["binary", "armored"])
def test_rekey_keeps_the_armor_and_age_still_reads_it(repo, keys, armored):
    target = repo / "secrets" / "wifi-password.age"
    age_encrypt(repo, keys, ["olafkfreund", "p620"], target, armored)  # p620 is wrong
    status = support.run_secrets(repo, "status")
    assert "stale    wifi-password: +razer -p620" in status.stdout.decode()
    rekey = support.run_secrets(repo, "rekey", "-i", str(keys["olafkfreund"].private))
    assert rekey.returncode == 0, rekey.stderr
    assert "rekeyed secrets/wifi-password.age (+razer -p620)" in rekey.stdout.decode()
    assert target.read_bytes().startswith(b"-----BEGIN AGE" if armored else b"age-encryption")
    assert age_decrypt(target, keys["razer"]).stdout == VALUE
    assert age_decrypt(target, keys["p620"]).returncode != 0


def test_x25519_identity_file(repo, keys, tmp_path):
    """An age identity file works as -i; its X25519 stanza is an extra recipient in status."""
    identity = tmp_path / "age-identity.txt"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    public = next(line.split(": ")[1] for line in identity.read_text().splitlines()
                  if line.startswith("# public key"))
    target = repo / "secrets" / "smtp-password.age"
    subprocess.run(["age", "-e", "-r", public, "-o", str(target)], input=VALUE, check=True)
    shown = support.run_secrets(repo, "show", "smtp-password", "-i", str(identity))
    assert shown.stdout == VALUE, shown.stderr
    status = support.run_secrets(repo, "status", "-i", str(identity))
    line = next(line for line in status.stdout.decode().splitlines() if "smtp-password" in line)
    assert "-1 X25519 recipient" in line and f"you can decrypt it ({identity})" in line
    assert support.run_secrets(repo, "rekey", "-i", str(identity)).returncode == 0
    assert age_decrypt(target, keys["p510"]).stdout == VALUE
