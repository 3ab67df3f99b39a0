"""`nixfleet validate` on temporary copies of the repository: a clean copy passes, and each kind
of fault it covers, planted alone, fails it with exit 1 and a line naming the file. (The
recipes validate, validate-quick and check: test_recipes.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.unit.repo_support import copy_repository, git, nixfleet

FULL = ["inventory", "generated", "nix-syntax", "check-nix", "boot", "secrets", "builders",
        "plaintext", "monitoring", "flake-check"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_repository(tmp_path_factory.mktemp("pristine"))


@pytest.fixture
def repo(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "repo", symlinks=True))


def validate(repo: Path, *args: str) -> tuple[int, dict[str, dict], str]:
    """Exit code, each step's result by name (from its JUnit XML), and the table output."""
    junit = repo.parent / "validate.xml"
    result = nixfleet(repo, "validate", "--junit", str(junit), *args)
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None
    steps: dict[str, dict] = {}
    for case in suite.iter("testcase"):
        failure, skipped = case.find("failure"), case.find("skipped")
        steps[str(case.get("name"))] = {
            "status": "failed" if failure is not None else "skipped" if skipped is not None
            else "passed",
            "problems": (failure.text or "").splitlines() if failure is not None else []}
    return result.returncode, steps, result.stdout


def failed(steps: dict[str, dict]) -> set[str]:
    return {name for name, step in steps.items() if step["status"] == "failed"}


def test_a_clean_copy_passes_every_step(repo):
    code, steps, out = validate(repo)
    assert code == 0, out
    assert list(steps) == FULL
    assert failed(steps) == set()
    result = nixfleet(repo, "validate", "--json")
    assert result.returncode == 0
    report = {s["name"]: s for s in json.loads(result.stdout)["steps"]}
    assert report["monitoring"]["summary"] == "promtool and amtool accept the configuration"
    # Nix can download nothing here: said plainly, not failed.
    assert report["flake-check"]["status"] == "skipped"
    assert report["flake-check"]["summary"].startswith(
        "not run: the flake's inputs (nixpkgs, ...) cannot be fetched here")
    assert "unable to download" in report["flake-check"]["problems"][0]
    # No secret is encrypted in this repository (no owner keys here): a warning, not a failure.
    assert report["secrets"]["status"] == "warning"
    assert "nixfleet validate: ok:" in out
    for name in FULL:
        assert name in out


def test_quick_leaves_out_the_tools_and_the_flake_check(repo):
    code, steps, _ = validate(repo, "--quick")
    assert code == 0
    assert list(steps) == [n for n in FULL if n not in ("monitoring", "flake-check")]


def test_a_stale_generated_file_fails_it(repo):
    host_data = repo / "nix" / "hosts" / "razer.json"
    host_data.write_text(host_data.read_text().replace('"nvidia"', '"intel"', 1))
    code, steps, out = validate(repo, "--quick")
    assert code == 1
    assert failed(steps) >= {"generated"}
    assert "generated: nix/hosts/razer.json: stale (run `nixfleet generate`)" in out.splitlines()


def test_a_parse_error_fails_it_with_file_line_and_column(repo):
    module = repo / "nix" / "modules" / "base.nix"
    lines = module.read_text().splitlines()
    module.write_text("\n".join([*lines[:3], "  broken = { ;", *lines[3:]]) + "\n")
    code, steps, out = validate(repo, "--quick")
    assert code == 1
    assert failed(steps) == {"nix-syntax", "check-nix"}
    [problem] = steps["nix-syntax"]["problems"]
    assert problem.startswith("nix/modules/base.nix:4:")
    assert "syntax error" in problem
    assert f"nix-syntax: {problem}" in out.splitlines()


def test_a_plaintext_secret_fails_it(repo):
    (repo / "secrets" / "api-openai.txt").write_text("sk-live-0123456789abcdef\n")
    code, steps, out = validate(repo, "--quick")
    assert code == 1
    assert failed(steps) == {"plaintext"}
    assert ("plaintext: secrets/api-openai.txt: not an age file (only *.age, rules.py, "
            "secrets.nix and README belong in secrets/)") in out.splitlines()


def test_a_private_key_anywhere_in_the_repository_fails_it(repo):
    key = ("-----BEGIN OPENSSH PRIVATE KEY-----\n"
           "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
           "-----END OPENSSH PRIVATE KEY-----\n")
    (repo / "group_data" / "deploy_key").write_text(key)
    git(repo, "add", "group_data/deploy_key")
    code, steps, out = validate(repo, "--quick")
    assert code == 1
    assert failed(steps) == {"plaintext"}
    assert "plaintext: group_data/deploy_key: contains a private key" in out.splitlines()


def test_a_damaged_secret_fails_it(repo):
    (repo / "secrets" / "api-openai.age").write_bytes(b"not age at all\n")
    code, steps, out = validate(repo, "--quick")
    assert code == 1
    assert failed(steps) == {"secrets", "plaintext"}
    assert any(line.startswith("secrets: secrets/api-openai.age: ") for line in out.splitlines())


def test_an_alert_test_that_fails_promtool_fails_it(repo):
    """alerts.test.yml is hand-written (not generated): only promtool can catch this."""
    tests = repo / "nix" / "monitoring" / "alerts.test.yml"
    text = tests.read_text()
    wrong = "{host: p620, severity: critical, service: system}"
    tests.write_text(text.replace("{host: p620, severity: warning, service: system}", wrong, 1))
    code, steps, out = validate(repo)
    assert code == 1
    assert failed(steps) == {"monitoring"}
    [problem] = steps["monitoring"]["problems"]
    assert problem.startswith("nix/monitoring/alerts.test.yml: promtool test rules: ")
    assert "HighCPUUsage" in problem
    assert f"monitoring: {problem}" in out.splitlines()


