"""`nixfleet secrets`: what the user sees, and that bad input changes nothing on disk."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from nixfleet.errors import NixfleetError
from nixfleet.secrets.store import open_store, sha256_bytes, sha256_of_value
from tests.unit import secrets_support as support

VALUE = b"s3cret-value-\xe2\x9c\x93\n"
NEW_VALUE = b"n3w-s3cret\n"


@pytest.fixture
def repo(repo):
    """The shared repository (conftest.py) with two secrets."""
    for name in ("wifi-password", "api-openai"):
        result = support.run_secrets(repo, "create", name, stdin=VALUE)
        assert result.returncode == 0, result.stderr
    return repo


@pytest.fixture
def admin(keys) -> str:
    return str(keys["olafkfreund"].private)


def editor(tmp_path: Path, body: str) -> str:
    script = tmp_path / "editor.sh"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


@pytest.fixture
def runtime_dir():
    """A tmpfs directory of this test's own for the editor's file (XDG_RUNTIME_DIR), so that
    tests running in parallel cannot see each other's leftovers."""
    path = Path(tempfile.mkdtemp(prefix="nixfleet-test-", dir="/dev/shm"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_in_pty(repo: Path, *args: str, keys_in: bytes = b"", **extra_env: str):
    """Run with a terminal as stdin/stdout (the editor and menu paths)."""
    master, slave = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "nixfleet", "secrets", *args], cwd=repo,
                               stdin=slave, stdout=slave, stderr=slave,
                               env=support.env(repo.parent, **extra_env))
    os.close(slave)
    os.write(master, keys_in)
    output = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            process.kill()
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    return process.wait(timeout=60), output.decode(errors="replace")


# --- the happy paths ---------------------------------------------------------------------------


def test_show_decrypts_with_a_host_key(repo, keys):
    result = support.run_secrets(repo, "show", "wifi-password", "-i", str(keys["razer"].private))
    assert (result.returncode, result.stdout) == (0, VALUE)


def test_default_identity_is_the_admins_ssh_key(repo, keys):
    ssh_dir = repo.parent / ".ssh"  # HOME is repo.parent in run_secrets
    ssh_dir.mkdir()
    (ssh_dir / "id_ed25519").write_bytes(keys["olafkfreund"].private.read_bytes())
    (ssh_dir / "id_ed25519").chmod(0o600)
    assert support.run_secrets(repo, "show", "api-openai").stdout == VALUE


def test_no_identity_says_how_to_give_one(repo):
    result = support.run_secrets(repo, "show", "api-openai")
    support.one_line_error(result, "secrets/api-openai.age: none of your identities "
                           "(~/.ssh/id_ed25519 does not exist; give -i PATH) is a recipient")


def test_values_never_reach_output(repo, admin, tmp_path):
    run = support.run_secrets_process
    outputs = [
        run(repo, "list"),
        run(repo, "status", "-i", admin),
        run(repo, "rekey", "--all", "-i", admin),
        run(repo, "edit", "api-openai", "-i", admin,
            EDITOR=editor(tmp_path, f"printf '{NEW_VALUE.decode().strip()}' > \"$1\"")),
        run(repo, "create", "smtp-password", stdin=VALUE),
    ]
    for result in outputs:
        for value in (VALUE, VALUE.strip(), NEW_VALUE.strip()):
            assert value not in result.stdout + result.stderr


def test_list_json(repo):
    import json

    rows = {row["name"]: row for row in json.loads(support.run_secrets(repo, "list", "--json")
                                                   .stdout)}
    assert rows["wifi-password"]["exists"] and not rows["github-token"]["exists"]
    assert rows["wifi-password"]["recipients"] == ["allUsers", "razer"]
    assert rows["api-openai"]["owner"] == "olafkfreund" and rows["api-openai"]["mode"] == "0600"


