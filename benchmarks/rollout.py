"""Canary rollout benchmark on the lab (run by hand as root; not part of the test gate).

    .venv/bin/python benchmarks/rollout.py [--repeats 3] [--sizes 4 16] [--json FILE]

For each lab size (4: the inventory's hosts; 16: with 12 clones, `nixfleet lab up --extra`) it
times, alternating methods in the same run on the same one-change switch (every host's data
changes: the timezone, as in benchmarks/deploy.py), median of --repeats:
  plain   pyinfra inventory.py deploys/switch.py -y --data no_verify=true
  canary  the same with --data canary=true: wave 1 one host per hardware class, then the rest
Both without post-deploy verification, so what differs is the waves (one after another) and
the alert gate after each wave, with the lab's default settle (10 s a wave; the monitoring
server p620 is in wave 1, so wave 1's gate is skipped and wave 2's watches 10 s).
From the timed lines of the canary run (`nixfleet: wave N of M starts`, pyinfra's line per
host, `... passed`) it shows where the extra time goes, per wave: its rebuilds (the wave's
start to its last host's line), its gates (that line to `passed`: the alert gate's settle) and
the idle time before the next wave starts (the one target: no idle time, <= 0.5 s here).
The lab hosts share this machine's cores, so compare ratios, not absolute times.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

from deploy import Repo, Timings, arguments, judge, lab_up, switch_summary

IDLE_TARGET = 0.5  # seconds between a wave's `passed` and the next wave's start
WAVE_START = re.compile(r"^nixfleet: wave (\d+) of \d+ starts: (.*?)(?: \(one host per .*\))?$")
WAVE_PASSED = re.compile(r"^nixfleet: wave (\d+) of \d+ passed$")
HOST_DONE = re.compile(r"^\s+\[(\S+)\]\s+(Success|Error|No changes)\b")
OPERATION_START = "--> Starting operation:"
SETTLE = re.compile(r"alert gate: no new alert within (\d+)s")


@dataclass
class Wave:
    """One wave of a canary run, in seconds since the run started."""

    hosts: list[str]
    start: float
    last_host: float = 0.0  # the line of its last host's rebuild
    passed: float = 0.0
    next_start: float | None = None  # the next wave's start; None for the last wave
    settle: int = 0  # the alert gate's settle that applied, from the summary

    @property
    def rebuild(self) -> float:
        return self.last_host - self.start

    @property
    def gates(self) -> float:
        return self.passed - self.last_host

    @property
    def idle(self) -> float | None:
        return None if self.next_start is None else self.next_start - self.passed


@dataclass
class TimedSwitch:
    """A switch's output lines with the second each came, its summary, and its waves."""

    lines: list[tuple[float, str]]
    summary: dict
    operation_start: float = 0.0
    waves: list[Wave] = field(default_factory=list)

    @property
    def rebuild(self) -> float:
        """The operation's start to the last host's line: the hosts' rebuilds and gates."""
        done = [at for at, line in self.lines if HOST_DONE.match(line)]
        return max(done) - self.operation_start