def test_a_rule_promtool_cannot_parse_fails_it(repo):
    rules = repo / "nix" / "monitoring" / "alerts.yml"
    text = rules.read_text()
    assert "[5m]))) > 80\n" in text
    rules.write_text(text.replace("[5m]))) > 80\n", "[5m])) > 80\n", 1))
    code, steps, _ = validate(repo)
    assert code == 1
    assert failed(steps) == {"monitoring", "generated"}
    problems = steps["monitoring"]["problems"]
    assert any(p.startswith("nix/monitoring/alerts.yml: promtool check rules: ")
               and "unclosed left parenthesis" in p for p in problems)
    # prometheus.yml loads the same rule file: promtool's config check names it too.
    assert any(p.startswith("nix/monitoring/p620/prometheus.yml: promtool check config: ")
               for p in problems)


def test_an_alertmanager_config_amtool_rejects_fails_it(repo):
    config = repo / "nix" / "monitoring" / "alertmanager.yml"
    config.write_text(config.read_text().replace("receiver: critical", "receiver: pager", 1))
    code, steps, _ = validate(repo)
    assert code == 1
    assert "monitoring" in failed(steps)
    assert steps["monitoring"]["problems"] == [
        'nix/monitoring/alertmanager.yml: amtool check-config: FAILED: undefined receiver '
        '"pager" used in route']


def test_junit_xml_has_a_case_per_step_and_the_failure(repo, tmp_path):
    (repo / "secrets" / "notes.txt").write_text("the wifi password is hunter2\n")
    junit = tmp_path / "validate.xml"
    result = nixfleet(repo, "validate", "--junit", str(junit))
    assert result.returncode == 1
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("10", "1", "1")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert list(cases) == FULL
    failure = cases["plaintext"].find("failure")
    assert failure is not None and "secrets/notes.txt: not an age file" in (failure.text or "")
    assert cases["flake-check"].find("skipped") is not None


def test_an_unknown_step_is_one_line(repo):
    result = nixfleet(repo, "validate", "--skip", "promtool")
    assert result.returncode == 1
    assert result.stderr == ("nixfleet: error: --skip promtool: no such step; steps: "
                             + ", ".join(FULL) + "\n")


def test_a_boot_limit_the_esp_cannot_hold_is_a_warning(repo):
    inventory = repo / "inventory.py"
    text = inventory.read_text()
    limit = '"boot": {"configurationLimit": 2, "espSize": 511, "entrySize": 170}'
    assert limit in text
    inventory.write_text(text.replace(limit, limit.replace("2", "3", 1)))
    assert nixfleet(repo, "generate").returncode == 0

    code, steps, out = validate(repo, "--quick")
    assert code == 0, out
    assert "host razer: boot.configurationLimit 3 (systemd-boot): 3 entries of 170 MiB" in out
    assert steps["boot"]["status"] == "passed"  # a warning does not fail validation


def test_a_builder_that_could_not_sign_or_serve_fails_it(repo):
    # razer built on p510: p510 neither receives binary-cache-key nor runs the fleet's cache.
    inventory = repo / "inventory.py"
    text = inventory.read_text()
    entry = text.index('("razer", {')
    inventory.write_text(text[:entry] + text[entry:].replace(
        '"hardware_class"', '"deploy": {"buildOn": "p510"}, "hardware_class"', 1))
    code, steps, out = validate(repo, "--quick")
    assert code == 1, out
    assert failed(steps) == {"builders"}
    assert steps["builders"]["problems"] == [
        "p510 (builds for razer) does not receive the secret binary-cache-key "
        "(secrets/rules.py): it could not sign",
        "p510 (builds for razer) runs no binary cache, and the fleet has no "
        "nix/builder-ssh.pub for its targets to fetch over SSH"]
    # p620 can: the fleet's cache server, which receives the key.
    inventory.write_text(inventory.read_text().replace('"buildOn": "p510"', '"buildOn": "p620"'))
    code, steps, out = validate(repo, "--quick")
    assert code == 0, out
    assert steps["builders"]["status"] == "passed"
    # Back to p510, which now receives the signing key; the fleet has a fetch key, but razer
    # does not receive its private half.
    rules = repo / "secrets" / "rules.py"
    rules.write_text(rules.read_text().replace(
        '"binary-cache-key": {"recipients": ["allUsers", "p620"]}',
        '"binary-cache-key": {"recipients": ["allUsers", "p620", "p510"]}').replace(
        '"builder-ssh-key": {"recipients": _EVERYONE}',
        '"builder-ssh-key": {"recipients": ["allUsers", "dex5550"]}'))
    (repo / "nix" / "builder-ssh.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI fetch\n")
    inventory.write_text(inventory.read_text().replace('"buildOn": "p620"', '"buildOn": "p510"'))
    code, steps, out = validate(repo, "--quick")
    assert steps["builders"]["problems"] == [
        "razer (built on p510, which runs no binary cache) do not receive the secret "
        "builder-ssh-key (secrets/rules.py): they could not fetch over SSH"]
    rules.write_text(rules.read_text().replace('["allUsers", "dex5550"]', '["allUsers", "razer"]'))
    code, steps, out = validate(repo, "--quick")
    assert steps["builders"]["status"] == "passed", out