def test_status_reports_missing_files_and_exits_non_zero(repo, admin):
    result = support.run_secrets(repo, "status", "-i", admin)
    out = result.stdout.decode()
    assert "ok       wifi-password: recipients match the rules; you can decrypt it" in out
    assert "missing  github-token: no file" in out
    assert result.returncode == 1
    assert result.stderr.decode().startswith("nixfleet: error: ")


def test_edit_uses_a_private_tmpfs_file_and_wipes_it(repo, admin, tmp_path):
    log = tmp_path / "editor.log"
    script = editor(tmp_path, f'''dir=$(dirname "$1")
echo "$1 $(stat -c %a "$1") $(stat -c %a "$dir") $(stat -f -c %T "$dir")" > {log}
printf 'n3w-s3cret\\n' > "$1"''')
    result = support.run_secrets(repo, "edit", "api-openai", "-i", admin, EDITOR=script)
    assert result.returncode == 0, result.stderr
    path, file_mode, dir_mode, fs_type = log.read_text().split()
    assert path.startswith(("/dev/shm/", "/run/user/")) and path.endswith("/api-openai")
    assert (file_mode, dir_mode, fs_type) == ("600", "700", "tmpfs")
    assert not Path(path).parent.exists()
    assert support.run_secrets(repo, "show", "api-openai", "-i", admin).stdout == NEW_VALUE


def test_unchanged_edit_is_not_reencrypted(repo, admin):
    before = support.snapshot(repo)
    result = support.run_secrets(repo, "edit", "api-openai", "-i", admin, EDITOR="true")
    assert result.returncode == 0, result.stderr
    assert "value unchanged, not re-encrypted" in result.stdout.decode()
    assert support.snapshot(repo) == before


def test_edit_from_file(repo, admin, tmp_path):
    source = tmp_path / "value"
    source.write_bytes(NEW_VALUE)
    result = support.run_secrets(repo, "edit", "wifi-password", "-i", admin, "--from-file",
                                 str(source))
    assert result.returncode == 0, result.stderr
    assert support.run_secrets(repo, "show", "wifi-password", "-i", admin).stdout == NEW_VALUE


def test_create_through_editor_on_a_terminal(repo, admin, tmp_path):
    script = editor(tmp_path, "printf 'from-the-editor' > \"$1\"")
    code, output = run_in_pty(repo, "create", "github-token", EDITOR=script)
    assert code == 0, output
    assert "wrote secrets/github-token.age (recipients: olafkfreund, p620, razer)" in output
    shown = support.run_secrets(repo, "show", "github-token", "-i", admin)
    assert shown.stdout == b"from-the-editor"


def test_menu_on_a_terminal(repo):
    code, output = run_in_pty(repo, keys_in=b"2\nq\n")
    assert code == 0, output
    assert "nixfleet secrets: 1 list  2 status" in output
    assert "ok       wifi-password" in output


def test_no_subcommand_without_terminal(repo):
    result = support.run_secrets(repo)
    support.one_line_error(result, "secrets needs a subcommand (init, list, status, create")


def test_rekey_touches_only_files_of_a_changed_recipient(repo, keys, admin, tmp_path):
    entries = support.inventory_entries(keys)
    new_razer = support.generate_key(tmp_path, "razer-new")
    entries[1][1]["ssh"]["hostKey"] = new_razer.public
    support.write_inventory(repo, entries)
    api_before = (repo / "secrets" / "api-openai.age").read_bytes()
    wifi_before = (repo / "secrets" / "wifi-password.age").read_bytes()
    status = support.run_secrets(repo, "status")
    assert "stale    wifi-password: +razer -unknown ssh-ed25519 key (tag " in status.stdout.decode()
    result = support.run_secrets(repo, "rekey", "wifi-password", "-i", admin)
    assert result.returncode == 0, result.stderr
    assert (repo / "secrets" / "wifi-password.age").read_bytes() != wifi_before
    assert (repo / "secrets" / "api-openai.age").read_bytes() == api_before  # not selected
    result = support.run_secrets(repo, "rekey", "-i", admin)
    assert "rekeyed 1 of 2 files" in result.stdout.decode()  # api-openai; wifi already done
    shown = support.run_secrets(repo, "show", "wifi-password", "-i", str(new_razer.private))
    assert shown.stdout == VALUE
    again = support.run_secrets(repo, "rekey", "-i", admin)
    assert "rekeyed 0 of 2 files" in again.stdout.decode()
    forced = support.run_secrets(repo, "rekey", "--all", "-i", admin)
    assert "rekeyed 2 of 2 files" in forced.stdout.decode()


