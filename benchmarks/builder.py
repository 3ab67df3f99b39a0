"""Where systems are built, on the lab (run by hand as root; not part of the test gate).

    .venv/bin/python benchmarks/builder.py [--repeats 3] [--sizes 4 16] [--compile-mib 0 1024]
                                           [--json FILE]

For each lab size (4: the inventory's hosts; 16: with 12 clones, `nixfleet lab up --extra`) it
switches the fleet to a change that touches a derivation every host shares (the kernel's
version: the kernel, its modules and the initrd, as a kernel update does), alternating the two
ways in the same run, median of --repeats:
  target   every host builds its own system (deploy.buildOn: target, the default)
  builder  every host's system is built on p620 in one Nix invocation, signed there and fetched
           from p620's binary cache (deploy.buildOn: p620)
and prints, for each: wall time, CPU seconds of the fleet (every lab host's cgroup, and the
deployer: not what else this machine runs; the lab's hosts share this machine's 2 cores, so CPU
is the honest figure for "built once instead of N times"), and bytes in and out of each host's
network interfaces during the switch (SSH, the flake, fetched systems): the median host's and
the builder's.

--compile-mib: the lab's stand-in derivations cost next to nothing to build (a kernel is a
sized file), so the builder's own steps (signing, serving, fetching) would be all there is to
measure. With N, the benchmark's copy of the lab flake makes the kernel stand-in (the one
derivation every host shares: the initrds differ by GPU driver) also hash N MiB of zeros when
built (sha256sum: a few CPU-seconds per GiB here), standing in for a compile; a real kernel
build costs CPU-hours. Each N is a run of its own (0: the lab as is: the builder's own cost).
Targets (issue 24), for N > 0: builder wall <= 0.7x target's, builder CPU <= 0.5x target's.
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import statistics
import sys
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from deploy import (
    BIN,
    LAB_ENV,
    ROOT,
    Repo,
    Timings,
    arguments,
    judge,
    lab_hosts,
    lab_up,
    run,
    ssh_argv,
    switch_summary,
)

BUILDER = "p620"
KERNEL = re.compile(r'kernelVersion = "[^"]*";')


SIZED_FILE = re.compile(r"\n  sizedFile = .*?\n  };\n", re.DOTALL)  # the lab's, as a block
KERNEL_FILE = "kernel = sizedFile "


class BuildRepo(Repo):
    """A copy of the configuration whose kernel version changes, built where it is told;
    building the kernel stand-in also hashes `compile_mib` MiB; 2 boot entries kept where the
    fleet's default keeps 10."""

    def __init__(self, compile_mib: int) -> None:
        super().__init__()
        self.kernels = 0
        self.run = uuid.uuid4().hex[:8]
        # The kernel's derivation: the lab's sizedFile, also hashing compile_mib MiB.
        toplevel = self.dir / "nix" / "lab" / "toplevel.nix"
        text = toplevel.read_text()
        sized = SIZED_FILE.search(text)
        if sized is None or text.count(KERNEL_FILE) != 1:
            raise SystemExit(f"{toplevel}: the kernel and sizedFile are not as they were")
        compiled = sized[0].replace("sizedFile =", "compiledFile =").replace(
            '"{ printf', f'"head -c {compile_mib}M /dev/zero | sha256sum > /dev/null; {{ printf')
        toplevel.write_text(text.replace(sized[0], sized[0] + compiled).replace(
            KERNEL_FILE, "kernel = compiledFile "))
        # Every run installs a new kernel: the hosts that keep the default 10 boot entries
        # would fill their boot partitions (the deploy's pre-flight refuses them) before the
        # run ends. 2, as razer keeps.
        all_py = self.dir / "group_data" / "all.py"
        all_py.write_text(all_py.read_text().replace('"configurationLimit": 10',
                                                     '"configurationLimit": 2'))

    def build_on(self, where: str) -> None:
        all_py = self.dir / "group_data" / "all.py"
        all_py.write_text(re.sub(r'"buildOn": "[^"]*"', f'"buildOn": "{where}"',
                                 all_py.read_text()))

    def new_kernel(self) -> None:
        """A kernel version no host has built yet (the lab keeps its stores between runs)."""
        self.kernels += 1
        toplevel = self.dir / "nix" / "lab" / "toplevel.nix"
        version = f"6.6.{100 + self.kernels}-{self.run}"
        toplevel.write_text(KERNEL.sub(f'kernelVersion = "{version}";', toplevel.read_text()))


def fleet_cpu(hosts: list[dict]) -> Callable[[], float]:
    """CPU seconds spent by the lab's hosts (each runs in its own cgroup) and by this
    benchmark's finished children (the deployer): unlike the machine's total, not moved by
    anything else this machine runs (another lab, a test suite)."""
    sys.path.insert(0, str(ROOT))
    from nixfleet.lab.config import cgroup_name

    stats = [Path("/sys/fs/cgroup/unified") / cgroup_name(h["host"]) / "cpu.stat"
             for h in hosts]
    missing = [str(s) for s in stats if not s.is_file()]
    if missing:
        raise SystemExit(f"no cgroup CPU figures: {', '.join(missing)}")

    def seconds() -> float:
        usage = sum(int(s.read_text().split()[1]) for s in stats) / 1e6  # usage_usec
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage + children.ru_utime + children.ru_stime

    return seconds


