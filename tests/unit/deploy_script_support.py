"""A host for nixfleet/remote/deploy.sh without root or containers: its paths (the profile,
/run/current-system, the state and run directories, the flake directory) under a temporary
directory, and stand-ins for the tools it calls (nix, nix-env, nix-store, systemd-run,
systemctl) first on PATH. Each stand-in appends its command line to calls.log; each fake
toplevel's bin/switch-to-configuration appends "NAME ACTION" to activations.log.

`Host.deploy(action, files)` runs the script as the deployer does (operations/nixos.py): the
flake delta computed from the hashes of what really is in the host's flake directory, sent
inline as base64 (or as an uploaded file), "-" when nothing differs.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import itertools
import os
import re
import shlex
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nixfleet.flake import changed_paths, delta_tarball, file_hashes, flake_hash
from nixfleet.outcome import Action, HostOutcome
from nixfleet.remote import protocol

OWNER = "alice@laptop"
HOSTNAME = "web1"
DIFF = "go: ∅ → 1.23.4, +11.1 KiB"
WOULD = ("would restart the following units: nginx.service",
         "would start the following units: go-app.service")
_ids = itertools.count(1)

NIX = r"""
echo "nix $*" >> "$T/calls.log"
case "$1 $2" in
  "build "*)
    out=$(cat "$T/nix-out")  # what this flake builds to, fixed when the build starts
    if [ -f "$T/nix-handoff" ]; then
      # The first build (orphaned by its killed deploy) finishes just after the second one
      # printed its output, before that build exits.
      json='[{"drvPath":"/x","outputs":{"out":"%s"}}]\n'
      if mkdir "$T/first-build" 2>/dev/null; then
        for _ in $(seq 1000); do [ -e "$T/second-printed" ] && break; sleep 0.01; done
        printf "$json" "$out"; touch "$T/first-printed"
      else
        printf "$json" "$out"; touch "$T/second-printed"
        for _ in $(seq 1000); do [ -e "$T/first-printed" ] && break; sleep 0.01; done
      fi
      exit 0
    fi
    # nix-sleep: seconds the build takes (ended early by the file "release")
    if [ -f "$T/nix-sleep" ]; then
      for _ in $(seq "$(( $(cat "$T/nix-sleep") * 10 ))"); do
        [ -e "$T/release" ] && break
        sleep 0.1
      done
    fi
    if [ -f "$T/nix-error" ]; then cat "$T/nix-error" >&2; exit 1; fi
    printf '[{"drvPath":"/x","outputs":{"out":"%s"}}]\n' "$out" ;;
  "store diff-closures")
    printf 'go: \033[32m∅ → 1.23.4\033[0m, +11.1 KiB\n' ;;
  "path-info -S")
    shift 2
    for path; do echo "$path $(cat "$path/closure-size")"; done ;;
  *) echo "nix stand-in: unexpected $*" >&2; exit 2 ;;
esac
"""

NIX_ENV = r"""
echo "nix-env $*" >> "$T/calls.log"
[ "$1" = -p ] || exit 2
profile=$2 dir=$(dirname "$2") name=$(basename "$2")
case "$3" in
  --set)
    n=$(find "$dir" -maxdepth 1 -name "$name-*-link" -printf '%f\n' \
        | sed -n "s/^$name-\([0-9]*\)-link\$/\1/p" | sort -n | tail -1)
    n=$(( ${n:-0} + 1 ))
    ln -sfn "$4" "$dir/$name-$n-link" && ln -sfn "$name-$n-link" "$profile" ;;
  --switch-generation)
    [ -e "$dir/$name-$4-link" ] && ln -sfn "$name-$4-link" "$profile" ;;
  *) exit 2 ;;
esac
"""

SYSTEMD_RUN = r"""
echo "systemd-run $*" >> "$T/calls.log"
printf '%s\n' "$@" > "$T/systemd-run.args"
"""

SYSTEMCTL = r"""
echo "systemctl $*" >> "$T/calls.log"
case "$1" in
  list-units) cat "$T/failed-units" 2>/dev/null ;;
  is-system-running) echo running ;;
  is-active|stop) exit 0 ;;
  *) exit 1 ;;
esac
"""

NIX_STORE = r"""
echo "nix-store $*" >> "$T/calls.log"
"""

SWITCH_TO_CONFIGURATION = r"""
echo "$NAME $1" >> "$T/activations.log"
case "$1" in
  switch|test) ln -sfn "$SELF" "$CURRENT"
    [ -z "$FAILS" ] || echo "$FAILS loaded failed failed stand-in" >> "$T/failed-units" ;;
  dry-activate) printf '%s\n' "${WOULD[@]}" ;;
