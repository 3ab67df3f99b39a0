"""The committed monitoring files checked by Prometheus's own tools, as the server loads them:
`promtool check config` (each server's prometheus.yml with the rule file it names),
`promtool check rules`, `promtool test rules` (alerts.test.yml) and `amtool check-config`.

promtool and amtool come from Debian's prometheus and prometheus-alertmanager (scripts/setup
installs them); a missing tool is a problem, not a silent pass.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from nixfleet.monitoring import ALERTMANAGER_FILE, PROMETHEUS_FILE, RULES_FILE, SERVER_CONFIG_DIR

TESTS_FILE = "alerts.test.yml"
TOOLS = {"promtool": "prometheus", "amtool": "prometheus-alertmanager"}
TIMEOUT = 120


def check_monitoring(directory: Path, relative_to: Path) -> list[str]:
    """Problems of the monitoring files in `directory`, one line each, naming the file
    (relative to `relative_to`) and the tool's own message; [] when every check passes."""
    missing = [f"{tool} not found: install Debian's {package} (scripts/setup does)"
               for tool, package in TOOLS.items() if shutil.which(tool) is None]
    if missing:
        return missing
    problems: list[str] = []
    rules = directory / RULES_FILE
    with tempfile.TemporaryDirectory(prefix="nixfleet-monitoring-") as scratch:
        for config in sorted(directory.glob(f"*/{PROMETHEUS_FILE}")):
            # On the server the rule file sits in SERVER_CONFIG_DIR; here it is the committed one.
            copy = Path(scratch) / config.parent.name / PROMETHEUS_FILE
            copy.parent.mkdir()
            copy.write_text(config.read_text().replace(f"{SERVER_CONFIG_DIR}/{RULES_FILE}",
                                                       str(rules)))
            problems += _run(config, relative_to, "promtool", "check", "config", str(copy))
    checks = [(rules, ["promtool", "check", "rules"]),
              (directory / TESTS_FILE, ["promtool", "test", "rules"]),
              (directory / ALERTMANAGER_FILE, ["amtool", "check-config"])]
    for path, argv in checks:
        if not path.is_file():
            problems.append(f"{_relative(path, relative_to)}: missing")
        else:
            problems += _run(path, relative_to, *argv, str(path))
    return problems


def _run(path: Path, relative_to: Path, *argv: str) -> list[str]:
    """[] when the tool accepts the file (argv's last word), else one line: the file, the
    command and the tool's words."""
    where = f"{_relative(path, relative_to)}: {' '.join(argv[:-1])}"
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT,
                                cwd=path.parent)
    except subprocess.TimeoutExpired:
        return [f"{where}: took over {TIMEOUT} s"]
    if result.returncode == 0:
        return []
    return [f"{where}: {_tool_message(result.stdout + result.stderr)}"]


def _tool_message(output: str, limit: int = 400) -> str:
    """The tool's failure in one line, without its progress lines."""
    noise = ("Unit Testing:", "SUCCESS", "amtool: error: failed to validate")
    kept = []
    for line in (line.strip() for line in output.splitlines()):
        if line.startswith("Checking "):  # "Checking 'FILE'  FAILED: why" (amtool)
            line = line[line.find("FAILED"):] if "FAILED" in line else ""
        if line and not line.startswith(noise):
            kept.append(line)
    words = " ".join(kept)
    words = words or "failed"
    return words if len(words) <= limit else words[:limit - 3] + "..."


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
