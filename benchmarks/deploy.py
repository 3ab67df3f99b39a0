"""Deploy benchmark on the lab (run by hand as root; not part of the test gate).

    .venv/bin/python benchmarks/deploy.py [--repeats 3] [--sizes 4 16 64] [--json FILE]

For each lab size it times, alternating methods in the same run (median of --repeats):
  nixfleet   pyinfra inventory.py deploys/switch.py -y
  sequential one `ssh HOST nixos-rebuild switch` after another (the original's way)
  floor      one `ssh HOST nixos-rebuild switch` per host, all in parallel
  ssh-true   one `ssh HOST true` per host, all in parallel: the floor of any no-op (a
             no-op switch rightly skips nixos-rebuild; one round trip per host is the least)
for a no-op switch and a one-change switch (every host's data changes: the timezone), and the
one-change switch without rollback (`--data no_rollback=true`: what the watchdog and the
confirmation over a fresh connection cost).
For the baselines the changed host data is copied to each host first (outside the timing of
nixfleet, which pushes it itself). The lab hosts share this machine's cores, so compare
ratios, not absolute times. It prints where nixfleet's time goes on the hosts, and each
method's CPU: the seconds all cores spent working during its run (deployer and hosts).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LAB_ENV = {**os.environ, "NIXFLEET_TARGET": "lab"}
BASELINE_FLAKE = "/root/baseline-flake"


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, **kwargs)


def lab_hosts() -> list[dict]:
    out = run([str(BIN / "nixfleet"), "lab", "status", "--json"], cwd=ROOT, env=LAB_ENV)
    return json.loads(out.stdout)


def ssh_argv(address: str) -> list[str]:
    """The same OpenSSH command line nixfleet uses for its own connections to the lab."""
    sys.path.insert(0, str(ROOT))
    from nixfleet.lab.config import lab_paths
    from nixfleet.ssh import ssh_argv as nixfleet_ssh_argv

    lab = lab_paths()
    return nixfleet_ssh_argv({"ssh_hostname": address, "ssh_key": lab.key,
                              "ssh_known_hosts_file": lab.known_hosts})


def arguments(description: str) -> argparse.ArgumentParser:
    """Every lab benchmark's options: --repeats, --sizes, --json (a benchmark adds its own)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    return parser


def lab_up(size: int) -> None:
    """The lab at `size` hosts: the inventory's 4 and size - 4 clones."""
    up = run([str(BIN / "nixfleet"), "lab", "up", "--extra", str(size - 4)], cwd=ROOT,
             env=LAB_ENV)
    if up.returncode != 0:
        raise SystemExit(up.stderr)


Row = tuple[str, Callable[[dict[str, float]], float], float | None]  # what, value, target


def judge(results: dict[int, dict[str, float]], rows: list[Row],
          unit: str = "") -> tuple[list[dict], bool]:
    """Prints each row's value at each size, with its target (at most); the ratios as
    benchmarks/perf.py reads them, and whether one missed its target."""
    ratios, missed = [], False
    for size, figures in results.items():
        for what, value_of, target in rows:
            value = value_of(figures)
            ok = target is None or value <= target
            missed |= not ok
            shown = "" if target is None else \
                f"  [{'ok' if ok else 'MISSED'}: <= {target:.2f}{unit}]"
            print(f"  {size:>3} hosts  {what:<36} {value:6.2f}{unit}{shown}")
            ratios.append({"hosts": size, "ratio": what, "value": value, "target": target})
    return ratios, missed


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def machine_cpu() -> float:
    """CPU seconds this machine's cores have spent working (the deployer and the lab hosts
    alike: they share the cores)."""
    user, nice, system, _idle, _iowait, irq, softirq = map(
        int, Path("/proc/stat").read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


class Timings:
    """Wall-clock seconds and CPU seconds (machine_cpu, or what `cpu` counts) of each run, by
    method."""

    def __init__(self, cpu: Callable[[], float] = machine_cpu) -> None:
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}
        self.cpu_seconds = cpu

    def run(self, name: str, fn):
        cpu, start = self.cpu_seconds(), time.perf_counter()
        result = fn()
        self.wall.setdefault(name, []).append(time.perf_counter() - start)
        self.cpu.setdefault(name, []).append(self.cpu_seconds() - cpu)
        return result


