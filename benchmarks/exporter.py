"""NixOS exporter benchmark (run by hand): scrape latency against the original's approach.

    python benchmarks/exporter.py --lab HOST [--paths 20000] [--scrapes 200]
    python benchmarks/exporter.py [--store DIR | --fill] [--paths 20000] [--scrapes 200]

- exporter: ``python -m nixfleet.exporters.nixos`` as its own process, scraped over HTTP
  ``--scrapes`` times (after 5 unmeasured ones); its resident memory afterwards.
- original: what the original exporter did on every scrape for its store metrics, served the
  same way: ``du -s`` of the store and a ``find`` for ``*.drv`` in it (each under
  ``timeout 5``, as it ran them). The original also ran nix-env, ``nix-store --gc
  --print-roots`` and nix-channel per scrape; those are not counted here.
Both sides read the same store in the same run.

--lab HOST runs all of it on that lab host (NIXFLEET_LAB_INSTANCE selects the lab; `nixfleet
lab up` first): the script goes over SSH to the host's python3, with the exporter modules the
lab ships to every host, and fills the host's own store up to --paths valid paths first.

Without --lab or --store it reads this host's own store and system (run it as root on a host
with Nix: only python3 with prometheus_client is needed there); --fill first fills that store
up to --paths (small files, a tenth of them derivations, with nix-store --add and
nix-instantiate): for a lab host, never a real one. With --store DIR it reads a chroot Nix
store in DIR (``nix --store DIR``), filled the same way.

Targets: exporter p99 < 50 ms, >= 100x faster than the original (median), RSS < 40 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Where a lab host has nixfleet's exporter modules (nixfleet.lab.machine.LAB_PYTHON).
LAB_PYTHON = "/usr/lib/nixfleet-lab/python"
WARMUP = 5
BATCH = 1000  # files per nix-store --add
# A throwaway store: no fsync per path, no build users (none exist outside NixOS).
QUIET = ("--option", "fsync-metadata", "false", "--option", "build-users-group", "")


def nix(*args: str) -> str:
    return subprocess.run(["nix", "--extra-experimental-features", "nix-command", *args],
                          capture_output=True, text=True, check=True).stdout


def store_option(store: Path) -> list[str]:
    """How Nix commands name the store under `store`: none for this host's own (/)."""
    return [] if store == Path("/") else ["--store", str(store)]


def valid_paths(store: Path) -> list[str]:
    if not (store / "nix" / "var" / "nix" / "db" / "db.sqlite").exists():
        return []
    return nix(*store_option(store), "path-info", "--all").split()


def populate(store: Path, wanted: int) -> None:
    """Fill the chroot store at ``store`` up to ``wanted`` valid paths: a tenth derivations
    (nix-instantiate), the rest small files (nix-store --add), and a system profile."""
    have = len(valid_paths(store))
    if have >= wanted:
        return
    started = time.monotonic()
    missing = wanted - have
    derivations = missing // 10
    salt = f"{time.time_ns()}"
    with tempfile.TemporaryDirectory() as scratch:
        names = []
        for number in range(missing - derivations):
            path = Path(scratch, f"bench-{salt}-{number}.txt")
            path.write_text(f"benchmark file {salt} {number}\n" * 4)
            names.append(str(path))
        for start in range(0, len(names), BATCH):
            subprocess.run(["nix-store", *store_option(store), *QUIET, "--add",
                            *names[start:start + BATCH]], check=True, stdout=subprocess.DEVNULL)
    if derivations:
        expression = (
            f"builtins.genList (i: derivation {{ name = \"bench-{salt}-${{toString i}}\";"
            " system = builtins.currentSystem; builder = \"/bin/sh\";"
            f" args = [ \"-c\" \"echo ${{toString i}} > $out\" ]; }}) {derivations}"
        )
        subprocess.run(["nix-instantiate", *store_option(store), *QUIET, "--expr", expression],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"filled {store}: {missing} paths added in {time.monotonic() - started:.1f} s")
    if store == Path("/"):
        return  # a host's own store has its real system profile
    profiles = store / "nix" / "var" / "nix" / "profiles"
    profiles.mkdir(parents=True, exist_ok=True)
    some = sorted(valid_paths(store))[:3]
    for number, target in enumerate(some, 1):
        link = profiles / f"system-{number}-link"
        if not link.is_symlink():
            link.symlink_to(target)
    if not (profiles / "system").is_symlink() and some:
        (profiles / "system").symlink_to(f"system-{len(some)}-link")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as answer:
        return answer.read()


