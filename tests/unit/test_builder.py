"""nixfleet.builder: one build per builder and deploy, its results by target, and what its
targets are told when the builder fails (build.sh itself runs on the lab: tests/lab/
test_builder.py). The builder's SSH command is stood in by bash running a script."""

from __future__ import annotations

import base64
from pathlib import Path

from nixfleet import builder
from nixfleet.builder import Built, FleetBuild, parse

FILES = {"flake.nix": b"{ outputs = _: { }; }\n"}
CACHE = "http://p620:5000"


def fleet_build(script: str, *targets: str, substituter: str | None = CACHE) -> FleetBuild:
    """A build whose 'SSH command' is bash running `script` (the real command is its $0)."""
    build = FleetBuild("p620", ["bash", "-c", script], lambda: FILES, "/var/lib/nixfleet/builds/x",
                       "path:/var/lib/nixfleet/builds/x/flake", substituter, timeout=30)
    for target in targets:
        build.add(target)
    return build


def test_build_sh_lines_give_each_target_its_system_or_why_not():
    output = ["building...", "NIXFLEET built=razer /nix/store/aaa-nixos-system-razer",
              "NIXFLEET build_failed=dex5550 build failed: error: builder for 'x.drv' failed",
              "NIXFLEET built=p620 /nix/store/bbb-nixos-system-p620"]
    assert parse("p620", CACHE, output) == {
        "razer": Built("p620", "/nix/store/aaa-nixos-system-razer", "", CACHE),
        "dex5550": Built("p620", None,
                         "built on p620: build failed: error: builder for 'x.drv' failed"),
        # The builder's own system is in its store already: nothing to fetch.
        "p620": Built("p620", "/nix/store/bbb-nixos-system-p620", "", None),
    }


def test_every_target_is_built_by_one_command_run_once(tmp_path: Path):
    calls = tmp_path / "calls"
    build = fleet_build(f'echo run >> {calls}; cat > /dev/null; '
                        'echo "NIXFLEET built=razer /nix/store/aaa-razer"; '
                        'echo "NIXFLEET built=dex5550 /nix/store/bbb-dex5550"',
                        "razer", "dex5550")
    assert build.result("razer").path == "/nix/store/aaa-razer"
    assert build.result("dex5550").path == "/nix/store/bbb-dex5550"
    assert calls.read_text() == "run\n"


def test_an_unreachable_builder_fails_every_target_naming_it():
    build = fleet_build("echo 'ssh: connect to host p620 port 22: Connection refused' >&2; "
                        "exit 255", "razer", "dex5550")
    for target in ("razer", "dex5550"):
        assert build.result(target) == Built("p620", None, (
            "builder p620 could not be reached or was cut off: ssh: connect to host p620 port "
            "22: Connection refused"))


def test_a_builder_that_says_nothing_of_a_target_fails_it():
    build = fleet_build('cat > /dev/null; echo "NIXFLEET built=razer /nix/store/aaa-razer"; '
                        'echo "bash: nix: command not found" >&2; exit 127', "razer", "dex5550")
    assert build.result("razer").path == "/nix/store/aaa-razer"
    assert build.result("dex5550").reason == ("builder p620 gave no result (bash: nix: command "
                                              "not found)")


def test_a_builder_its_targets_cannot_fetch_from_fails_them_before_building(tmp_path: Path):
    calls = tmp_path / "calls"
    build = fleet_build(f"echo run >> {calls}", "razer", substituter=None)
    assert build.result("razer").reason.startswith(
        "builder p620 runs no binary cache and the fleet has no builder-ssh.pub for its "
        "targets to fetch over SSH")
    assert not calls.exists()


def test_a_builders_store_over_ssh_is_named_with_the_fetch_key_and_its_host_key_pinned():
    url = builder.ssh_store_url("nix-ssh", "p510", "ssh-ed25519 AAAAC3Nza root@p510\n")
    address, _, query = url.partition("?")
    assert address == "ssh://nix-ssh@p510"
    parameters = dict(pair.split("=", 1) for pair in query.split("&"))
    assert parameters["ssh-key"] == "/run/agenix/builder-ssh-key"
    assert base64.b64decode(parameters["base64-ssh-public-host-key"]) == b"ssh-ed25519 AAAAC3Nza"
    assert builder.fetched_from(url) == "over SSH"
    assert builder.fetched_from("http://p620:5000") == "from its binary cache"