def interface_bytes(hosts: list[dict]) -> dict[str, int]:
    """Bytes received plus sent on each host's network interfaces (not loopback)."""

    def one(host: dict) -> int:
        out = run([*ssh_argv(host["address"]), "cat /proc/net/dev"], timeout=60).stdout
        total = 0
        for line in out.splitlines()[2:]:
            name, _, numbers = line.partition(":")
            if name.strip() != "lo":
                fields = numbers.split()
                total += int(fields[0]) + int(fields[8])
        return total

    with ThreadPoolExecutor(8) as pool:
        return dict(zip([h["host"] for h in hosts], pool.map(one, hosts), strict=True))


def switch(repo: BuildRepo, where: str, hosts: list[dict]) -> dict[str, int]:
    """One switch to a new kernel built `where`; each host's bytes moved."""
    repo.build_on(where)
    repo.new_kernel()
    before = interface_bytes(hosts)
    summary = switch_summary(run(repo.switch_argv(), cwd=repo.dir, env=repo.env()))
    after = interface_bytes(hosts)
    wrong = [h for h, row in summary.items()
             if row["result"] != "changed" or row["built_on"] != where]
    if wrong:
        raise SystemExit(f"{where}: not changed there: {', '.join(wrong)}")
    return {host: after[host] - before[host] for host in before}


def measure(size: int, repeats: int, compile_mib: int) -> dict[str, float]:
    print(f"\n== {size} lab hosts, stand-in compile {compile_mib} MiB", flush=True)
    lab_up(size)
    hosts = [h for h in lab_hosts() if h["state"] == "running"]
    repo = BuildRepo(compile_mib)
    repo.nixfleet_switch()  # everything deployed once before timing
    timings = Timings(fleet_cpu(hosts))
    moved: dict[str, list[dict[str, int]]] = {"target": [], "builder": []}
    for _ in range(repeats):
        for name, where in (("target", "target"), ("builder", BUILDER)):
            moved[name].append(timings.run(name, lambda where=where: switch(repo, where, hosts)))
    shutil.rmtree(repo.dir, ignore_errors=True)

    figures: dict[str, float] = {}
    print(f"  {'':<8} {'wall':>8}   {'CPU':>8}   {'per host (median)':>17}   {BUILDER:>10}   "
          f"(wall of each run)")
    for name in ("target", "builder"):
        figures[name] = statistics.median(timings.wall[name])
        figures[f"cpu {name}"] = statistics.median(timings.cpu[name])
        figures[f"bytes per host {name}"] = statistics.median(
            moved_ for run_ in moved[name] for h, moved_ in run_.items() if h != BUILDER)
        figures[f"bytes {BUILDER} {name}"] = statistics.median(r[BUILDER] for r in moved[name])
        runs = ", ".join(f"{t:.2f}" for t in timings.wall[name])
        print(f"  {name:<8} {figures[name]:6.2f} s   {figures[f'cpu {name}']:6.2f} s   "
              f"{figures[f'bytes per host {name}'] / 2**20:13.2f} MiB   "
              f"{figures[f'bytes {BUILDER} {name}'] / 2**20:6.2f} MiB   ({runs})")
    return figures


RATIOS = [
    ("wall: builder / target", lambda f: f["builder"] / f["target"], 0.7),
    ("CPU: builder / target", lambda f: f["cpu builder"] / f["cpu target"], 0.5),
]


def main() -> int:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--compile-mib", type=int, nargs="+", default=[0, 1024])
    args = parser.parse_args()
    ratios, missed, seconds = [], False, {}
    for compile_mib in args.compile_mib:
        results = {size: measure(size, args.repeats, compile_mib) for size in args.sizes}
        print(f"\n== built on {BUILDER} against on each target, stand-in compile "
              f"{compile_mib} MiB (targets in brackets)")
        # Without a build cost there is nothing for a builder to save: the figures are its
        # own cost (evaluating on p620, signing, serving, fetching), shown without a target.
        rows = RATIOS if compile_mib else [(what, value, None) for what, value, _ in RATIOS]
        found, missed_here = judge(results, rows, "x")
        ratios += [{**r, "ratio": f"{r['ratio']} (compile {compile_mib} MiB)"} for r in found]
        missed |= missed_here
        seconds[compile_mib] = results
    lab_up(4)
    # Every run installed new kernels: the hosts' boot partitions get their room back, so
    # that deploys (and the lab tests) after this pass their pre-flight.
    run([str(BIN / "nixfleet"), "gc", "--boot", "-y"], cwd=ROOT, env=LAB_ENV)
    if args.json:
        args.json.write_text(json.dumps({"benchmark": "builder", "repeats": args.repeats,
                                         "seconds": seconds, "ratios": ratios}, indent=2) + "\n")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