class Repo:
    """A copy of the configuration whose timezone can be flipped (a change on every host)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nixfleet-bench-"))
        shutil.copy(ROOT / "inventory.py", self.dir / "inventory.py")
        shutil.copytree(ROOT / "group_data", self.dir / "group_data")
        shutil.copytree(ROOT / "nix" / "lab", self.dir / "nix" / "lab")
        # The lab flake reads nix/lib beside the real flake; a canary's alert gate its ports.
        shutil.copytree(ROOT / "nix" / "lib", self.dir / "nix" / "lib")
        for name in ("flake.nix", "binary-cache.pub"):
            shutil.copy(ROOT / "nix" / name, self.dir / "nix" / name)
        shutil.copytree(ROOT / "secrets", self.dir / "secrets")  # the rules: which host gets which
        # 64 lab hosts activating on this machine's few cores take longer than the fleet's
        # 30 s confirmation window; the window is no cost (the confirmation comes as soon as
        # the host is done), so it is widened here rather than have hosts roll back.
        all_py = self.dir / "group_data" / "all.py"
        all_py.write_text(re.sub(r'"confirmTimeout": \d+', '"confirmTimeout": 600',
                                 all_py.read_text()))
        self.flips = 0

    def flip(self) -> None:
        self.flips += 1
        all_py = self.dir / "group_data" / "all.py"
        text = re.sub(r'"timezone": "[^"]*"', f'"timezone": "Etc/GMT-{self.flips % 12}"',
                      all_py.read_text())
        all_py.write_text(text)

    def env(self) -> dict[str, str]:
        return {**LAB_ENV, "PYTHONPATH": str(ROOT),
                "NIXFLEET_INVENTORY": str(self.dir / "inventory.py")}

    def switch_argv(self, *data: str) -> list[str]:
        """pyinfra's switch of this copy (run in `self.dir` with `self.env()`), with each
        `--data` item of `data`."""
        # Without post-deploy verification: the baselines verify nothing either (its own
        # benchmark is benchmarks/verify.py).
        return [str(BIN / "pyinfra"), "inventory.py", str(ROOT / "deploys" / "switch.py"), "-y",
                "--data", "no_verify=true", *(arg for item in data for arg in ("--data", item))]

    def nixfleet_switch(self, *data: str) -> dict:
        return switch_summary(run(self.switch_argv(*data), cwd=self.dir, env=self.env()))

    def push_host_data(self, hosts: list[dict]) -> None:
        """What the baselines need before `nixos-rebuild switch`: the new host data."""
        sys.path.insert(0, str(ROOT))
        os.environ["NIXFLEET_INVENTORY"] = str(self.dir / "inventory.py")
        from nixfleet.inventory import load_inventory_file
        from nixfleet.lab.target import LabTarget

        lab = LabTarget()
        fleet = load_inventory_file(self.dir / "inventory.py", lab)
        files = lab.flake_files(fleet.hosts.values(), self.dir)

        def push(host: dict) -> None:
            payload = files[f"hosts/{host['host']}.json"]
            run([*ssh_argv(host["address"]), f"cat > {BASELINE_FLAKE}/hosts/{host['host']}.json"],
                input=payload.decode(), check=True)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(push, hosts))


def switch_summary(result: subprocess.CompletedProcess) -> dict:
    """A switch's summary.json by host; the run's output when it failed."""
    found = re.search(r"summary: (\S+)", result.stdout)
    if result.returncode != 0 or not found:
        raise SystemExit(f"nixfleet switch failed:\n{result.stdout}\n{result.stderr}")
    return {r["host"]: r for r in json.loads(Path(found[1]).read_text())}


def copy_flake_for_the_baselines(host: dict) -> None:
    """The baselines edit and build their own copy of the flake: /etc/nixos is nixfleet's (a
    hand edit there would be kept as a backup by nixfleet's next deploy)."""
    run([*ssh_argv(host["address"]), f"rm -rf {BASELINE_FLAKE} && cp -a /etc/nixos "
                                     f"{BASELINE_FLAKE}"], check=True)


def rebuild(host: dict) -> None:
    result = run([*ssh_argv(host["address"]), "nixos-rebuild", "switch", "--flake",
                  f"{BASELINE_FLAKE}#{host['host']}"])
    if result.returncode != 0:
        raise SystemExit(f"{host['host']}: nixos-rebuild switch failed: {result.stderr}")


def sequential(hosts: list[dict]) -> None:
    for host in hosts:
        rebuild(host)


def floor(hosts: list[dict]) -> None:
    with ThreadPoolExecutor(len(hosts)) as pool:
        list(pool.map(rebuild, hosts))


def ssh_true(hosts: list[dict]) -> None:
    def one(host: dict) -> None:
        run([*ssh_argv(host["address"]), "true"], check=True)

    with ThreadPoolExecutor(len(hosts)) as pool:
        list(pool.map(one, hosts))