def latencies(url: str, scrapes: int) -> list[float]:
    for _ in range(WARMUP):
        get(url)
    times = []
    for _ in range(scrapes):
        started = time.perf_counter()
        get(url)
        times.append(time.perf_counter() - started)
    return times


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def original_server(nix_store: Path) -> ThreadingHTTPServer:
    """The original's store metrics: du and find on every scrape, in one bash run."""
    store = shlex.quote(str(nix_store))
    script = (
        f"size=$(timeout 5 du -s {store} 2>/dev/null | awk '{{print $1 * 1024}}' || echo 0)\n"
        'echo "nixos_store_size_bytes $size"\n'
        f"drvs=$(timeout 5 find {store} -name '*.drv' 2>/dev/null | wc -l || echo 0)\n"
        'echo "nixos_store_derivations_total $drvs"\n'
    )

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = subprocess.run(["bash", "-c", script], capture_output=True).stdout
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def memory(pid: int) -> tuple[float, float]:
    """Resident and peak resident memory of a process, in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    kib = {key: int(re.search(rf"^{key}:\s+(\d+) kB", status, re.M)[1])  # type: ignore[index]
           for key in ("VmRSS", "VmHWM")}
    return kib["VmRSS"] / 1024, kib["VmHWM"] / 1024


def start_exporter(root: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    # This checkout's modules, else (on a lab host) the ones the lab ships.
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), LAB_PYTHON])}
    process = subprocess.Popen(
        [sys.executable, "-m", "nixfleet.exporters.nixos", "--address", "127.0.0.1",
         "--port", str(port), "--root", str(root)],
        env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + 600  # the first read of a large store happens before it listens
    while True:
        try:
            get(url)
            return process, url
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the exporter did not start") from None
            time.sleep(0.1)


def metric(text: str, name: str) -> float | None:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found[1]) if found else None


def report(label: str, times: list[float]) -> tuple[float, float]:
    p50, p99 = statistics.median(times), percentile(times, 0.99)
    print(f"  {label:<9} p50 {p50 * 1000:9.2f} ms   p99 {p99 * 1000:9.2f} ms   "
          f"({len(times)} scrapes)")
    return p50, p99


def on_lab_host(host: str, arguments: list[str], json_file: Path | None) -> int:
    """This script, run by the lab host's python3 over the lab's SSH (source on stdin); its
    JSON (--json) comes back on the last line of its output."""
    command = ["python3", "-", *arguments, *(["--json", "-"] if json_file else [])]
    print(f"on lab host {host}: {shlex.join(command)}", flush=True)
    result = subprocess.run([sys.executable, "-m", "nixfleet", "lab", "exec", host, "--",
                             *command], cwd=ROOT, input=Path(__file__).read_text(),
                            capture_output=True, text=True)
    lines = result.stdout.rstrip("\n").split("\n")
    if json_file:
        json_file.write_text(lines.pop() + "\n")
    print("\n".join(lines))
    print(result.stderr, end="", file=sys.stderr)
    return result.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", metavar="HOST",
                        help="run on this lab host, its own store filled up to --paths")
    parser.add_argument("--fill", action="store_true",
                        help="fill this host's own store up to --paths first (lab hosts only)")
    parser.add_argument("--store", type=Path, metavar="DIR",
                        help="a chroot Nix store to read (filled up to --paths); "
                             "default: this host's own store and system")
    parser.add_argument("--paths", type=int, default=20000,
                        help="valid paths the --store should hold (default: 20000)")
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    args = parser.parse_args()
    if args.lab:
        return on_lab_host(args.lab, ["--fill", "--paths", str(args.paths),
                                      "--scrapes", str(args.scrapes)], args.json)

    root = args.store.resolve() if args.store else Path("/")
    if args.store or args.fill:
        populate(root, args.paths)
    nix_store = root / "nix" / "store"
    paths = valid_paths(root)
    files = sum(len(f) + len(d) for _, d, f in os.walk(nix_store))
    print(f"store: {nix_store} — {len(paths)} valid paths "
          f"({sum(p.endswith('.drv') for p in paths)} derivations), {files} files and directories")

    exporter, url = start_exporter(root)
    try:
        exporter_times = latencies(url, args.scrapes)
        rss, peak = memory(exporter.pid)
        body = get(url).decode()
    finally:
        exporter.terminate()
        exporter.wait(timeout=30)
    original = original_server(nix_store)
    try:
        original_times = latencies(f"http://127.0.0.1:{original.server_address[1]}/metrics",
                                   args.scrapes)
    finally:
        original.shutdown()

    print("\n== scrape latency")
    ours = report("exporter", exporter_times)
    theirs = report("original", original_times)
    store_read = metric(body, 'nixos_exporter_source_duration_seconds{source="store"}')
    roots_read = metric(body, 'nixos_exporter_source_duration_seconds{source="gc_roots"}')
    print(f"  the exporter reads the store in the background: {store_read or 0:.3f} s "
          f"(+ GC roots {roots_read or 0:.3f} s) every --store-interval (300 s)")
    print(f"  exporter sees {metric(body, 'nixos_store_paths'):.0f} paths, "
          f"{metric(body, 'nixos_store_derivations_total'):.0f} derivations")

    checks = [
        (f"exporter p99 {ours[1] * 1000:.2f} ms  [< 50 ms]", ours[1] < 0.050),
        (f"original / exporter, median: {theirs[0] / ours[0]:.0f}x faster  [>= 100x]"
         f"  (p99: {theirs[1] / ours[1]:.0f}x)", theirs[0] / ours[0] >= 100),
        (f"exporter RSS {rss:.1f} MiB (peak {peak:.1f} MiB)  [< 40 MiB]", peak < 40),
    ]
    print("\n== targets")
    for line, ok in checks:
        print(f"  {'ok    ' if ok else 'MISSED'} {line}")
    if args.json:
        figures = json.dumps({
            "benchmark": "exporter", "paths": len(paths),
            "seconds": {"exporter p50": ours[0], "exporter p99": ours[1],
                        "original p50": theirs[0], "original p99": theirs[1]},
            "rss_mib": rss, "peak_rss_mib": peak,
            "ratios": [{"ratio": "original / exporter, median (x faster)",
                        "value": theirs[0] / ours[0], "target": 100}]})
        if str(args.json) == "-":
            print(figures)  # the last line, for on_lab_host
        else:
            args.json.write_text(figures + "\n")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