def test_rekey_skips_a_file_it_cannot_decrypt_and_fails_at_the_end(repo, keys, admin):
    support.run_secrets(repo, "create", "smtp-password", stdin=VALUE)
    # Rotate the user's key: every file needs a rekey; one is also damaged.
    entries = support.inventory_entries(keys)
    entries[0][1]["ssh"]["hostKey"] = keys["outsider"].public  # p620 changes
    support.write_inventory(repo, entries)
    damaged = repo / "secrets" / "api-openai.age"
    damaged.write_bytes(damaged.read_bytes()[:-5])
    damaged_before = damaged.read_bytes()
    result = support.run_secrets(repo, "rekey", "-i", admin)
    out = result.stdout.decode()
    assert "error: secrets/api-openai.age: cannot decrypt it: damaged file or wrong key" in out
    assert "rekeyed secrets/smtp-password.age (+p620 -unknown ssh-ed25519 key" in out
    support.one_line_error(result, "rekey: 1 file could not be rekeyed (see above)")
    assert damaged.read_bytes() == damaged_before


def test_passphrase_is_asked_once_per_run(repo, keys, tmp_path):
    protected = support.generate_key(tmp_path, "protected", passphrase="correct horse")
    entries = support.inventory_entries(keys)
    entries[0][1]["users"][0]["sshKey"] = protected.public
    for _, entry in entries[1:]:
        entry["users"][0]["sshKey"] = protected.public
    support.write_inventory(repo, entries)
    assert support.run_secrets(repo, "rekey", "-i", str(keys["razer"].private)).returncode == 0
    assert support.run_secrets(repo, "create", "smtp-password", stdin=VALUE).returncode == 0
    asked = []

    def prompt(text: str) -> str:
        asked.append(text)
        return "correct horse"

    store = open_store(repo, [protected.private], prompt=prompt)
    assert store.decrypt("smtp-password") == VALUE
    assert store.sha256("smtp-password") == sha256_bytes(VALUE)
    assert asked == [f"passphrase for {protected.private}: "]
    wrong = open_store(repo, [protected.private], prompt=lambda _: "wrong")
    with pytest.raises(NixfleetError, match=f"^identity {protected.private}: wrong passphrase$"):
        wrong.decrypt("smtp-password")


def test_sha256_of_value(repo, keys):
    digest = sha256_of_value("wifi-password", [keys["razer"].private], root=repo)
    assert digest == sha256_bytes(VALUE)


# --- bad input: one line, nothing changed --------------------------------------------------


@pytest.mark.parametrize(("mangle", "message"), [
    (lambda data: b"just some plaintext\n", "secrets/wifi-password.age: not an age file"),
    (lambda data: data[:60], "secrets/wifi-password.age: truncated header"),
    (lambda data: data[:-5], "secrets/wifi-password.age: cannot decrypt it: damaged file"),
    (lambda data: data[:data.index(b"\n---")] + data[data.index(b"\n---"):][:50],
     "secrets/wifi-password.age: truncated payload"),
    (lambda data: data[:-40] + bytes([data[-40] ^ 1]) + data[-39:],
     "secrets/wifi-password.age: cannot decrypt it: damaged file"),
], ids=["plaintext", "truncated-header", "truncated-payload", "no-payload", "flipped-bit"])
def test_corrupt_age_file(repo, admin, mangle, message, tmp_path):
    path = repo / "secrets" / "wifi-password.age"
    path.write_bytes(mangle(path.read_bytes()))
    before = support.snapshot(repo)
    for args in (["show", "wifi-password"], ["rekey", "--all", "wifi-password"],
                 ["edit", "wifi-password"]):
        result = support.run_secrets(repo, *args, "-i", admin, EDITOR=editor(tmp_path, "exit 0"))
        if args[0] == "rekey":
            assert message in result.stdout.decode()
            support.one_line_error(result, "rekey: 1 file could not be rekeyed")
        else:
            support.one_line_error(result, message)
        assert support.snapshot(repo) == before


