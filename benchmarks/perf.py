"""`just perf-test`: every benchmark, their ratio tables, and one JSON file of the figures.

    .venv/bin/python benchmarks/perf.py [--quick] [--sizes 4 16 64] [--out DIR]

Runs, one after another on the lab (root; NIXFLEET_LAB_INSTANCE selects the lab):
  deploy    benchmarks/deploy.py --sizes SIZES   (nixfleet against the floors and the loop)
  rekey     benchmarks/rekey.py                   (secrets rekey against agenix's way)
  exporter  benchmarks/exporter.py --lab p620     (scrape latency, >= 20,000 store paths)
  verify    benchmarks/verify.py --sizes 4 16     (fleet against the slowest single host)
  rollout   benchmarks/rollout.py --sizes 4 16    (a canary rollout against a plain switch)
  builder   benchmarks/builder.py --sizes 4 16    (built on p620 against on each target)
Each prints its own table; then the ratios of all of them, and OUT/perf-<time>.json.
--quick: one repeat each, deploys at 4 and 16 hosts only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def benchmarks(sizes: list[int], repeats: int) -> dict[str, list[str]]:
    here = Path(__file__).resolve().parent
    return {
        "deploy": [str(here / "deploy.py"), "--repeats", str(repeats), "--sizes",
                   *map(str, sizes)],
        "rekey": [str(here / "rekey.py"), "--repeat", str(repeats)],
        "exporter": [str(here / "exporter.py"), "--lab", "p620"],
        "verify": [str(here / "verify.py"), "--repeats", str(repeats), "--sizes",
                   *map(str, [s for s in sizes if s <= 16])],
        "rollout": [str(here / "rollout.py"), "--repeats", str(repeats), "--sizes",
                    *map(str, [s for s in sizes if s <= 16])],
        "builder": [str(here / "builder.py"), "--repeats", str(repeats), "--sizes",
                    *map(str, [s for s in sizes if s <= 16])],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--out", type=Path, default=ROOT / ".perf")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this benchmark (repeatable): deploy, rekey, exporter, "
                             "verify, rollout, builder")
    args = parser.parse_args()
    sizes, repeats = ([4, 16], 1) if args.quick else (args.sizes, 3)
    results, failed = {}, []
    with tempfile.TemporaryDirectory(prefix="nixfleet-perf-") as scratch:
        for name, argv in benchmarks(sizes, repeats).items():
            if args.only and name not in args.only:
                continue
            print(f"\n######## {name}: {' '.join(argv[1:])}", flush=True)
            figures = Path(scratch) / f"{name}.json"
            started = time.monotonic()
            code = subprocess.run([sys.executable, *argv, "--json", str(figures)],
                                  cwd=ROOT).returncode
            results[name] = {"exit": code, "seconds": round(time.monotonic() - started, 1),
                             **(json.loads(figures.read_text()) if figures.exists() else {})}
            if code != 0:
                failed.append(name)
    print("\n######## ratios (targets in brackets)")
    for name, result in results.items():
        for ratio in result.get("ratios", []):
            hosts = f"{ratio['hosts']} hosts " if "hosts" in ratio else ""
            target = "" if ratio["target"] is None else f"  [{ratio['target']:g}]"
            print(f"  {name:<9} {hosts}{ratio['ratio']}: {ratio['value']:.2f}{target}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"perf-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nfigures: {path}")
    if failed:
        print(f"missed a target or failed: {', '.join(failed)} (see above)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
