"""nixfleet.ssh.root_command: a remote command as root, through `sudo -n` where the host's SSH
user is not root, quoted so that the login shell hands it to sudo's shell unchanged."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from nixfleet.ssh import root_command

COMMAND = 'x=inner; echo "$x" \'$x\' $(echo sub)'


def test_as_root_the_command_is_unchanged():
    assert root_command({"ssh_user": "root"}, COMMAND) == COMMAND
    assert root_command({}, COMMAND) == COMMAND


def test_another_user_runs_it_through_sudo_without_a_prompt_and_the_same_words(tmp_path: Path):
    wrapped = root_command({"ssh_user": "olaf"}, COMMAND)
    assert wrapped.startswith("sudo -n sh -c ")
    # The host's login shell runs what ssh sends; a stand-in sudo records its arguments and
    # runs them: the inner shell sees the command as written (no $x of the outer shell).
    sudo = tmp_path / "sudo"
    sudo.write_text('#!/bin/sh\n[ "$1" = -n ] || exit 3\nshift\nexec "$@"\n')
    sudo.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "x": "outer"}
    ran = subprocess.run(["sh", "-c", wrapped], env=env, capture_output=True, text=True)
    direct = subprocess.run(["sh", "-c", COMMAND], env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == direct.stdout == "inner $x sub\n"