def test_wrong_identity(repo, keys, tmp_path):
    before = support.snapshot(repo)
    outsider = str(keys["outsider"].private)
    for args in (["show", "wifi-password"], ["edit", "wifi-password"]):
        result = support.run_secrets(repo, *args, "-i", outsider,
                                     EDITOR=editor(tmp_path, "echo changed > \"$1\""))
        support.one_line_error(result, f"secrets/wifi-password.age: none of your identities "
                               f"({outsider}) is a recipient (recipients: olafkfreund, razer)")
    assert support.snapshot(repo) == before


@pytest.mark.parametrize(("args", "message"), [
    (["create", "nope"], "no rule for secret 'nope' in secrets/rules.py; known: "
     "user-password-olafkfreund, api-openai,"),
    (["edit", "github-token"], "no secret 'github-token' (secrets/github-token.age does not "
     "exist); available: api-openai, wifi-password"),
    (["show", "nope"], "no secret 'nope' (secrets/nope.age does not exist); available: "
     "api-openai, wifi-password"),
    (["create", "wifi-password"], "secrets/wifi-password.age already exists (change it with "
     "`nixfleet secrets edit wifi-password`)"),
    (["create", "../escape"], "invalid secret name '../escape'"),
    (["edit", "../secrets/wifi-password"], "invalid secret name '../secrets/wifi-password'"),
    (["show", "a/b"], "invalid secret name 'a/b'"),
    (["create", "api-openai.age"], "invalid secret name 'api-openai.age' (give the name "
     "without .age)"),
    (["rekey", "nope"], "rekey: 1 file could not be rekeyed"),
    (["show", "wifi-password", "-i", "/nonexistent/key"], "identity /nonexistent/key: no such "
     "file"),
    (["create", "github-token", "--from-file", "/nonexistent/value"], "--from-file "
     "/nonexistent/value: No such file or directory"),
])
def test_bad_names_and_arguments(repo, admin, args, message):
    before = support.snapshot(repo)
    outside = set(repo.parent.iterdir())
    result = support.run_secrets(repo, *args, *([] if "-i" in args else ["-i", admin]),
                                 stdin=VALUE)
    support.one_line_error(result, message)
    assert support.snapshot(repo) == before
    assert set(repo.parent.iterdir()) == outside


@pytest.mark.parametrize(("body", "message"), [
    ("exit 3", "editor '{editor}' exited with status 3; nothing changed"),
    (': > "$1"', "empty value: edit aborted, nothing changed"),
    ('rm "$1"', "empty value: edit aborted, nothing changed"),
])
def test_editor_failing_changes_nothing(repo, admin, tmp_path, body, message, runtime_dir):
    script = editor(tmp_path, body)
    before = support.snapshot(repo)
    result = support.run_secrets(repo, "edit", "api-openai", "-i", admin, EDITOR=script,
                                 XDG_RUNTIME_DIR=str(runtime_dir))
    support.one_line_error(result, message.format(editor=script))
    assert support.snapshot(repo) == before
    assert list(runtime_dir.iterdir()) == []  # the private temp directory was wiped


def test_missing_editor(repo, admin):
    before = support.snapshot(repo)
    result = support.run_secrets(repo, "edit", "api-openai", "-i", admin,
                                 EDITOR="/nonexistent/editor")
    support.one_line_error(result, "cannot run the editor '/nonexistent/editor'")
    assert support.snapshot(repo) == before


