"""Each host's checks in its own process, all hosts at once, forked after collection.

Verification waits on SSH far more than it computes, so hosts are checked side by side. A
pytest-xdist worker would start Python, pytest, the plugins and the collection again (a
second of CPU each); a fork after collection starts in milliseconds with everything
imported. Each child runs one host's items through pytest's own runtest protocol and sends
its reports to the parent, which hands them to the usual hooks (terminal, JUnit XML, the
verification table) as pytest-xdist's controller does.
"""

from __future__ import annotations

import json
import os
import selectors
from collections.abc import Callable, Sequence
from typing import Any

import pytest

MAX_AT_ONCE = 32  # hosts checked at the same time by default


def run_forked(session: pytest.Session, groups: Sequence[Sequence[pytest.Item]],
               at_once: int) -> None:
    """Run each group of items in a child process, at most `at_once` at a time."""
    config = session.config
    pending = list(groups)
    running: dict[int, tuple[int, bytearray]] = {}  # read fd -> (pid, unread bytes)
    selector = selectors.DefaultSelector()
    while pending or running:
        while pending and len(running) < at_once:
            read_fd, pid = _fork(config, pending.pop(0))
            running[read_fd] = (pid, bytearray())
            selector.register(read_fd, selectors.EVENT_READ)
        for key, _ in selector.select():
            fd = int(key.fd)
            pid, buffer = running[fd]
            chunk = os.read(fd, 65536)
            buffer += chunk
            *lines, rest = bytes(buffer).split(b"\n")
            buffer[:] = rest
            for line in lines:
                _replay(config, json.loads(line))
            if not chunk:
                selector.unregister(fd)
                os.close(fd)
                del running[fd]
                _, status = os.waitpid(pid, 0)
                code = os.waitstatus_to_exitcode(status)
                if code != 0:
                    raise session.Failed(f"a host's verification process exited with {code}")
    selector.close()


def _fork(config: pytest.Config, items: Sequence[pytest.Item]) -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        return read_fd, pid
    os.close(read_fd)
    code = 1
    try:
        _child(config, items, lambda data: os.write(write_fd, json.dumps(data).encode() + b"\n"))
        code = 0
    finally:
        os._exit(code)


def _child(config: pytest.Config, items: Sequence[pytest.Item],
           send: Callable[[dict[str, Any]], int]) -> None:
    """Run the items; every report goes to the parent, none to this process' terminal."""
    manager = config.pluginmanager
    for name in ("terminalreporter", "nixfleet-verify-reporter"):
        plugin = manager.get_plugin(name)
        if plugin is not None:
            manager.unregister(plugin)
    capture = manager.get_plugin("capturemanager")
    if capture is not None and capture.is_globally_capturing():
        # Capture into files of this process' own, not the parent's.
        capture.stop_global_capturing()
        capture.start_global_capturing()

    class Forward:
        def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
            send({"report": config.hook.pytest_report_to_serializable(config=config,
                                                                       report=report)})

    manager.register(Forward(), "nixfleet-verify-forward")
    for i, item in enumerate(items):
        send({"start": item.nodeid, "location": list(item.location)})
        nextitem = items[i + 1] if i + 1 < len(items) else None
        item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
        send({"finish": item.nodeid, "location": list(item.location)})


def _replay(config: pytest.Config, message: dict[str, Any]) -> None:
    hook = config.hook
    if "start" in message:
        hook.pytest_runtest_logstart(nodeid=message["start"], location=tuple(message["location"]))
    elif "finish" in message:
        hook.pytest_runtest_logfinish(nodeid=message["finish"],
                                      location=tuple(message["location"]))
    else:
        report = hook.pytest_report_from_serializable(config=config, data=message["report"])
        hook.pytest_runtest_logreport(report=report)