esac
exit "$CODE"
"""


def _script(path: Path, body: str, **variables: str) -> None:
    head = "".join(f"{k}={shlex.quote(v)}\n" for k, v in variables.items())
    path.write_text("#!/bin/bash\n" + head + body)
    path.chmod(0o755)


def lock_is_free(state_dir: Path) -> bool:
    """Could a deploy take the host's lock (flock on the state directory) right now?"""
    fd = os.open(state_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def holders(path: Path) -> list[str]:
    """"PID COMMAND" of every process with an open file descriptor on `path`."""
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and any(
                    os.readlink(fd) == str(path) for fd in (proc / "fd").iterdir()):
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append(f"{proc.name} {command[:60]}")
    return found


@dataclass
class Run:
    returncode: int
    outcome: HostOutcome
    values: dict[str, str]
    stdout: str
    stderr: str
    deploy_id: str


class Host:
    """One host's paths and stand-ins under `root`; it runs system `booted` as generation 1."""

    def __init__(self, root: Path) -> None:
        self.root = root = root.resolve()
        self.bin, self.store = root / "bin", root / "store"
        self.profile = root / "profiles" / "system"
        self.current = root / "current-system"
        self.state, self.run = root / "state", root / "run"
        self.flake = root / "etc" / "nixos"
        self.calls_log, self.activations_log = root / "calls.log", root / "activations.log"
        for directory in (self.bin, self.store, self.profile.parent, self.flake.parent):
            directory.mkdir(parents=True)
        t = str(root)
        _script(self.bin / "nix", NIX, T=t)
        _script(self.bin / "nix-env", NIX_ENV, T=t)
        _script(self.bin / "nix-store", NIX_STORE, T=t)
        _script(self.bin / "systemd-run", SYSTEMD_RUN, T=t)
        _script(self.bin / "systemctl", SYSTEMCTL, T=t)
        self.booted = self.system("a", healthy=True)
        (self.profile.parent / "system-1-link").symlink_to(self.booted)
        self.profile.symlink_to("system-1-link")
        self.current.symlink_to(self.booted)

    # --- the host's systems -----------------------------------------------------------------
    def system(self, name: str, code: int = 0, healthy: bool = False,
               size: int = 1048576, fails: str = "") -> Path:
        """A fake toplevel store path: bin/switch-to-configuration records the action, makes
        itself the current system on switch/test (where the unit `fails` then is failed) and
        exits `code`; `healthy` gives it the file that `healthy_check` looks for."""
        path = self.store / f"system-{name}"
        (path / "bin").mkdir(parents=True)
        (path / "closure-size").write_text(str(size))
        if healthy:
            (path / "healthy").touch()
        would = "WOULD=(" + " ".join(shlex.quote(line) for line in WOULD) + ")\n"
        _script(path / "bin" / "switch-to-configuration", would + SWITCH_TO_CONFIGURATION,
                T=str(self.root), NAME=f"system-{name}", SELF=str(path),
                CURRENT=str(self.current), CODE=str(code), FAILS=fails)
        return path

    def activation_exits(self, system: Path, code: int) -> None:
        """From now on `system`'s switch-to-configuration exits `code`."""
        script = system / "bin" / "switch-to-configuration"
        script.write_text(re.sub(r"^CODE=.*$", f"CODE={code}", script.read_text(), flags=re.M))

    def units_failed(self, *units: str) -> None:
        """These units are failed now (systemctl list-units --failed lists them)."""
        (self.root / "failed-units").write_text(
            "".join(f"{unit} loaded failed failed stand-in\n" for unit in units))

    def builds(self, toplevel: Path) -> Path:
        """`nix build` prints this toplevel from now on."""
        (self.root / "nix-out").write_text(str(toplevel))
        return toplevel

    def build_fails(self, message: str) -> None:
        (self.root / "nix-error").write_text(message + "\n")

    def build_takes(self, seconds: int) -> None:
        (self.root / "nix-sleep").write_text(str(seconds))

    def build_hands_off(self) -> None:
        """The first `nix build` waits, then prints its output just after the second one has
        printed its own (and before that one exits)."""
        (self.root / "nix-handoff").touch()

    def release_builds(self) -> None:
        """Ends every slow build now (and makes later ones fast)."""
        (self.root / "release").touch()

    def healthy_check(self) -> str:
        """A command check that passes while the current system has the file "healthy"."""
        return f"healthy\t1\ttest -e {self.current}/healthy\n"

    # --- what the host looks like -----------------------------------------------------------
    def generation(self) -> int:
        return int(os.readlink(self.profile).split("-")[1])

    def profile_system(self) -> Path:
        return self.profile.resolve()

    def current_system(self) -> Path:
        return self.current.resolve()

    def calls(self, prefix: str = "") -> list[str]:
        text = self.calls_log.read_text() if self.calls_log.exists() else ""
        return [line for line in text.splitlines() if line.startswith(prefix)]

    def activations(self) -> list[str]:
        log = self.activations_log
        return log.read_text().splitlines() if log.exists() else []

    def flake_files(self) -> dict[str, bytes]:
        return {str(p.relative_to(self.flake)): p.read_bytes()
                for p in sorted(self.flake.rglob("*")) if p.is_file() and not p.is_symlink()}

    def strays(self) -> list[str]:
        return [str(p.relative_to(self.flake)) for p in sorted(self.flake.rglob("*"))
                if p.is_symlink() or (p.is_dir() and not any(p.iterdir()))
                or not (p.is_dir() or p.is_file())]

    def record(self) -> str:
        return (self.state / "flake.sha256").read_text()

    def leftovers(self) -> list[str]:
        """Siblings of the flake directory (backups, a half-done swap)."""
        return sorted(p.name for p in self.flake.parent.iterdir() if p != self.flake)

    # --- the deploy -------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        return {"PATH": f"{self.bin}:{os.environ['PATH']}", "HOME": str(self.root),
                "NIXFLEET_PROFILE": str(self.profile),
                "NIXFLEET_CURRENT_SYSTEM": str(self.current),
                "NIXFLEET_STATE_DIR": str(self.state), "NIXFLEET_RUN_DIR": str(self.run)}

    def tarball(self, files: Mapping[str, bytes], seen: Mapping[str, bytes] | None = None,
                upload: bool = False) -> str:
        """The delta as the deployer sends it, computed against `seen` (by default what the
        flake directory really holds): "-" when nothing differs."""
        strays = self.strays() if seen is None else []
        seen = self.flake_files() if seen is None else seen
        changed = changed_paths(files, file_hashes(seen))
        if not changed and set(seen) == set(files) and not strays:
            return "-"
        delta = delta_tarball(files, changed)
        if not upload:
            return "base64:" + base64.b64encode(delta).decode()
        path = self.root / f"upload-{hashlib.sha256(delta).hexdigest()[:12]}.tar"
        path.write_bytes(delta)
        return str(path)

    def arguments(self, action: Action, files: Mapping[str, bytes] | None = None, /,
                  **flags: object) -> dict[str, object]:
        """deploy.sh's arguments as operations/nixos.py builds them (flags override)."""
        files = files if files is not None else {}
        arguments: dict[str, object] = {
            "hostname": HOSTNAME, **protocol.action_flags(action),
            "deploy_id": f"20250101T120000-{next(_ids)}", "owner": OWNER, "rollback": 1,
            "health_timeout": 1, "checks": "", "watchdog": 0}
        if action is not Action.ROLLBACK:
            arguments.update(flake_dir=str(self.flake), flake_ref=f"path:{self.flake}",
                             want_hash=flake_hash(files))
            if "tarball" not in flags:
                arguments["tarball"] = self.tarball(files)
        arguments.update(flags)
        return arguments

    def start(self, action: Action, files: Mapping[str, bytes] | None = None, /,
              **flags: object) -> tuple[subprocess.Popen[str], dict[str, object]]:
        """The deploy started, not waited for; its output goes to files under root."""
        arguments = self.arguments(action, files, **flags)
        name = arguments["deploy_id"]
        with (self.root / f"{name}.out").open("w") as out, \
                (self.root / f"{name}.err").open("w") as err:
            process = subprocess.Popen(protocol.argv(arguments), env=self.env(), text=True,
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        return process, arguments

    def finished(self, action: Action, process: subprocess.Popen[str],
                 arguments: Mapping[str, object]) -> Run:
        returncode = process.wait(timeout=60)
        name = arguments["deploy_id"]
        stdout = (self.root / f"{name}.out").read_text()
        stderr = (self.root / f"{name}.err").read_text()
        return self._run(action, returncode, stdout, stderr, str(name))

    def deploy(self, action: Action, files: Mapping[str, bytes] | None = None, /,
               **flags: object) -> Run:
        """Run deploy.sh for `action` to the end."""
        arguments = self.arguments(action, files, **flags)
        done = subprocess.run(protocol.argv(arguments), env=self.env(), text=True,
                              capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
        return self._run(action, done.returncode, done.stdout, done.stderr,
                         str(arguments["deploy_id"]))

    @staticmethod
    def _run(action: Action, returncode: int, stdout: str, stderr: str, deploy_id: str) -> Run:
        lines = stdout.splitlines()
        return Run(returncode, protocol.parse(HOSTNAME, action, lines), protocol.values(lines),
                   stdout, stderr, deploy_id)