def test_empty_value_on_create(repo):
    before = support.snapshot(repo)
    result = support.run_secrets(repo, "create", "github-token", stdin=b"\n")
    support.one_line_error(result, "empty value: nothing written")
    assert support.snapshot(repo) == before


# --- check-plaintext ---------------------------------------------------------------------------


def test_check_plaintext_passes_on_a_clean_repository(repo):
    (repo / "secrets" / "README.md").write_text("how to\n")
    result = support.run_secrets(repo, "check-plaintext")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("path", "content", "message"), [
    ("secrets/api-openai.txt", b"sk-live-123\n", "secrets/api-openai.txt: not an age file"),
    ("secrets/github-token.age", b"ghp_123\n", "secrets/github-token.age: not an encrypted age "
     "file"),
    ("deploy/id_ed25519", None, "deploy/id_ed25519: contains a private key"),
    ("keys.txt", b"# created: 2026\nAGE-SECRET-KEY-1" + b"Q" * 58 + b"\n",
     "keys.txt: contains an age secret key"),
])
def test_check_plaintext_finds(repo, keys, path, content, message):
    target = repo / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content if content is not None else keys["outsider"].private.read_bytes())
    subprocess.run(["git", "add", path], cwd=repo, check=True)
    result = support.run_secrets(repo, "check-plaintext")
    assert message in result.stdout.decode()
    support.one_line_error(result, "plaintext check failed: 1 problem")


@pytest.mark.parametrize(("path", "escape"), [
    ("config/deploy.json", lambda key: json.dumps({"deployKey": key}, indent=2)),
    ("config/values.yaml", lambda key: "deployKey: " + json.dumps(key) + "\n"),
    ("config/crlf.yaml", lambda key: "deployKey: " + json.dumps(key.replace("\n", "\r\n"))),
])
def test_check_plaintext_finds_a_private_key_written_as_one_escaped_line(repo, keys, path,
                                                                          escape):
    target = repo / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(escape(keys["outsider"].private.read_text()))
    assert len(target.read_text().strip().splitlines()) <= 3  # the key itself is one line
    subprocess.run(["git", "add", path], cwd=repo, check=True)
    result = support.run_secrets(repo, "check-plaintext")
    assert f"{path}: contains a private key" in result.stdout.decode()
    support.one_line_error(result, "plaintext check failed: 1 problem")


def test_rekey_of_many_files_in_workers_leaves_no_temp_files(tmp_path, keys, admin):
    """Enough files for the forked workers; every file ends up decryptable, nothing else."""
    repo = support.make_repo(tmp_path, keys, init=False)
    names = [f"bulk-{i:02d}" for i in range(40)]
    (repo / "secrets" / "rules.py").write_text(
        "SECRETS = {" + "".join(f'"{n}": {{"recipients": ["allUsers", "servers"]}}, '
                                for n in names) + "}\n")
    for name in names:
        assert support.run_secrets(repo, "create", name, stdin=name.encode()).returncode == 0
    result = support.run_secrets(repo, "rekey", "--all", "-i", admin)
    assert result.returncode == 0, result.stderr
    assert "rekeyed 40 of 40 files" in result.stdout.decode()
    assert sorted(p.name for p in (repo / "secrets").iterdir()) == sorted(
        [*(f"{n}.age" for n in names), "rules.py", "secrets.nix"])
    for name in (names[0], names[-1]):
        shown = support.run_secrets(repo, "show", name, "-i", str(keys["dex5550"].private))
        assert shown.stdout == name.encode()


@pytest.mark.parametrize("args", [["--help"], ["rekey", "--help"], ["create", "--help"]])
def test_every_subcommand_has_help(repo, args):
    result = support.run_secrets_process(repo, *args)
    assert result.returncode == 0
    assert b"usage: nixfleet secrets" in result.stdout


def test_unknown_subcommand_is_one_line(repo):
    result = support.run_secrets(repo, "frobnicate")
    support.one_line_error(result, "argument secrets_command: invalid choice: 'frobnicate'")
