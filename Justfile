# nixfleet recipes, named as in the original configuration's Justfile.
# README.md ("Commands of the original Justfile") maps every original recipe to its command.
# `just` comes with the dev extras (rust-just): .venv/bin/just
# NIXFLEET_TARGET=lab makes every recipe act on the built-in lab instead of the real hosts.

export PATH := justfile_directory() + "/.venv/bin:" + env_var("PATH")

# List recipes
default:
    @just --list

# Install system packages and the virtualenv (Debian 12, root)
setup:
    scripts/setup

# The CI pipeline: steps in parallel with time limits, report.md and junit.xml (--help)
ci *ARGS:
    scripts/ci {{ARGS}}

# The fleet, validated: hosts, groups and merged data (e.g. just inventory --limit nvidia)
inventory *ARGS:
    nixfleet inventory {{ARGS}}

# Regenerate nix/hosts/*.json and known_hosts from inventory.py and group_data/
generate:
    nixfleet generate

# Every check that needs no host, one table of steps; exit 1 on any failure
validate *ARGS:
    nixfleet validate {{ARGS}}

# validate without promtool/amtool and nix flake check
validate-quick *ARGS:
    nixfleet validate --quick {{ARGS}}

# nix flake check ./nix (needs nixpkgs from GitHub; one line says so where unreachable)
check:
    nixfleet check-flake

# Every .nix file parses; lists file:line:col of each error and exits non-zero
check-syntax:
    nixfleet check-syntax

# Feature flags <-> module options, every module imported, no host names in modules
test-modules:
    nixfleet check-nix

# ruff format and a Nix formatter (nixfmt or alejandra) on PATHs, default the project
[positional-arguments]
format *PATHS:
    #!/usr/bin/env bash
    set -euo pipefail
    if (($# == 0)); then cd "{{justfile_directory()}}"; set -- .; else cd "{{invocation_directory()}}"; fi
    python=()  # ruff formats any file it is given as Python: directories and *.py only
    for path in "$@"; do [[ -d "$path" || "$path" == *.py || "$path" == *.pyi ]] && python+=("$path"); done
    ((${#python[@]} == 0)) || ruff format "${python[@]}"
    mapfile -t nix_files < <(find "$@" \( -name .git -o -name .venv -o -name result \) -prune \
      -o -type f -name '*.nix' -print)
    ((${#nix_files[@]})) || exit 0
    if command -v nixfmt >/dev/null; then
      nixfmt "${nix_files[@]}"
    elif command -v alejandra >/dev/null; then
      alejandra --quiet "${nix_files[@]}"
    else
      echo "format: ${#nix_files[@]} .nix files left as they are: no Nix formatter on PATH;" \
        "install nixfmt (nixpkgs: nixfmt-rfc-style, the nixpkgs style) or alejandra" >&2
    fi

# Build one host's system: the real flake locally (needs nixpkgs), the lab's on the lab host
test-host HOST:
    #!/usr/bin/env bash
    set -euo pipefail
    if [[ "${NIXFLEET_TARGET:-fleet}" == lab ]]; then
      pyinfra inventory.py deploys/build.py --limit {{HOST}} -y
    else
      nix build "./nix#nixosConfigurations.{{HOST}}.config.system.build.toplevel" --no-link
    fi

# Build every host's system
test-all:
    #!/usr/bin/env bash
    set -euo pipefail
    if [[ "${NIXFLEET_TARGET:-fleet}" == lab ]]; then
      pyinfra inventory.py deploys/build.py -y
    else
      for host in $(nixfleet inventory --json | python3 -c 'import json,sys; print(*[h["name"] for h in json.load(sys.stdin)])'); do
        nix build "./nix#nixosConfigurations.$host.config.system.build.toplevel" --no-link
      done
    fi

# Facts of every host: generation, NixOS version, reboot required, GPU, failed units
facts *ARGS:
    nixfleet facts {{ARGS}}

# Delete old generations, rewrite boot entries, collect garbage (--keep N, --older-than DAYS, --boot, --dry, -y)
gc *ARGS:
    nixfleet gc {{ARGS}}

# Each host's boot partition: free now, and what `gc --boot` would free (changes nothing)
boot-space *ARGS:
    nixfleet gc --boot --dry {{ARGS}}

# Scrape targets per host, firing alerts, Prometheus/Alertmanager/Grafana (e.g. --limit razer)
monitoring-status *ARGS:
    nixfleet monitoring status {{ARGS}}

# The original's three status recipes are this one
alias prometheus-status := monitoring-status
alias grafana-status := monitoring-status
alias node-exporter-status := monitoring-status

# Switch the machine this runs on (an inventory host) after validate-quick
deploy *FLAGS: validate-quick
    nixfleet deploy switch --limit "$(hostname)" {{FLAGS}}

# Switch p620 after validate-quick (FLAGS: --reboot, --no-rollback)
p620 *FLAGS: validate-quick
    nixfleet deploy switch --limit p620 {{FLAGS}}

# Switch razer after validate-quick (FLAGS: --reboot, --no-rollback)
razer *FLAGS: validate-quick
    nixfleet deploy switch --limit razer {{FLAGS}}

# Switch p510 after validate-quick (FLAGS: --reboot, --no-rollback)
p510 *FLAGS: validate-quick
    nixfleet deploy switch --limit p510 {{FLAGS}}

# Switch dex5550 after validate-quick (FLAGS: --reboot, --no-rollback)
dex5550 *FLAGS: validate-quick
    nixfleet deploy switch --limit dex5550 {{FLAGS}}

# Switch every host in parallel after validate-quick; asks y/N unless -y
deploy-all *FLAGS: validate-quick
    #!/usr/bin/env bash
    set -euo pipefail
    flags=() yes=false
    for flag in {{FLAGS}}; do
      if [[ "$flag" == -y || "$flag" == --yes ]]; then yes=true; else flags+=("$flag"); fi
    done
    if ! $yes; then
      printf 'Deploy to ALL hosts? [y/N] ' >&2  # shown also when the answer is piped in
      read -r answer || answer=""
      [[ "$answer" == [yY] ]] || { echo "aborted: nothing was deployed"; exit 1; }
    fi
    exec nixfleet deploy switch "${flags[@]}"

# Update every flake input, build, switch this machine, commit flake.lock (the original's system update)
update *FLAGS: validate-quick
    nixfleet update --deploy --limit "$(hostname)" {{FLAGS}}

# Update every flake input, build every host and show what changes, commit flake.lock (needs network)
update-flake *FLAGS:
    nixfleet update {{FLAGS}}

# Update one flake input, e.g. nixpkgs: build every host, show what changes, commit (needs network)
update-input NAME *FLAGS:
    nixfleet update --input {{NAME}} {{FLAGS}}

# Every benchmark on the lab, their ratio tables, .perf/perf-*.json (--quick: 4 and 16 hosts)
perf-test *ARGS:
    python benchmarks/perf.py {{ARGS}}

# Each host: address, SSH ok, latency, NixOS version (e.g. --limit nvidia)
ping-hosts *ARGS:
    nixfleet ping {{ARGS}}

# Each host: flake up to date, system, last deploy, verified, failed units, space, alerts; exit 1 on a problem
status *ARGS:
    nixfleet status {{ARGS}}

# The built-in lab: boot its hosts (idempotent; --extra N adds clones)
lab-up *ARGS:
    nixfleet lab up {{ARGS}}

# The lab's hosts: state, address, systemd state, generation, memory
lab-status:
    nixfleet lab status

# Stop the lab; nothing left behind
lab-down:
    nixfleet lab down