def measure(size: int, repeats: int) -> dict[str, float]:
    print(f"\n== {size} lab hosts", flush=True)
    lab_up(size)
    hosts = lab_hosts()
    repo = Repo()
    repo.nixfleet_switch()  # everything deployed once by nixfleet before timing
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(copy_flake_for_the_baselines, hosts))
    timings = Timings()
    phases: dict[str, list[float]] = {}
    for _ in range(repeats):
        # no-op switch
        timings.run("noop nixfleet", repo.nixfleet_switch)
        timings.run("noop sequential", lambda: sequential(hosts))
        timings.run("noop floor", lambda: floor(hosts))
        timings.run("noop ssh-true", lambda: ssh_true(hosts))
        # one-change switch: every host's data changes
        repo.flip()
        summary = timings.run("change nixfleet", repo.nixfleet_switch)
        for row in summary.values():
            for phase, seconds in row["phases"].items():
                phases.setdefault(phase, []).append(seconds)
        # What the safety costs: the same without rollback (no watchdog, no confirmation over
        # a fresh connection; the gate still runs). Not a target, where the time goes.
        repo.flip()
        timings.run("change no-rollback", lambda: repo.nixfleet_switch("no_rollback=true"))
        repo.flip()
        repo.push_host_data(hosts)
        timings.run("change sequential", lambda: sequential(hosts))
        repo.flip()
        repo.push_host_data(hosts)
        timings.run("change floor", lambda: floor(hosts))
        repo.nixfleet_switch()  # back in step: the hosts run nixfleet's generation again
    medians = {k: statistics.median(v) for k, v in timings.wall.items()}
    print(f"  {'':<18} {'wall':>8}   {'CPU':>8}   (wall of each run)")
    for name, value in medians.items():
        cpu = statistics.median(timings.cpu[name])
        runs = ", ".join(f"{t:.2f}" for t in timings.wall[name])
        print(f"  {name:<18} {value:6.2f} s   {cpu:6.2f} s   ({runs})")
    print("  nixfleet on the host, median seconds per phase (one-change switch): " + ", ".join(
        f"{p} {statistics.median(v):.3f}" for p, v in phases.items()))
    shutil.rmtree(repo.dir, ignore_errors=True)
    medians.update({f"phase {p}": statistics.median(v) for p, v in phases.items()})
    medians.update({f"cpu {k}": statistics.median(v) for k, v in timings.cpu.items()})
    return medians


# (size or None for every size, what, numerator, denominator, target: ratio must be <= it)
TARGETS = [
    (4, "change: nixfleet / parallel floor", "change nixfleet", "change floor", 1.5),
    (16, "change: nixfleet / parallel floor", "change nixfleet", "change floor", 1.3),
    (64, "change: nixfleet / parallel floor", "change nixfleet", "change floor", 1.5),
    (4, "change: nixfleet / sequential loop", "change nixfleet", "change sequential", 1 / 1.5),
    (4, "noop: nixfleet / ssh-true floor", "noop nixfleet", "noop ssh-true", 2.5),
    (64, "noop: nixfleet / ssh-true floor", "noop nixfleet", "noop ssh-true", 1.5),
    (None, "noop: nixfleet / parallel floor", "noop nixfleet", "noop floor", None),
    (None, "change: no-rollback / parallel floor", "change no-rollback", "change floor", None),
]


def main() -> int:
    args = arguments(__doc__.splitlines()[0]).parse_args()
    startup = statistics.median(timed(lambda: run([str(BIN / "python"), "-c",
                                                    "import pyinfra_cli.main"])) for _ in range(3))
    print(f"start-up: importing pyinfra's CLI takes {startup:.2f} s (part of every nixfleet run)")
    results = {size: measure(size, args.repeats) for size in args.sizes}
    run([str(BIN / "nixfleet"), "lab", "up", "--extra", "0"], cwd=ROOT, env=LAB_ENV)
    print("\n== ratios (targets in brackets)")
    ratios, missed = [], False
    for size, figures in results.items():
        for at, what, numerator, denominator, target in TARGETS:
            if at not in (None, size):
                continue
            ratio = figures[numerator] / figures[denominator]
            ok = target is None or ratio <= target
            missed |= not ok
            shown = "" if target is None else f"  [{'ok' if ok else 'MISSED'}: <= {target:.2f}x]"
            print(f"  {size:>3} hosts  {what:<36} {ratio:5.2f}x{shown}")
            ratios.append({"hosts": size, "ratio": what, "value": ratio, "target": target})
    sizes = sorted(results)
    for small, large in pairwise(sizes):
        for kind in ("noop", "change"):
            base = "ssh-true" if kind == "noop" else "floor"
            growth = (results[large][f"{kind} nixfleet"] / results[small][f"{kind} nixfleet"]) / (
                results[large][f"{kind} {base}"] / results[small][f"{kind} {base}"])
            ok = growth <= 1.0 if large == 64 else True
            missed |= not ok
            print(f"  {kind:<6} growth {small}->{large} hosts, nixfleet against the {base} "
                  f"floor's: {growth:.2f}x" + ("  [<= 1.00x]" if large == 64 else ""))
            ratios.append({"hosts": f"{small}->{large}", "ratio": f"{kind} growth vs {base}",
                           "value": growth, "target": 1.0 if large == 64 else None})
    if args.json:
        args.json.write_text(json.dumps({"benchmark": "deploy", "repeats": args.repeats,
                                         "seconds": results, "ratios": ratios}, indent=2) + "\n")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
