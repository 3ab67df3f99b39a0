"""Rekey benchmark (run by hand): `nixfleet secrets rekey --all` vs agenix's way.

    python benchmarks/rekey.py [--secrets 200] [--repeat 3]

A throwaway repository: the inventory's 4 hosts plus 2 clones, one user, fresh ssh-ed25519
keys; every secret goes to 6 recipients (even ones: allUsers ++ workstations ++ [p510 dex5550],
odd ones: allUsers ++ servers ++ [p620 razer]).
- nixfleet: the whole `nixfleet secrets rekey --all` process (start-up, inventory, rules,
  decrypt + encrypt + atomic write of every file).
- baseline: what `agenix -r` does per file, one `age -d` and one `age -e -R` process each
  (agenix also evaluates secrets.nix once per file; that is not counted here).
Both sides run in alternating rounds of the same run; the best round of each counts. Then one
host key changes (the clone p620b, a workstation) and a plain `rekey` runs: only the files
whose rules include p620b may be touched.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EVEN = ["allUsers", "workstations", "p510", "dex5550"]
ODD = ["allUsers", "servers", "p620", "razer"]
CLONES = {"p620b": "p620", "p510b": "p510"}


def keygen(directory: Path, name: str) -> tuple[Path, str]:
    path = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
                   check=True)
    return path, (directory / f"{name}.pub").read_text().strip()


def write_inventory(repo: Path, entries: list) -> None:
    (repo / "inventory.py").write_text(
        "from nixfleet.inventory import nixfleet_inventory\n\n"
        f"_HOSTS = {entries!r}\n\nfleet, _groups = nixfleet_inventory(_HOSTS, __file__)\n")


def make_repo(base: Path, count: int) -> tuple[Path, dict[str, tuple[Path, str]], list]:
    repo = base / "repo"
    (repo / "secrets").mkdir(parents=True)
    shutil.copytree(ROOT / "group_data", repo / "group_data",
                    ignore=shutil.ignore_patterns("__pycache__"))
    keys_dir = base / "keys"
    keys_dir.mkdir()
    entries = copy.deepcopy(runpy.run_path(str(ROOT / "inventory.py"))["_HOSTS"])
    by_name = dict(entries)
    entries += [(clone, copy.deepcopy(by_name[source])) for clone, source in CLONES.items()]
    admin = entries[0][1]["users"][0]["name"]
    keys = {name: keygen(keys_dir, name) for name in [admin, *(n for n, _ in entries)]}
    for name, entry in entries:
        entry["ssh"]["hostKey"] = keys[name][1]
        entry["users"] = [{**entry["users"][0], "sshKey": keys[admin][1]}]
    write_inventory(repo, entries)
    rules = {f"bench-{i:03d}": {"recipients": EVEN if i % 2 == 0 else ODD}
             for i in range(count)}
    (repo / "secrets" / "rules.py").write_text(f"SECRETS = {rules!r}\n")
    return repo, keys, entries


def nixfleet_command() -> list[str]:
    return [sys.executable, "-m", "nixfleet", "secrets"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "NIXFLEET_TARGET": "fleet"}


def digests(repo: Path) -> dict[str, str]:
    return {p.stem: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (repo / "secrets").glob("*.age")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secrets", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="rounds per side (best counts)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    arguments = parser.parse_args()
    count, repeat = arguments.secrets, arguments.repeat

    from nixfleet.inventory import load_inventory_file
    from nixfleet.secrets.rules import load_rules
    from nixfleet.secrets.store import SecretStore

    with tempfile.TemporaryDirectory(prefix="nixfleet-bench-") as tmp:
        base = Path(tmp)
        repo, keys, entries = make_repo(base, count)
        admin_key = keys[entries[0][1]["users"][0]["name"]][0]
        command = nixfleet_command()
        run = [*command, "-i", str(admin_key)]
        subprocess.run([*command, "init"], cwd=repo, env=_env(), check=True,
                       capture_output=True)
        store = SecretStore(repo, load_rules(load_inventory_file(repo / "inventory.py"), repo))
        for name in store.rules.secrets:
            store.create(name, f"value of {name}\n".encode())
        if any(len(rule.recipients) != 6 for rule in store.rules.secrets.values()):
            raise SystemExit("benchmark setup: every secret should have 6 recipients")

        recipient_files = {}
        for variant, references in (("even", EVEN), ("odd", ODD)):
            rule = next(r for r in store.rules.secrets.values()
                        if r.references == tuple(references))
            recipient_files[variant] = base / f"recipients-{variant}.txt"
            recipient_files[variant].write_text("".join(f"{r.key}\n" for r in rule.recipients))

        def nixfleet_rekey() -> None:
            subprocess.run([*run, "rekey", "--all"], cwd=repo, env=_env(), check=True,
                           capture_output=True)

        def age_rekey() -> None:
            for path in sorted((repo / "secrets").glob("*.age")):
                plain = subprocess.run(["age", "-d", "-i", str(admin_key), str(path)],
                                       capture_output=True, check=True).stdout
                tmp_out = path.with_name(f".{path.name}.tmp")
                recipients = recipient_files["even" if int(path.stem[-3:]) % 2 == 0 else "odd"]
                subprocess.run(["age", "-e", "-R", str(recipients), "-o", str(tmp_out)],
                               input=plain, check=True)
                os.replace(tmp_out, path)

        # Alternating rounds, so that a burst of load elsewhere hits both sides alike.
        samples: dict[str, list[float]] = {"nixfleet": [], "age": []}
        for _ in range(repeat):
            for label, func in (("nixfleet", nixfleet_rekey), ("age", age_rekey)):
                start = time.perf_counter()
                func()
                samples[label].append(time.perf_counter() - start)
        ours, baseline = min(samples["nixfleet"]), min(samples["age"])

        def seconds(values: list[float]) -> str:
            return " ".join(f"{v:.2f}" for v in values)

        print(f"rekey {count} secrets x 6 ssh-ed25519 recipients, {os.cpu_count()} CPUs, "
              f"best of {repeat} alternating rounds")
        print(f"  nixfleet secrets rekey --all (whole process): {ours:.2f} s  "
              f"(rounds: {seconds(samples['nixfleet'])})")
        print(f"  age -d + age -e per file (agenix -r):         {baseline:.2f} s  "
              f"(rounds: {seconds(samples['age'])})")
        print(f"  ratio: {baseline / ours:.1f}x faster")
        if shutil.which("nix-instantiate"):
            # agenix -r also asks Nix for each file's publicKeys (one nix-instantiate per file).
            start = time.perf_counter()
            for name in store.rules.secrets:
                expression = (f'(let rules = import {repo}/secrets/secrets.nix; in '
                              f'rules."secrets/{name}.age".publicKeys)')
                subprocess.run(["nix-instantiate", "--store", "dummy://", "--json", "--eval",
                                "--strict", "-E", expression], check=True, capture_output=True)
            keys_time = time.perf_counter() - start
            print(f"  + nix-instantiate per file for the keys, as agenix -r also runs: "
                  f"{baseline + keys_time:.2f} s, ratio {(baseline + keys_time) / ours:.1f}x")

        # One recipient changes: only the files whose rules name it are re-encrypted.
        before = digests(repo)
        for name, entry in entries:
            if name == "p620b":
                entry["ssh"]["hostKey"] = keygen(base / "keys", "p620b-new")[1]
        write_inventory(repo, entries)
        start = time.perf_counter()
        subprocess.run([*run, "rekey"], cwd=repo, env=_env(), check=True, capture_output=True)
        elapsed = time.perf_counter() - start
        after = digests(repo)
        touched = {name for name in before if before[name] != after[name]}
        rules = load_rules(load_inventory_file(repo / "inventory.py"), repo)
        naming = {n for n, r in rules.secrets.items() if "p620b" in [x.name for x in r.recipients]}
        print(f"after p620b's host key changed: `rekey` touched {len(touched)} of {len(before)} "
              f"files in {elapsed:.2f} s; files whose rules include p620b: {len(naming)}; "
              f"same set: {touched == naming}")
        if arguments.json:
            arguments.json.write_text(json.dumps({
                "benchmark": "rekey", "secrets": count, "seconds": {
                    "nixfleet": ours, "age": baseline, "one key changed": elapsed},
                "ratios": [{"ratio": "age / nixfleet (x faster)", "value": baseline / ours,
                            "target": None}],
                "touched only the files naming the changed key": touched == naming}, indent=2)
                + "\n")
        return 0 if touched == naming else 1


if __name__ == "__main__":
    raise SystemExit(main())
