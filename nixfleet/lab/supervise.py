"""Keeps one lab host running: systemd-nspawn in a loop, so that a reboot inside comes back.

Started detached by `nixfleet lab up` as
`python -m nixfleet.lab.supervise NAME MERGED VETH PID_FILE [BOOT_DIR]`.
SIGTERM stops the host cleanly (nspawn powers the container off) and ends the loop.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from nixfleet.lab.config import bridge, cgroup_name

REBOOT_EXIT = 133  # what systemd-nspawn returns when the container rebooted
CGROUP_ROOTS = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))


def join_own_cgroup(name: str) -> None:
    """With --keep-unit, nspawn uses the caller's cgroup: give each host its own."""
    for root in CGROUP_ROOTS:
        if root.is_dir():
            group = root / cgroup_name(name)
            group.mkdir(exist_ok=True)
            (group / "cgroup.procs").write_text(f"{os.getpid()}\n")


def attach_veth(veth: str, deadline: float) -> None:
    """nspawn creates the host side of the veth; put it on the lab bridge."""
    while time.monotonic() < deadline:
        if Path(f"/sys/class/net/{veth}").exists():
            subprocess.run(["ip", "link", "set", veth, "master", bridge(), "up"], check=False)
            return
        time.sleep(0.05)


def nspawn_argv(name: str, merged: str, veth: str, boot: str = "") -> list[str]:
    """boot: the host's own boot partition, mounted here, bound at /boot (it survives reboots
    of the host, as an ESP does)."""
    return [
        # The machine name is per lab instance: nspawn keeps per-machine state under
        # /run/systemd/nspawn/, which two labs' hosts of the same name must not share.
        "systemd-nspawn", "--quiet", "--boot", "--directory", merged,
        "--machine", cgroup_name(name), "--hostname", name,
        "--register=no", "--keep-unit", "--console=read-only",
        f"--network-veth-extra={veth}:eth0", "--resolv-conf=off", "--timezone=off",
        "--link-journal=no", *([f"--bind={boot}:/boot"] if boot else []),
    ]


def main(argv: list[str]) -> int:
    name, merged, veth, pid_file, *boot = argv
    join_own_cgroup(name)
    stopping = threading.Event()
    child: subprocess.Popen | None = None

    def stop(signum, frame):
        stopping.set()
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    env = {**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
    code = 0
    while not stopping.is_set():
        child = subprocess.Popen(nspawn_argv(name, merged, veth, *boot), env=env,
                                 stdin=subprocess.DEVNULL)
        Path(pid_file).write_text(f"{child.pid}\n")
        attach_veth(veth, time.monotonic() + 15)
        code = child.wait()
        if code != REBOOT_EXIT:
            break
        print(f"nixfleet lab: {name} rebooted; booting it again", flush=True)
    Path(pid_file).unlink(missing_ok=True)
    return 0 if stopping.is_set() else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
