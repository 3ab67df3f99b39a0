"""Bringing lab hosts up and down: overlays, keys, the bridge, one supervisor per host.

Layout under the lab's state directory (default /var/lib/nixfleet-lab):
    id_ed25519, known_hosts      the deployer's key and the hosts' keys it trusts
    secrets/<name>.age           lab-only secrets (dummy values) for the hosts' own keys
    host-keys/<name>/            each host's SSH host key, kept across resets
    layers/files-<hash>/         nixfleet's lab files (stand-ins, stage 2), a read-only layer
    hosts/<name>/upper           everything the host wrote (its /nix store, generations, ...)
    hosts/<name>/merged          the host's root: upper over layers over the cached rootfs
    hosts/<name>/boot.img        the host's boot partition (ext2, its size from boot.espSize,
                                 scaled), mounted at hosts/<name>/boot and bound at /boot
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nixfleet.errors import NixfleetError
from nixfleet.facts.parsers.nix import generation_number
from nixfleet.files import write_atomic
from nixfleet.flake import manifest
from nixfleet.inventory import Fleet
from nixfleet.lab import rootfs
from nixfleet.lab.config import (
    BOOT_SCALE,
    DEFAULT_ESP_MIB,
    LabPaths,
    bridge,
    cgroup_name,
    gateway,
    host_address,
    veth_name,
)
from nixfleet.lab.secrets import ensure_lab_secrets, lab_fleet
from nixfleet.lab.supervise import CGROUP_ROOTS
from nixfleet.lab.target import lab_flake_files
from nixfleet.model import Host
from nixfleet.nvidia import NvidiaBranch
from nixfleet.ssh import ssh_argv

HERE = Path(__file__).resolve().parent
# The nixfleet modules the exporters import, shipped to every lab host under LAB_PYTHON.
LAB_PYTHON = "usr/lib/nixfleet-lab/python"
EXPORTER_MODULES = ("__init__.py", "exporters/", "facts/__init__.py", "facts/results.py",
                    "facts/parsers/")
# ai-cli's modules (python3 and python3-httpx), which usr/lib/nixfleet-lab/ai-cli runs: a host's
# generation links that into sw/bin as ai-cli and ai-chat where its features enable them.
AI_CLI_MODULES = ("ai/",)
# The driver version the nvidia-smi stand-in reports for each branch (nixfleet.nvidia.BRANCHES):
# a release of the branch's series on nixos-26.05 (production 595.80: nixpkgs PR #524944;
# legacy_580 580.178.04: PR #549211; legacy_470 470.256.02: PR #317207). beta and latest are
# never older than production; the stand-in reports production's.
NVIDIA_DRIVER_VERSIONS: dict[NvidiaBranch, str] = {
    "stable": "595.80", "production": "595.80", "beta": "595.80", "latest": "595.80",
    "legacy_580": "580.178.04", "legacy_470": "470.256.02"}
SUPERVISOR = "nixfleet.lab.supervise"  # the module each host's supervisor runs: how it is known
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0
REQUIRED_TOOLS = {"systemd-nspawn": "systemd-container", "debootstrap": "debootstrap",
                  "ssh-keygen": "openssh-client", "ssh": "openssh-client", "ip": "iproute2",
                  "nsenter": "util-linux", "mke2fs": "e2fsprogs"}

HOST_KEY = "ssh_host_ed25519_key"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class LabHost:
    name: str
    index: int
    model: Host
    paths: LabPaths

    @property
    def dir(self) -> Path:
        return self.paths.host_dir(self.name)

    @property
    def upper(self) -> Path:
        return self.dir / "upper"

    @property
    def merged(self) -> Path:
        return self.dir / "merged"

    @property
    def boot(self) -> Path:
        """Where the host's boot partition is mounted here (bound at /boot inside)."""
        return self.dir / "boot"

    @property
    def boot_image(self) -> Path:
        return self.dir / "boot.img"

    @property
    def esp_bytes(self) -> int:
        """The boot partition's size: boot.espSize (MiB) of the real host, scaled."""
        return int((self.model.boot.espSize or DEFAULT_ESP_MIB) * 2**20 * BOOT_SCALE)

    @property
    def supervisor_pid_file(self) -> Path:
        return self.dir / "supervisor.pid"

    @property
    def nspawn_pid_file(self) -> Path:
        return self.dir / "nspawn.pid"

    @property
    def address(self) -> str:
        return host_address(self.index)

    @property
    def veth(self) -> str:
        return veth_name(self.index)


