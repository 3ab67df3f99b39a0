"""`nixfleet status` benchmark (run by hand, as root, on the lab): its time against the floor,
one `ssh HOST true` per host, all at once.

    .venv/bin/python benchmarks/status.py [--hosts 16] [--repeats 5] [--json FILE]

Brings the lab up with --hosts hosts (`nixfleet lab up --extra N`; NIXFLEET_LAB_INSTANCE
selects the lab), then per repeat, in the same run: `nixfleet status --json` as a user runs it
(a new process: Python's start, the inventory, one SSH command per host in parallel and the
Prometheus question) and the baseline, a thread per host running `ssh HOST true` with the same
OpenSSH options (nixfleet.ssh.ssh_argv). Prints the medians and their ratio. The lab is left
with the hosts it had before only if it had --hosts already: `nixfleet lab up --extra 0` after.

Before timing: nixfleet's modules are compiled to bytecode, as an installed nixfleet has them
(pip compiles at install; a machine with PYTHONDONTWRITEBYTECODE would otherwise compile them
from source in every run), and one status run is made and not counted, as a user's earlier
run: status remembers its SSH commands and starts them before it loads the inventory.

Target (issue 23): status on 16 hosts within 1.5x of parallel `ssh HOST true` (it runs one
command per host, not one connection per fact). The line says whether this run met it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LAB_ENV = {**os.environ, "NIXFLEET_TARGET": "lab"}


def status_seconds() -> tuple[float, int]:
    start = time.perf_counter()
    result = subprocess.run([str(BIN / "nixfleet"), "status", "--json"], cwd=ROOT, env=LAB_ENV,
                            capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    hosts = json.loads(result.stdout)["hosts"]
    unreachable = [h["host"] for h in hosts if not h["reachable"]]
    if unreachable:
        raise SystemExit(f"status: unreachable: {', '.join(unreachable)}")
    return seconds, len(hosts)


def ssh_true_seconds(host_data: dict[str, dict]) -> float:
    from nixfleet.ssh import ssh_argv

    def one(data: dict) -> int:
        return subprocess.run([*ssh_argv(data), "true"], capture_output=True,
                              stdin=subprocess.DEVNULL, timeout=60).returncode

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(host_data)) as pool:
        codes = list(pool.map(one, host_data.values()))
    seconds = time.perf_counter() - start
    if any(codes):
        raise SystemExit("ssh HOST true failed on a host")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    subprocess.run([str(BIN / "nixfleet"), "lab", "up", "--extra", str(args.hosts - 4)],
                   cwd=ROOT, env=LAB_ENV, check=True, capture_output=True)
    os.environ["NIXFLEET_TARGET"] = "lab"
    sys.path.insert(0, str(ROOT))
    from nixfleet.inventory import load_inventory_file

    host_data = load_inventory_file(ROOT / "inventory.py").host_data
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "nixfleet")],
                   check=True, env={k: v for k, v in os.environ.items()
                                    if k != "PYTHONDONTWRITEBYTECODE"})
    status_seconds()  # the earlier run (not counted)
    status_times, ssh_times = [], []
    count = 0
    for _ in range(args.repeats):
        seconds, count = status_seconds()
        status_times.append(seconds)
        ssh_times.append(ssh_true_seconds(host_data))
    status_median = statistics.median(status_times)
    ssh_median = statistics.median(ssh_times)
    print(f"hosts: {count} (status) / {len(host_data)} (ssh)")
    print(f"nixfleet status:        median {status_median:.2f} s  "
          f"({', '.join(f'{t:.2f}' for t in status_times)})")
    print(f"parallel ssh HOST true: median {ssh_median:.2f} s  "
          f"({', '.join(f'{t:.2f}' for t in ssh_times)})")
    ratio = status_median / ssh_median
    print(f"ratio: {ratio:.2f}x (target <= 1.5x: {'met' if ratio <= 1.5 else 'MISSED'})")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "hosts": count, "status": status_times, "ssh_true": ssh_times,
            "ratio": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
