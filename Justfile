# nixfleet recipes, named as in the original configuration's Justfile.
# Only recipes that work are here; README.md lists the planned ones.
# `just` comes with the dev extras (rust-just): .venv/bin/just

export PATH := justfile_directory() + "/.venv/bin:" + env_var("PATH")

# List recipes
default:
    @just --list

# Install system packages and the virtualenv (Debian 12, root)
setup:
    scripts/setup

# The whole test suite (lint, types, unit and lab tests)
test *ARGS:
    scripts/test {{ARGS}}

# The fleet, validated: hosts, groups and merged data (e.g. just inventory --limit nvidia)
inventory *ARGS:
    nixfleet inventory {{ARGS}}

# Regenerate nix/hosts/*.json and known_hosts from inventory.py and group_data/
generate:
    nixfleet generate

# Every host answers over SSH (NIXFLEET_TARGET=lab for the lab)
ping-hosts:
    pyinfra inventory.py exec -y -- true

# The built-in lab: up (idempotent), status, down
lab-up *ARGS:
    nixfleet lab up {{ARGS}}

lab-status:
    nixfleet lab status

lab-down:
    nixfleet lab down
