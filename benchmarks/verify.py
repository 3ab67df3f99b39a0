"""Verification benchmark on the lab (run by hand as root; not part of the test gate).

    .venv/bin/python benchmarks/verify.py [--repeats 3] [--sizes 4 16]

For each lab size (4: the inventory's hosts; 16: with 12 clones, `nixfleet lab up --extra`),
after a switch of every host, it times in the same run (median of --repeats):
  single   `nixfleet verify --limit HOST` for each host alone; the slowest is the baseline
  fleet    `nixfleet verify` of every host at once
Targets: fleet <= 1.5x the slowest single host at 4 hosts, <= 3x at 16. The lab hosts share
this machine's cores with the deployer, so compare ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NIXFLEET = [sys.executable, "-m", "nixfleet"]
LAB_ENV = {**os.environ, "NIXFLEET_TARGET": "lab"}
TARGETS = {4: 1.5, 16: 3.0}


def run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=LAB_ENV)


def verify(*args: str) -> tuple[float, dict]:
    started = time.perf_counter()
    result = run([*NIXFLEET, "verify", "--json", *args])
    elapsed = time.perf_counter() - started
    if not result.stdout.strip():
        raise SystemExit(f"nixfleet verify {' '.join(args)} failed: {result.stderr.strip()}")
    return elapsed, json.loads(result.stdout)


def prepare(size: int) -> list[str]:
    """The lab at `size` hosts, every one switched to the repository's configuration."""
    up = run([*NIXFLEET, "lab", "up", "--extra", str(size - 4)])
    if up.returncode != 0:
        raise SystemExit(f"lab up failed: {up.stderr.strip()}")
    switch = run([str(Path(sys.executable).parent / "pyinfra"), "inventory.py",
                  "deploys/switch.py", "-y"])
    if switch.returncode != 0:
        raise SystemExit(f"the switch before the benchmark failed:\n{switch.stdout[-2000:]}")
    rows = json.loads(run([*NIXFLEET, "lab", "status", "--json"]).stdout)
    return [row["host"] for row in rows]


def measure(size: int, repeats: int) -> float:
    hosts = prepare(size)
    single: dict[str, list[float]] = {h: [] for h in hosts}
    fleet: list[float] = []
    failed: set[str] = set()
    for _ in range(repeats):
        for host in hosts:
            elapsed, report = verify("--limit", host)
            single[host].append(elapsed)
            failed |= {h["host"] for h in report["hosts"] if not h["ok"]}
        elapsed, report = verify()
        fleet.append(elapsed)
        failed |= {h["host"] for h in report["hosts"] if not h["ok"]}
    medians = {h: statistics.median(times) for h, times in single.items()}
    slowest = max(medians, key=medians.__getitem__)
    whole = statistics.median(fleet)
    ratio = whole / medians[slowest]
    target = TARGETS.get(size)
    print(f"\n== {size} hosts (median of {repeats})")
    print(f"  single   slowest {slowest}: {medians[slowest]:.2f} s   "
          f"(fastest {min(medians.values()):.2f} s)")
    print(f"  fleet    all {size} hosts:   {whole:.2f} s")
    verdict = "" if target is None else f"  [{'ok' if ratio <= target else 'MISSED'}: " \
                                        f"target <= {target}x]"
    print(f"  fleet / slowest single: {ratio:.2f}x{verdict}")
    if failed:
        print(f"  (checks failed on {', '.join(sorted(failed))}: see `nixfleet verify`)")
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    args = parser.parse_args()
    missed = False
    ratios = []
    try:
        for size in args.sizes:
            ratio = measure(size, args.repeats)
            missed |= size in TARGETS and ratio > TARGETS[size]
            ratios.append({"hosts": size, "ratio": "fleet / slowest single host",
                           "value": ratio, "target": TARGETS.get(size)})
        if args.json:
            args.json.write_text(json.dumps({"benchmark": "verify", "ratios": ratios},
                                            indent=2) + "\n")
    finally:
        prepare(4)  # the inventory's hosts again, p620's monitoring without the clones
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
