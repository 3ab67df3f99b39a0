# nixfleet recipes, named as in the original configuration's Justfile.
# Only recipes that work are here; README.md lists the planned ones.
# `just` comes with the dev extras (rust-just): .venv/bin/just
# NIXFLEET_TARGET=lab makes every recipe act on the built-in lab instead of the real hosts.

export PATH := justfile_directory() + "/.venv/bin:" + env_var("PATH")

# List recipes
default:
    @just --list

# Install system packages and the virtualenv (Debian 12, root)
setup:
    scripts/setup

# The whole test suite (lint, types, unit and lab tests): what CI runs
ci *ARGS:
    scripts/test {{ARGS}}

# The fleet, validated: hosts, groups and merged data (e.g. just inventory --limit nvidia)
inventory *ARGS:
    nixfleet inventory {{ARGS}}

# Regenerate nix/hosts/*.json and known_hosts from inventory.py and group_data/
generate:
    nixfleet generate

# Inventory valid, generated files current, nix/ checks (exits non-zero on any problem)
validate-quick:
    nixfleet generate --check
    nixfleet check-nix

# Every .nix file parses; lists file:line:col of each error and exits non-zero
check-syntax:
    nixfleet check-syntax

# Feature flags <-> module options, every module imported, no host names in modules
test-modules:
    nixfleet check-nix

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

# Scrape targets per host, firing alerts, Prometheus/Alertmanager/Grafana (e.g. --limit razer)
monitoring-status *ARGS:
    nixfleet monitoring status {{ARGS}}

# The original's three status recipes are this one
alias prometheus-status := monitoring-status
alias grafana-status := monitoring-status
alias node-exporter-status := monitoring-status

# Switch the machine this runs on (must be an inventory host)
deploy:
    pyinfra inventory.py deploys/switch.py --limit "$(hostname)" -y

# Switch one host (the original's per-host recipes)
p620:
    pyinfra inventory.py deploys/switch.py --limit p620 -y

razer:
    pyinfra inventory.py deploys/switch.py --limit razer -y

p510:
    pyinfra inventory.py deploys/switch.py --limit p510 -y

dex5550:
    pyinfra inventory.py deploys/switch.py --limit dex5550 -y

# Switch every host in parallel; asks first unless given -y
deploy-all *FLAGS:
    #!/usr/bin/env bash
    set -euo pipefail
    if [[ " {{FLAGS}} " != *" -y "* ]]; then
      read -r -p "Deploy to ALL hosts? [y/N] " answer
      [[ "$answer" == [yY] ]] || { echo "aborted"; exit 1; }
    fi
    pyinfra inventory.py deploys/switch.py -y

# Update every flake input (needs network); shows the lock file's difference
update-flake:
    nix flake update --flake ./nix
    git --no-pager diff --stat -- nix/flake.lock; git --no-pager diff -- nix/flake.lock

# Update one flake input (needs network); shows the lock file's difference
update-input NAME:
    nix flake lock ./nix --update-input {{NAME}}
    git --no-pager diff -- nix/flake.lock

# Every host answers over SSH
ping-hosts:
    pyinfra inventory.py exec -y -- true

# The built-in lab: up (idempotent), status, down
lab-up *ARGS:
    nixfleet lab up {{ARGS}}

lab-status:
    nixfleet lab status

lab-down:
    nixfleet lab down
