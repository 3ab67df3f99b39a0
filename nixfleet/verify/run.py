"""How a command or a deploy runs the verification suite: pytest over tests/fleet/ of the
configuration repository, the selected hosts side by side (a process per host, forked after
collection: nixfleet.verify.hostrun), its result read back from the plugin's report."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from nixfleet.errors import NixfleetError
from nixfleet.verify.report import Verification

SUITE = Path("tests") / "fleet"


def verify(inventory: Path, hosts: Sequence[str], workers: int | None = None,
           junit: Path | None = None, identities: Sequence[str] = (),
           log: Path | None = None) -> Verification:
    """Run the suite on `hosts` (inventory names, already selected); its output goes to `log`
    (default: discarded); each host checked records the result (nixfleet.verify.record).
    Raise NixfleetError when the suite itself cannot run."""
    suite = inventory.parent / SUITE
    if not suite.is_dir():
        raise NixfleetError(f"no verification suite: {suite} is missing")
    if not hosts:
        return Verification()
    with contextlib.ExitStack() as scratch:
        # The report goes beside the log (a killed run leaves nothing in /tmp), else into a
        # temporary directory.
        report = (log.with_name("verify-report.json") if log else
                  Path(scratch.enter_context(tempfile.TemporaryDirectory(
                      prefix="nixfleet-verify-"))) / "report.json")
        # Only the plugins the suite uses (autoloading every installed one costs each worker
        # a third of a second).
        argv = [sys.executable, "-m", "pytest", str(suite), "-q", "--tb=short",
                "-p", "testinfra.plugin", "-p", "no:cacheprovider", f"--rootdir={inventory.parent}",
                f"--fleet-inventory={inventory}", f"--hosts={','.join(hosts)}",
                f"--verify-report={report}"]
        argv += [f"--age-identity={i}" for i in identities]
        if workers is not None:
            argv.append(f"--fleet-workers={workers}")
        if junit:
            argv.append(f"--junitxml={junit}")
        output = log.open("w") if log else subprocess.DEVNULL
        try:
            code = subprocess.run(argv, cwd=inventory.parent, stdout=output,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
                                  ).returncode
        finally:
            if log:
                output.close()  # type: ignore[union-attr]
        if code not in (0, 1) or not report.is_file():
            where = f" (see {log})" if log else ""
            raise NixfleetError(f"the verification suite could not run: pytest exited "
                                f"{code}{where}")
        result = Verification.read(report)
    # Remembered on each host checked (which system, when, the result): nixfleet status.
    from nixfleet.verify.record import record_verification

    for line in record_verification(inventory, result):
        print(line, file=sys.stderr, flush=True)
    return result
