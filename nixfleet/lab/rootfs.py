"""The shared, read-only Debian root filesystem of every lab host, built once and cached.

The cache key is the recipe (release, packages, template tweaks): change the recipe and the
next `lab up` builds a new one. A build goes to a temporary directory that is renamed only
when complete, so an interrupted build is simply redone.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

from nixfleet.errors import NixfleetError

RELEASE = "bookworm"
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "iproute2", "procps", "python3",
    "sudo", "nix-bin", "age", "prometheus-node-exporter", "python3-prometheus-client",
    # The monitoring server (p620): the real Prometheus and Alertmanager.
    "prometheus", "prometheus-alertmanager",
    # The binary cache stand-in (nix-serve) signs what it serves with Ed25519.
    "python3-cryptography",
    # ai-cli (nixfleet/ai) talks to the providers' HTTP APIs with httpx.
    "python3-httpx",
    # debootstrap does not resolve virtual packages: libdbi-perl provides nix-bin's
    # perl-dbdabi-94 (through libdbd-sqlite3-perl); python3-cffi-backend provides
    # python3-cryptography's python3-cffi-backend-api-min/max.
    "libdbi-perl", "python3-cffi-backend",
)
# Run inside the new rootfs (chroot) once, after debootstrap.
TEMPLATE_SCRIPT = r"""
set -eu
: > /etc/machine-id
mkdir -p /var/lib/dbus && ln -sf /etc/machine-id /var/lib/dbus/machine-id
rm -f /etc/ssh/ssh_host_*
systemctl enable systemd-networkd.service
systemctl mask console-getty.service getty@tty1.service apt-daily.timer \
    apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer systemd-timesyncd.service
# Units come from the host's NixOS generation, not from Debian's package defaults.
systemctl disable prometheus-node-exporter.service prometheus.service \
    prometheus-alertmanager.service
systemctl mask prometheus-node-exporter.service.dpkg-default 2>/dev/null || true
mkdir -p /etc/nix
cat > /etc/nix/nix.conf <<'EOF'
build-users-group =
sandbox = false
substituters =
experimental-features = nix-command flakes
flake-registry =
# The active generation's nix.settings (the fleet's binary cache): an environment.etc file
# that activation links, absent before the first one (NixOS generates all of nix.conf).
!include /etc/nix/settings.conf
EOF
# NixOS puts the system profile first on PATH; sshd sessions read this through pam_env.
echo "PATH=/run/current-system/sw/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/bin" \
    > /etc/environment
mkdir -p /etc/ssh/sshd_config.d
cat > /etc/ssh/sshd_config.d/nixfleet-lab.conf <<'EOF'
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
MaxStartups 200:30:400
MaxSessions 64
EOF
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
"""


def recipe_hash() -> str:
    recipe = "\n".join([RELEASE, *PACKAGES, TEMPLATE_SCRIPT])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (never hard-coded)."""
    sources = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]
    for source in sources:
        if not source.is_file():
            continue
        text = source.read_text(errors="replace")
        for match in re.finditer(r"(?:^deb\s+(?:\[[^\]]*\]\s+)?|^URIs:\s*)(\S+)", text, re.M):
            uri = match.group(1)
            if re.search(r"/debian/?$", uri):
                return uri
    raise NixfleetError("no Debian mirror found in /etc/apt/sources.list{,.d}")


def rootfs_path(cache: Path) -> Path:
    return cache / f"rootfs-{recipe_hash()}"


def ensure_rootfs(cache: Path, log: Path) -> Path:
    """Return the cached rootfs, building it first if this recipe has none yet."""
    target = rootfs_path(cache)
    if (target / ".complete").is_file():
        return target
    for tool in ("debootstrap", "chroot"):
        if not shutil.which(tool):
            raise NixfleetError(f"{tool} not found: run scripts/setup (installs debootstrap)")
    building = target.with_name(target.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    building.parent.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
              RELEASE, str(building), debian_mirror()], out, "debootstrap")
        _run(["chroot", str(building), "/bin/sh", "-c", TEMPLATE_SCRIPT], out, "rootfs template")
    (building / ".complete").write_text(recipe_hash() + "\n")
    building.rename(target)
    # Older recipes are no longer used by anything that is not mounted right now.
    for old in cache.glob("rootfs-*"):
        if old != target and not _is_mounted_below(old):
            shutil.rmtree(old, ignore_errors=True)
    return target


def _run(argv: list[str], out, what: str) -> None:
    result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise NixfleetError(f"{what} failed (exit {result.returncode}); see {out.name}")


def _is_mounted_below(path: Path) -> bool:
    mounts = Path("/proc/self/mountinfo").read_text()
    return str(path) in mounts