def timed_switch(repo: Repo, *data: str) -> TimedSwitch:
    """repo's one-change switch, each output line timed as it comes."""
    argv = repo.switch_argv(*data)
    lines: list[tuple[float, str]] = []
    start = time.perf_counter()
    with subprocess.Popen(argv, cwd=repo.dir, env=repo.env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as process:
        for line in process.stdout or ():
            lines.append((time.perf_counter() - start, line.rstrip("\n")))
    output = "\n".join(line for _, line in lines)
    summary = switch_summary(subprocess.CompletedProcess(argv, process.returncode, output, ""))
    switch = TimedSwitch(lines, summary)
    switch.operation_start = next(at for at, line in lines if line.startswith(OPERATION_START))
    switch.waves = waves_of(switch)
    return switch


def waves_of(switch: TimedSwitch) -> list[Wave]:
    """The waves of a canary run from its timed lines (none for a plain one)."""
    waves: list[Wave] = []
    for at, line in switch.lines:
        if started := WAVE_START.match(line):
            if waves:
                waves[-1].next_start = at
            waves.append(Wave(started[2].split(", "), at))
        elif (done := HOST_DONE.match(line)) and waves and done[1] in waves[-1].hosts:
            waves[-1].last_host = at
        elif WAVE_PASSED.match(line) and waves:
            waves[-1].passed = at
    for wave in waves:
        settles = [int(found[1]) for host in wave.hosts
                   if (found := SETTLE.search(switch.summary[host]["reason"] or ""))]
        wave.settle = max(settles, default=0)
    if any(not w.passed or not w.last_host for w in waves):
        text = "\n".join(line for _, line in switch.lines)
        raise SystemExit(f"a canary run whose waves did not all pass:\n{text}")
    return waves


def measure(size: int, repeats: int) -> dict[str, float]:
    print(f"\n== {size} lab hosts", flush=True)
    lab_up(size)
    repo = Repo()
    repo.nixfleet_switch()  # everything deployed once before timing
    timings = Timings()
    plains: list[TimedSwitch] = []
    canaries: list[TimedSwitch] = []
    for _ in range(repeats):
        repo.flip()
        plains.append(timings.run("plain", lambda: timed_switch(repo)))
        repo.flip()
        canaries.append(timings.run("canary", lambda: timed_switch(repo, "canary=true")))
        if not canaries[-1].waves:
            raise SystemExit("the canary run printed no wave")
    shutil.rmtree(repo.dir, ignore_errors=True)

    medians = {k: statistics.median(v) for k, v in timings.wall.items()}
    print(f"  {'':<8} {'wall':>8}   {'CPU':>8}   (wall of each run)")
    for name, value in medians.items():
        cpu = statistics.median(timings.cpu[name])
        runs = ", ".join(f"{t:.2f}" for t in timings.wall[name])
        print(f"  {name:<8} {value:6.2f} s   {cpu:6.2f} s   ({runs})")
    figures = {**medians, **{f"cpu {k}": statistics.median(v) for k, v in timings.cpu.items()}}
    figures["plain rebuild"] = statistics.median(p.rebuild for p in plains)
    figures["canary before wave 1"] = statistics.median(c.waves[0].start for c in canaries)
    figures["plain before the operation"] = statistics.median(p.operation_start for p in plains)
    print(f"  plain: the operation's start to its last host's line {figures['plain rebuild']:.2f}"
          f" s; canary, median seconds per wave (the runs' waves are the same hosts):")
    count = len(canaries[0].waves)
    for i in range(count):
        waves = [c.waves[i] for c in canaries]
        rebuild = statistics.median(w.rebuild for w in waves)
        gates = statistics.median(w.gates for w in waves)
        settle = waves[0].settle
        figures[f"wave {i + 1} rebuild"] = rebuild
        figures[f"wave {i + 1} gates"] = gates
        figures[f"wave {i + 1} settle"] = settle
        hosts = len(waves[0].hosts)
        line = (f"    wave {i + 1} of {count} ({hosts:>2} host{'s' if hosts > 1 else ' '}): "
                f"rebuild {rebuild:6.2f}, gates {gates:6.2f} (alert gate settle {settle} s)")
        if i + 1 < count:
            idle = statistics.median(w.idle for w in waves if w.idle is not None)
            figures[f"wave {i + 1} idle"] = idle
            line += f", then idle {idle:.3f} before wave {i + 2}"
        print(line)
    figures["idle between waves"] = max(
        (figures[f"wave {i + 1} idle"] for i in range(count - 1)), default=0.0)
    figures["gates"] = sum(figures[f"wave {i + 1} gates"] for i in range(count))
    figures["waves rebuild"] = sum(figures[f"wave {i + 1} rebuild"] for i in range(count))
    extra = medians["canary"] - medians["plain"]
    idle = sum(figures[f"wave {i + 1} idle"] for i in range(count - 1))
    serial = figures["waves rebuild"] - figures["plain rebuild"]
    rest = extra - figures["gates"] - idle - serial
    print(f"  canary - plain {extra:.2f} s: gates {figures['gates']:.2f}, idle {idle:.3f}, "
          f"waves one after another (their rebuilds against the plain one's) {serial:.2f}, "
          f"the rest (connecting, facts, the summary) {rest:.2f}")
    return figures


# (what, value of the figures, target: it must be <= it, or None)
RATIOS = [
    ("canary / plain", lambda f: f["canary"] / f["plain"], None),
    ("canary - plain (s)", lambda f: f["canary"] - f["plain"], None),
    ("gates: sum of the waves' (s)", lambda f: f["gates"], None),
    ("idle between waves, the longest (s)", lambda f: f["idle between waves"], IDLE_TARGET),
]


def main() -> int:
    args = arguments(__doc__.splitlines()[0]).parse_args()
    results = {size: measure(size, args.repeats) for size in args.sizes}
    lab_up(4)
    print("\n== canary against plain (targets in brackets)")
    ratios, missed = judge(results, RATIOS)
    if args.json:
        args.json.write_text(json.dumps({"benchmark": "rollout", "repeats": args.repeats,
                                         "seconds": results, "ratios": ratios}, indent=2) + "\n")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