# --- small process helpers ------------------------------------------------------------------


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _running(pid: int) -> bool:
    """The process exists and has not exited (a zombie has)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _alive(pid: int | None, needle: str) -> bool:
    """The pid runs and its command line mentions `needle` (no stale-pid confusion)."""
    if pid is None:
        return False
    try:
        return needle in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False


def _spawn(argv: list[str], needle: str, **popen: Any) -> int:
    """Start a process and return its pid once _alive knows it by `needle` (or it has ended).
    Popen returns while the kernel is still in the exec: until the new program's arguments are
    in place, /proc/PID/cmdline reads empty (on a busy machine, for milliseconds or more), and
    _alive would call the process that was just started stopped."""
    process = subprocess.Popen(argv, **popen)
    deadline = time.monotonic() + READY_TIMEOUT
    while not _alive(process.pid, needle) and process.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.005)
    return process.pid


def _run(argv: list[str], check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise NixfleetError(f"{' '.join(argv[:3])} failed: {result.stderr.strip()[:200]}")
    return result


def _mounted(path: Path) -> bool:
    return any(line.split()[4] == str(path)
               for line in Path("/proc/self/mountinfo").read_text().splitlines())


def _key_pair(key: Path) -> bool:
    return key.is_file() and key.with_suffix(".pub").is_file()


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


class Lab:
    """The lab hosts of one fleet (the inventory as the lab target sees it)."""

    def __init__(self, fleet: Fleet, paths: LabPaths, root: Path, progress: Progress = print):
        self.fleet = fleet
        self.paths = paths
        self.root = root
        self.progress = progress
        self.hosts = [LabHost(name, i, host, paths) for i, (name, host)
                      in enumerate(fleet.hosts.items())]

    def host(self, name: str) -> LabHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise NixfleetError(f"unknown lab host {name!r} (hosts: "
                            f"{', '.join(h.name for h in self.hosts)})")

    # --- up ------------------------------------------------------------------------------

    def preflight(self) -> None:
        if os.geteuid() != 0:
            raise NixfleetError("the lab needs root (systemd-nspawn, mounts, a bridge)")
        missing = sorted({pkg for tool, pkg in REQUIRED_TOOLS.items() if not shutil.which(tool)})
        if missing:
            raise NixfleetError(f"missing packages for the lab: {', '.join(missing)} "
                                "(scripts/setup installs them)")

    def up(self) -> None:
        self.preflight()
        started = time.monotonic()
        self.paths.state.mkdir(parents=True, exist_ok=True)
        self._remove_hosts_not_in_fleet()
        self._keep_host_keys()
        if not rootfs.rootfs_path(self.paths.cache).is_dir():
            self.progress("lab: building the Debian rootfs (once; cached afterwards)")
        lowers = [self._files_layer(),
                  rootfs.ensure_rootfs(self.paths.cache, self.paths.cache / "build.log")]
        # A host running on older lab files or an older rootfs is restarted onto the new ones.
        stale = [h for h in self.hosts if self.running(h) and self._lowers(h) != lowers]
        for host in stale:
            self.progress(f"lab: {host.name} runs older lab files; restarting it")
            self._stop(host)
        todo = [h for h in self.hosts if not self.running(h)]
        if not todo:
            self._ensure_secrets()
            self.progress(f"lab: all {len(self.hosts)} hosts already running")
            return
        self._ensure_key()
        self._ensure_bridge()
        _raise_inotify_limit(len(self.hosts))
        for host in todo:
            self._prepare(host)
        # The hosts' keys exist now: the lab's secrets are encrypted to them before the first
        # boot's flake is written (generation 1 already decrypts them).
        self._ensure_secrets()
        for host in todo:
            self._write_flake(host)
        self._write_known_hosts()
        for host in todo:
            self._start(host, lowers)
        with ThreadPoolExecutor(max_workers=len(todo)) as pool:
            states = list(pool.map(lambda h: self._boot(h, lowers), todo))
        for host, state in zip(todo, states, strict=True):
            self.progress(f"lab: {host.name} {state} at {host.address}")
        self.progress(f"lab: {len(todo)} host(s) up in {time.monotonic() - started:.1f} s")

    def _lowers(self, host: LabHost) -> list[Path]:
        try:
            return [Path(p) for p in (host.dir / "lowers").read_text().split()]
        except OSError:
            return []

    def _files_layer(self) -> Path:
        """nixfleet's own lab files as a read-only layer, content-addressed."""
        files: dict[str, tuple[bytes, int]] = {
            "usr/lib/nixfleet-lab/switch_to_configuration.py":
                ((HERE / "files" / "switch_to_configuration.py").read_bytes(), 0o755),
            "usr/lib/nixfleet-lab/boot_entries.py":
                ((HERE / "files" / "boot_entries.py").read_bytes(), 0o755),
            "usr/local/sbin/nixos-rebuild": ((HERE / "files" / "nixos-rebuild").read_bytes(),
                                             0o755),
            "usr/local/bin/nixos-version": ((HERE / "files" / "nixos-version").read_bytes(),
                                            0o755),
            "etc/systemd/system/nixos-lab-stage2.service":
                ((HERE / "files" / "nixos-lab-stage2.service").read_bytes(), 0o644),
            "usr/lib/nixfleet-lab/ai-cli": ((HERE / "files" / "ai-cli").read_bytes(), 0o755),
        }
        for tool in sorted((HERE / "standins").glob("*")):
            if tool.is_file() and not tool.name.startswith(("_", ".")):
                files[f"usr/lib/nixfleet-lab/standins/{tool.name}"] = (tool.read_bytes(), 0o755)
        # The exporters as the lab generations' units run them (PYTHONPATH=LAB_PYTHON), and
        # ai-cli: only the modules they import, which need python3, prometheus_client and
        # httpx, not pyinfra.
        package = HERE.parent
        for rel in (*EXPORTER_MODULES, *AI_CLI_MODULES):
            for module in sorted((package / rel).glob("*.py")) if rel.endswith("/") else [
                    package / rel]:
                files[f"{LAB_PYTHON}/nixfleet/{module.relative_to(package)}"] = (
                    module.read_bytes(), 0o644)
        # Alertmanager's webhook receiver of the monitoring server module, unchanged.
        files["usr/lib/nixfleet-lab/alert_log.py"] = (
            (self.root / "nix" / "modules" / "monitoring" / "alert_log.py").read_bytes(), 0o755)
        digest = hashlib.sha256(json.dumps(
            {k: [v.hex(), m] for k, (v, m) in sorted(files.items())}).encode()).hexdigest()[:16]
        layer = self.paths.state / "layers" / f"files-{digest}"
        if layer.is_dir():
            return layer
        building = layer.with_name(layer.name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        for rel, (content, mode) in files.items():
            path = building / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            path.chmod(mode)
        wants = building / "etc/systemd/system/multi-user.target.wants"
        wants.mkdir(parents=True)
        (wants / "nixos-lab-stage2.service").symlink_to("../nixos-lab-stage2.service")
        building.rename(layer)
        return layer

    def _ensure_key(self) -> None:
        if not self.paths.key.is_file():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "nixfleet-lab-deployer",
                  "-f", str(self.paths.key)])

    def _ensure_bridge(self) -> None:
        name = bridge()
        if not Path(f"/sys/class/net/{name}").exists():
            _run(["ip", "link", "add", name, "type", "bridge"])
            _run(["ip", "addr", "add", f"{gateway()}/24", "dev", name])
        _run(["ip", "link", "set", name, "up"])

    def _prepare(self, host: LabHost) -> None:
        """First boot only: the host's own files in its upper dir. An interrupted preparation
        (no marker) is wiped and redone."""
        marker = host.dir / "prepared"
        if marker.is_file():
            return
        self._unmount(host)
        shutil.rmtree(host.dir, ignore_errors=True)
        upper = host.upper
        for sub in ("upper", "work", "merged"):
            (host.dir / sub).mkdir(parents=True, exist_ok=True)
        etc = upper / "etc"
        (etc / "systemd" / "network").mkdir(parents=True)
        (etc / "hostname").write_text(f"{host.name}\n")
        peers = "".join(f"{h.address} {h.name}\n" for h in self.hosts)
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {host.name}\n{peers}")
        (etc / "systemd" / "network" / "80-lab.network").write_text(
            f"[Match]\nName=eth0\n\n[Network]\nAddress={host.address}/24\n")
        ssh_dir = upper / "root" / ".ssh"
        ssh_dir.mkdir(parents=True, mode=0o700)
        authorized = ssh_dir / "authorized_keys"
        authorized.write_text(Path(f"{self.paths.key}.pub").read_text())
        authorized.chmod(0o600)
        (etc / "ssh").mkdir()
        self._install_host_key(host, etc / "ssh")
        (etc / "nixfleet-lab").mkdir()
        (etc / "nixfleet-lab" / "hardware.json").write_text(
            json.dumps(hardware_description(host.model), indent=2) + "\n")
        bin_dir = upper / "usr" / "local" / "bin"
        bin_dir.mkdir(parents=True)
        for tool in standin_tools(host.model):
            (bin_dir / tool).symlink_to(f"/usr/lib/nixfleet-lab/standins/{tool}")
        marker.write_text("prepared\n")

    def _kept_key(self, host: LabHost) -> Path:
        return self.paths.state / "host-keys" / host.name / HOST_KEY

    def _install_host_key(self, host: LabHost, ssh_dir: Path) -> None:
        """The host's own SSH host key, generated once and kept in the lab's state: a reset
        host comes back with it, as a reinstalled NixOS host gets its key restored so that
        the secrets encrypted to it (and every other host's copy of them) stay valid."""
        key = self._kept_key(host)
        if not _key_pair(key):
            shutil.rmtree(key.parent, ignore_errors=True)
            key.parent.mkdir(parents=True, mode=0o700)
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{host.name}",
                  "-f", str(key)])
        for source in (key, key.with_suffix(".pub")):
            shutil.copy2(source, ssh_dir / source.name)

    def _keep_host_keys(self) -> None:
        """Hosts prepared before keys were kept keep the key they have."""
        for host in self.hosts:
            current = host.upper / "etc" / "ssh" / HOST_KEY
            kept = self._kept_key(host)
            if _key_pair(current) and not kept.parent.is_dir():
                building = kept.parent.with_name(f"{host.name}.building")
                shutil.rmtree(building, ignore_errors=True)
                building.mkdir(parents=True, mode=0o700)
                for source in (current, current.with_suffix(".pub")):
                    shutil.copy2(source, building / source.name)
                building.rename(kept.parent)

    def _ensure_secrets(self) -> None:
        ensure_lab_secrets(
            lab_fleet(self.fleet.hosts.values(), self.paths, self.fleet.groups), self.root,
            self.paths, self.progress)

    def _write_flake(self, host: LabHost) -> None:
        """First boot only: the lab flake in /etc/nixos, written whole or not at all."""
        flake_dir = host.upper / "etc" / "nixos"
        if flake_dir.is_dir():
            return
        building = flake_dir.with_name("nixos.building")
        shutil.rmtree(building, ignore_errors=True)
        files = lab_flake_files(self.fleet.hosts.values(), self.root, self.paths)
        for rel, content in files.items():
            path = building / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        # What nixfleet wrote there, as a deploy records it (a deploy keeps a copy of anything
        # else it finds there).
        write_atomic(host.upper / "var" / "lib" / "nixfleet" / "flake.sha256", manifest(files))
        building.rename(flake_dir)

    def _write_known_hosts(self) -> None:
        lines = []
        for host in self.hosts:
            pub = host.upper / "etc" / "ssh" / "ssh_host_ed25519_key.pub"
            if pub.is_file():
                key_type, key = pub.read_text().split()[:2]
                lines.append(f"{host.address} {key_type} {key}\n")
        write_atomic(self.paths.known_hosts, "".join(lines))

    def _start(self, host: LabHost, lowers: list[Path]) -> None:
        self._kill_strays(host)
        _remove_cgroups(host.name)  # the new boot's own, not what an earlier one left
        if not _mounted(host.merged):
            work = host.dir / "work"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            lowerdir = ":".join(str(p) for p in lowers)
            _run(["mount", "-t", "overlay", "overlay", "-o",
                  f"lowerdir={lowerdir},upperdir={host.upper},workdir={work}", str(host.merged)])
        _mount_boot(host)
        (host.dir / "lowers").write_text("".join(f"{p}\n" for p in lowers))
        with (host.dir / "console.log").open("ab") as log:
            supervisor = _spawn(
                [sys.executable, "-m", SUPERVISOR, host.name, str(host.merged), host.veth,
                 str(host.nspawn_pid_file), str(host.boot)], SUPERVISOR,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env={**os.environ, "PYTHONPATH": _package_parent()},
            )
        host.supervisor_pid_file.write_text(f"{supervisor}\n")

    def _boot(self, host: LabHost, lowers: list[Path]) -> str:
        """Wait for a started host; one that stopped while booting (a busy machine can leave
        the last run's veth or cgroup behind) is cleaned up and started once more."""
        try:
            return self._wait_ready(host)
        except NixfleetError as error:
            if self.running(host):
                raise
            self.progress(f"lab: {host.name} stopped while booting ({error}); starting it again")
            self._kill_strays(host)
            self._start(host, lowers)
            return self._wait_ready(host)

    def init_pid(self, host: LabHost) -> int | None:
        """PID (here) of the container's systemd, the nspawn child."""
        nspawn = _read_pid(host.nspawn_pid_file)
        if not _alive(nspawn, "systemd-nspawn"):
            return None
        children = _children(nspawn)  # type: ignore[arg-type]
        return children[0] if children else None

    def _wait_ready(self, host: LabHost, timeout: float = READY_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running(host):
                tail = _tail(host.dir / "console.log")
                raise NixfleetError(f"lab host {host.name} stopped while booting: {tail}")
            pid = self.init_pid(host)
            if pid is not None:
                result = subprocess.run(
                    ["nsenter", "-t", str(pid), "-a", "systemctl", "is-system-running", "--wait"],
                    capture_output=True, text=True, timeout=max(1.0, deadline - time.monotonic()),
                )
                state = result.stdout.strip()
                if state in ("running", "degraded") and _port_open(host.address, 22):
                    return state
            time.sleep(0.1)
        raise NixfleetError(f"lab host {host.name} did not finish booting in {timeout:.0f} s")

    # --- down ----------------------------------------------------------------------------

    def running(self, host: LabHost) -> bool:
        return _alive(_read_pid(host.supervisor_pid_file), SUPERVISOR)

    def down(self, hosts: Iterable[LabHost] | None = None) -> None:
        if os.geteuid() != 0:
            raise NixfleetError("the lab needs root (systemd-nspawn, mounts, a bridge)")
        chosen = list(hosts) if hosts is not None else self._known_hosts_on_disk()
        with ThreadPoolExecutor(max_workers=max(1, len(chosen))) as pool:
            list(pool.map(self._stop, chosen))
        nothing_left = not any(self.running(h) for h in self._known_hosts_on_disk())
        if nothing_left and Path(f"/sys/class/net/{bridge()}").exists():
            _run(["ip", "link", "delete", bridge()], check=False)

    def _known_hosts_on_disk(self) -> list[LabHost]:
        """Hosts of this fleet plus any leftovers from an earlier fleet or --extra count."""
        hosts = list(self.hosts)
        known = {h.name for h in hosts}
        hosts_dir = self.paths.state / "hosts"
        if hosts_dir.is_dir():
            base = self.hosts[0].model
            for i, path in enumerate(sorted(hosts_dir.iterdir())):
                if path.name not in known:
                    hosts.append(LabHost(path.name, len(self.hosts) + i, base, self.paths))
        return hosts

    def _stop(self, host: LabHost) -> None:
        supervisor = _read_pid(host.supervisor_pid_file)
        if _alive(supervisor, SUPERVISOR):
            os.kill(supervisor, signal.SIGTERM)  # type: ignore[arg-type]
            deadline = time.monotonic() + STOP_TIMEOUT
            while _alive(supervisor, SUPERVISOR) and time.monotonic() < deadline:
                time.sleep(0.05)
        self._kill_strays(host)
        host.supervisor_pid_file.unlink(missing_ok=True)
        host.nspawn_pid_file.unlink(missing_ok=True)
        self._unmount(host)
        _remove_cgroups(host.name)

    def _kill_strays(self, host: LabHost) -> None:
        """Kill what an interrupted run left: the supervisor, nspawn and, through the host's
        cgroups, the container itself (a killed nspawn leaves its container running)."""
        # Both name this lab's own directory: another instance's hosts of the same name
        # (NIXFLEET_LAB_INSTANCE) are not strays of this one.
        needles = (f"{SUPERVISOR} {host.name} {host.merged} ",
                   f"--directory {host.merged} ")
        strays = set(_cgroup_pids(host.name))
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if any(n in cmdline for n in needles):
                strays.add(int(proc.name))
        strays.discard(os.getpid())
        for pid in strays:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # SIGKILL is delivered, not done: on a busy machine the container's processes take a
        # while to exit, and until they have, its cgroups cannot be removed nor its overlay
        # unmounted; a new boot of the host would start beside them.
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and any(_running(pid) for pid in strays):
            time.sleep(0.05)
        shutil.rmtree(f"/run/systemd/nspawn/propagate/{host.name}", ignore_errors=True)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and Path(f"/sys/class/net/{host.veth}").exists():
            time.sleep(0.05)
        if Path(f"/sys/class/net/{host.veth}").exists():
            # A container that is gone can leave its veth for a moment; the next nspawn
            # could not create it ("File exists").
            _run(["ip", "link", "delete", host.veth], check=False)

    def _unmount(self, host: LabHost) -> None:
        for mount in (host.merged, host.boot):
            if _mounted(mount) and _run(["umount", str(mount)], check=False).returncode:
                _run(["umount", "-l", str(mount)], check=False)

    def _remove_hosts_not_in_fleet(self) -> None:
        """Hosts left from a larger --extra count: stop them and remove their state."""
        wanted = {h.name for h in self.hosts}
        for host in self._known_hosts_on_disk():
            if host.name not in wanted:
                self._stop(host)
                shutil.rmtree(host.dir, ignore_errors=True)
                shutil.rmtree(self.paths.state / "host-keys" / host.name, ignore_errors=True)

    def reset(self, hosts: list[LabHost]) -> None:
        """Back to first boot: stop, forget everything the hosts wrote, start again."""
        self.down(hosts)
        for host in hosts:
            shutil.rmtree(host.dir, ignore_errors=True)
        self.up()

    # --- status --------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        rows = []
        for host in self.hosts:
            running = self.running(host)
            pid = self.init_pid(host) if running else None
            system_state = "-"
            if pid is not None:
                system_state = _run(["nsenter", "-t", str(pid), "-a", "systemctl",
                                     "is-system-running"], check=False).stdout.strip()
            rows.append({
                "host": host.name,
                "state": "running" if running else "stopped",
                "address": host.address,
                "systemd": system_state,
                "generation": _generation(host.upper),
                "memory_mib": round(_pss_bytes(host.name) / 2**20, 1) if running else None,
            })
        return rows

    def ssh_argv(self, host: LabHost, command: list[str] | None = None) -> list[str]:
        argv = ssh_argv({"ssh_hostname": host.address, "ssh_user": "root",
                         "ssh_key": self.paths.key, "ssh_known_hosts_file": self.paths.known_hosts})
        return [*argv, "--", *command] if command else argv


def _mount_boot(host: LabHost) -> None:
    """The host's boot partition: an ext2 image of its own (made at first start), mounted here
    so that it survives the host's reboots, and full when it is full (a real ENOSPC)."""
    if _mounted(host.boot):
        return
    if not host.boot_image.is_file():
        building = host.boot_image.with_name("boot.img.building")
        building.unlink(missing_ok=True)
        # ext2's own metadata takes about 40 KiB of an image this small: 64 KiB more.
        with building.open("wb") as image:
            image.truncate(host.esp_bytes + 64 * 1024)
        _run(["mke2fs", "-q", "-F", "-t", "ext2", "-m", "0", "-b", "1024", "-N", "128",
              "-O", "^resize_inode", "-L", "ESP", str(building)])
        building.rename(host.boot_image)
    host.boot.mkdir(exist_ok=True)
    _run(["mount", "-o", "loop", str(host.boot_image), str(host.boot)])


def hardware_description(host: Host) -> dict[str, Any]:
    """What the GPU stand-ins answer from: the inventory's hardware data for this host."""
    description: dict[str, Any] = {
        "hostname": host.name,
        "hardwareClass": host.hardware_class,
        "gpus": [gpu.model_dump(mode="json") for gpu in host.gpus],
    }
    if host.graphics.nvidiaPackage:
        description["nvidiaDriverVersion"] = NVIDIA_DRIVER_VERSIONS[host.graphics.nvidiaPackage]
        description["cudaVersion"] = "12.4"
    return description


def standin_tools(host: Host) -> list[str]:
    """Which GPU tools a real host of this hardware would have on its PATH."""
    vendors = {gpu.vendor for gpu in host.gpus}
    tools = ["lspci"]
    if "nvidia" in vendors:
        tools.append("nvidia-smi")
    if "amd" in vendors:
        tools.append("rocm-smi")
    return tools


def _generation(upper: Path) -> int | None:
    profile = upper / "nix" / "var" / "nix" / "profiles" / "system"
    try:
        target = os.readlink(profile)
    except OSError:
        return None
    return generation_number(target)


def _cgroup_pids(name: str) -> set[int]:
    """Every process of a host: its cgroups, all levels, in both hierarchies."""
    pids: set[int] = set()
    for root in CGROUP_ROOTS:
        top = root / cgroup_name(name)
        if top.is_dir():
            for procs in top.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    pids.update(int(p) for p in procs.read_text().split())
    return pids


def _pss_bytes(name: str) -> int:
    """Proportional memory of every process of a host."""
    total = 0
    for pid in _cgroup_pids(name):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
    return total


def _remove_cgroups(name: str) -> None:
    for root in CGROUP_ROOTS:
        top = root / cgroup_name(name)
        if top.is_dir():
            for group in sorted((p for p in top.rglob("*") if p.is_dir()),
                                key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    group.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()


INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
INOTIFY_PER_HOST = 32  # systemd, journald, networkd, logind, sshd ... each hold a few


def _raise_inotify_limit(hosts: int) -> None:
    """Each host's systemd needs inotify instances; the kernel's default (128 per user, and
    every host's root is this machine's root) runs out at about 20 hosts."""
    wanted = 128 + INOTIFY_PER_HOST * hosts
    try:
        if int(INOTIFY_INSTANCES.read_text()) < wanted:
            INOTIFY_INSTANCES.write_text(f"{wanted}\n")
    except (OSError, ValueError):
        pass  # a machine that does not allow it keeps its limit; hosts then fail visibly


def _port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no console log)"


def _package_parent() -> str:
    """So the detached supervisor imports this same nixfleet, installed or not."""
    return str(HERE.parent.parent)
