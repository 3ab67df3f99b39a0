"""deploy.buildOn = HOST: the systems of every target that names a builder, built on it in one
Nix invocation (nixfleet/remote/build.sh) and signed there with the fleet's cache key. Each
target then fetches its system from the builder under its own deploy lock (deploy.sh, `nix copy
--from`): from its binary cache when it runs the fleet's, else from its store over SSH (NixOS's
nix.sshServe: read-only `nix-store --serve`, for the fleet's builder-ssh-key, the builder's host
key pinned in the store URL). The target's Nix checks every path's signature against the keys
it trusts (the fleet's): the closure never passes through the deployer, and a path signed by
another key is refused before anything changes on the target.

Nix is the engine: one `nix build` of many installables evaluates what they share once and
builds each shared derivation once, with its own parallel jobs; nothing here schedules builds.
The build runs when the first of its targets is deployed (every target is planned by then) and
the others wait for it.
"""

from __future__ import annotations

import base64
import shlex
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files as package_files

from gevent.lock import Semaphore

from nixfleet.flake import delta_tarball, flake_hash

SCRIPT = "".join(package_files("nixfleet.remote").joinpath(name).read_text()
                 for name in ("nix.sh", "build.sh"))
BUILDS_DIR = "/var/lib/nixfleet/builds"
# The fleet's signing key: the agenix secret (nix/modules/binary-cache.nix's secretName) and
# where agenix puts it.
SIGNING_SECRET = "binary-cache-key"
SIGNING_KEY = f"/run/agenix/{SIGNING_SECRET}"
# The key with which targets fetch from a builder's store over SSH (an agenix secret every host
# receives); nix/builder-ssh.pub is its public half, which builders accept.
FETCH_SECRET = "builder-ssh-key"
FETCH_KEY = f"/run/agenix/{FETCH_SECRET}"
PREFIX = "NIXFLEET "
SSH_FAILED = 255


@dataclass(frozen=True)
class Built:
    """A target's system as its builder left it."""

    builder: str
    path: str | None  # the system's store path on the builder; None: not built
    reason: str = ""  # why not, naming the builder
    # Where the target fetches it (a Nix store URL): the builder's binary cache or its store
    # over SSH; None when the target is the builder (the system is in its store already).
    substituter: str | None = None


class FleetBuild:
    """One builder's build for one deploy: every target added before it runs."""

    def __init__(self, builder: str, ssh: Sequence[str],
                 files: Callable[[], Mapping[str, bytes]], directory: str, flake_ref: str,
                 substituter: str | None, timeout: int,
                 as_root: Callable[[str], str] = lambda command: command) -> None:
        """ssh: an OpenSSH command line to the builder (nixfleet.ssh.ssh_argv); as_root: its
        remote command as root (nixfleet.ssh.root_command); files: gives the flake as it is
        written on the builder, in flake_dir(directory), when the build runs (made then: the
        hosts' deploys are planned concurrently, and a build is made once, without waiting for
        anything);
        flake_ref: how Nix names it there;
        substituter: the Nix store URL the targets fetch from (the builder's binary cache or
        ssh_store_url), None when they have no way to; timeout: seconds the build may take."""
        self.builder = builder
        self.ssh = list(ssh)
        self.files = files
        self.directory, self.flake_ref = directory, flake_ref
        self.substituter = substituter
        self.timeout = timeout
        self.as_root = as_root
        self.targets: list[str] = []
        self._results: dict[str, Built] | None = None
        self._lock = Semaphore()

    def add(self, target: str) -> None:
        if target not in self.targets:
            self.targets.append(target)

    def result(self, target: str) -> Built:
        """The target's system, building every target's at the first call (the others wait
        for it; pyinfra's gevent runs the hosts' operations concurrently)."""
        with self._lock:
            if self._results is None:
                self._results = self._build()
        return self._results[target]

    def _build(self) -> dict[str, Built]:
        if self.substituter is None:
            return self._all_failed(
                "runs no binary cache and the fleet has no builder-ssh.pub for its targets to "
                "fetch over SSH (see `nixfleet validate`)")
        command = shlex.join(["bash", "-c", SCRIPT, "nixfleet-build", self.directory,
                              self.flake_ref, SIGNING_KEY, str(self.timeout), *self.targets])
        started = time.monotonic()
        files = self.files()
        try:
            done = subprocess.run([*self.ssh, self.as_root(command)], capture_output=True,
                                  input=delta_tarball(files, files),
                                  timeout=self.timeout + 60)
        except subprocess.TimeoutExpired:
            return self._all_failed(f"did not finish the build within {self.timeout} s")
        except OSError as error:
            return self._all_failed(f"could not be reached: {error}")
        results = parse(self.builder, self.substituter,
                        done.stdout.decode(errors="replace").splitlines())
        built = sum(1 for r in results.values() if r.path)
        print(f"nixfleet: {self.builder} built {built} of {len(self.targets)} systems in "
              f"{time.monotonic() - started:.1f} s (one Nix invocation)", flush=True)
        stderr = done.stderr.decode(errors="replace").strip().splitlines()
        last = stderr[-1] if stderr else f"exit {done.returncode}"
        if done.returncode == SSH_FAILED:
            why = f"could not be reached or was cut off: {last}"
        else:
            why = f"gave no result ({last})"
        return {t: results.get(t) or self._failed(why) for t in self.targets}

    def _failed(self, why: str) -> Built:
        return Built(self.builder, None, f"builder {self.builder} {why}")

    def _all_failed(self, why: str) -> dict[str, Built]:
        return {target: self._failed(why) for target in self.targets}


def parse(builder: str, substituter: str | None, output: Sequence[str]) -> dict[str, Built]:
    """build.sh's lines: each target's Built."""
    results = {}
    for line in output:
        key, _, value = line.removeprefix(PREFIX).partition("=")
        target, _, rest = value.partition(" ")
        if not line.startswith(PREFIX) or not rest:
            continue
        if key == "built":
            results[target] = Built(builder, rest, "",
                                    None if target == builder else substituter)
        elif key == "build_failed":
            results[target] = Built(builder, None, f"built on {builder}: {rest}")
    return results


def ssh_store_url(user: str, address: str, host_key: str) -> str:
    """A builder's store over SSH as its targets' Nix names it: logged in with the fleet's
    fetch key, the builder's host key ("type base64") pinned, so no known_hosts is needed."""
    pinned = base64.b64encode(" ".join(host_key.split()[:2]).encode()).decode()
    return f"ssh://{user}@{address}?ssh-key={FETCH_KEY}&base64-ssh-public-host-key={pinned}"


def fetched_from(substituter: str) -> str:
    """How the host line names where a target fetched from."""
    return "over SSH" if substituter.startswith("ssh://") else "from its binary cache"


def build_dir(files: Mapping[str, bytes]) -> str:
    """A builder's directory for a build of these flake files (build.sh's DIR)."""
    return f"{BUILDS_DIR}/{flake_hash(files)}"


def flake_dir(directory: str) -> str:
    """Where the flake is in a build directory."""
    return f"{directory}/flake"
