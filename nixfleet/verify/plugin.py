"""The pytest plugin under tests/fleet/: which hosts each check runs on, how it reaches them, and
the per-host table at the end.

A check is a test that takes `host` (a testinfra Host over OpenSSH) and, where it needs the
inventory's view, `spec` (the nixfleet Host) and `fleet`. It runs on every selected host unless
it is marked for fewer, always from the inventory:

    pytestmark = pytest.mark.fleet(hosts=lambda spec, session: spec.features.ai.ollama)

    @pytest.mark.fleet(each=lambda spec, session: [(e.job, e) for e in
                                                   exporters(spec, session.root)],
                       arg="exporter")
    def test_the_exporter_serves_valid_exposition(host, exporter): ...

Hosts: testinfra's --hosts, read as inventory names, globs or groups (comma separated; default
every host), under the target NIXFLEET_TARGET names (the lab's addresses and keys under
NIXFLEET_TARGET=lab). Connections: OpenSSH with each host's pyinfra connection data, host keys
checked strictly against the inventory's known_hosts, one multiplexed connection per host.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest

from nixfleet.inventory import Fleet, load_inventory_file, project_root
from nixfleet.model import Host
from nixfleet.verify.hostrun import MAX_AT_ONCE, run_forked
from nixfleet.verify.report import Failure, Verification

# What tests/fleet/conftest.py takes in: the hooks and fixtures (a conftest below the rootdir
# cannot name a plugin in pytest_plugins).
__all__ = [
    "config_root", "fleet", "fleet_host", "host", "note", "pytest_addoption",
    "pytest_collection_modifyitems", "pytest_configure", "pytest_generate_tests",
    "pytest_runtest_makereport", "pytest_runtestloop", "spec", "verify_session",
]
HOST_KEY = "verify_host"
NOTE_KEY = "verify_note"
CONTROL_PERSIST = 30  # seconds an idle multiplexed connection stays open
CONNECT_TIMEOUT = 5  # seconds to connect and get sshd's banner: what a silent host costs


# --- options and configuration ---------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("nixfleet verify")
    group.addoption("--fleet-inventory", metavar="PATH",
                    help="inventory file (default: $NIXFLEET_INVENTORY or ./inventory.py)")
    group.addoption("--age-identity", action="append", default=[], metavar="PATH",
                    help="SSH private key or age identity that decrypts the secrets, to hash "
                         "them (repeatable; default as `nixfleet secrets`)")
    group.addoption("--verify-report", metavar="PATH",
                    help="write the per-host result as JSON here")
    group.addoption("--fleet-workers", type=int, metavar="N",
                    help=f"hosts checked at once, each in a process forked after collection "
                         f"(default: every selected host, at most {MAX_AT_ONCE}; 1: in turn)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fleet(hosts=SELECT, each=ITEMS, arg=NAME): the hosts "
                            "(and items per host) a check runs on, from the inventory")
    inventory = Path(config.getoption("fleet_inventory") or os.environ.get("NIXFLEET_INVENTORY")
                     or project_root() / "inventory.py")
    fleet = load_inventory_file(inventory.resolve())
    patterns = [p for p in (config.getoption("hosts") or "").split(",") if p.strip()]
    config.stash[_SESSION] = VerifySession(fleet, inventory.resolve().parent,
                                           fleet.select(patterns),
                                           config.getoption("age_identity"))
    # The controller (or a run without xdist) reports; a worker's results reach it.
    if not hasattr(config, "workerinput") and not config.option.collectonly:
        config.pluginmanager.register(_Reporter(config), "nixfleet-verify-reporter")


class VerifySession:
    """What every check's selection sees: the fleet, the configuration repository (root) and
    the selected hosts; and the hosts' connections."""

    def __init__(self, fleet: Fleet, root: Path, selected: list[str],
                 identities: list[str]) -> None:
        self.fleet = fleet
        self.root = root
        self.selected = selected
        self.identities = identities
        self._ssh_config: Path | None = None
        self._hosts: dict[str, Any] = {}
        self._unreachable: dict[str, str] = {}  # host -> why
        self._answered: set[str] = set()  # hosts whose master connection is open

    def testinfra_host(self, name: str) -> Any:
        """The host's testinfra connection; a host that does not answer fails each check at
        once with the same line after one connection attempt (not a connect timeout per
        check). Tried with `true` unless open_connections() already tried it."""
        import testinfra

        if name not in self._hosts and name not in self._unreachable:
            data = self.fleet.host_data[name]
            host = testinfra.get_host(
                f"ssh://{name}", ssh_config=str(self.ssh_config()), controlpersist=0,
                timeout=CONNECT_TIMEOUT,  # testinfra's -o ConnectTimeout (default 10) wins
                sudo=(data.get("ssh_user") or "root") != "root")
            try:
                if name not in self._answered:
                    host.run("true")
                self._hosts[name] = host
            except RuntimeError as error:  # ssh's exit 255
                stderr = getattr(error.args[0], "stderr", "") if error.args else ""
                self._unreachable[name] = (stderr.strip().splitlines() or ["no answer"])[-1]
        if name in self._unreachable:
            pytest.fail(f"unreachable over SSH: {self._unreachable[name]}", pytrace=False)
        return self._hosts[name]

    def open_connections(self, names: list[str]) -> None:
        """Each host's master connection (and its monitoring server's), opened side by side
        before the per-host processes fork, so that they share them instead of each opening
        its own: a key exchange per host, not per host and process. A host tried here is not
        tried again in the processes (testinfra_host): one that does not answer fails its
        checks at once with ssh's reason."""
        from concurrent.futures import ThreadPoolExecutor

        wanted = set(names)
        for name in names:
            server = self.fleet.hosts[name].features.monitoring.serverHost
            wanted |= {server} if server in self.fleet.hosts else set()

        config = str(self.ssh_config())  # written once, before the threads

        def connect(name: str) -> None:
            # The master stays in the background (ControlPersist): its stderr goes to a file,
            # not a pipe that would be waited on until it exits.
            with tempfile.TemporaryFile() as stderr:
                try:
                    code = subprocess.run(["ssh", "-F", config, name, "true"],
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=stderr, timeout=30, check=False).returncode
                except subprocess.TimeoutExpired:
                    code, why = 255, "no answer within 30 s"
                else:
                    stderr.seek(0)
                    lines = stderr.read().decode(errors="replace").strip().splitlines()
                    why = lines[-1] if lines else f"ssh exited {code}"
            if code == 0:
                self._answered.add(name)
            elif code == 255:  # ssh's own failure (a command's would be its exit status)
                self._unreachable[name] = why

        with ThreadPoolExecutor(min(len(wanted), MAX_AT_ONCE) or 1) as pool:
            list(pool.map(connect, sorted(wanted)))

    def ssh_config(self) -> Path:
        """One OpenSSH config for the fleet's hosts (a check may ask another host, e.g. its
        monitoring server), shared by pytest-xdist's workers."""
        if self._ssh_config is None:
            directory = Path(tempfile.gettempdir()) / f"nixfleet-verify-{os.getuid()}"
            directory.mkdir(mode=0o700, exist_ok=True)
            text = ssh_config_text(self.fleet, list(self.fleet.hosts), directory)
            path = directory / f"ssh_config-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
            if not path.exists():
                partial = path.with_name(f"{path.name}.{os.getpid()}")
                partial.write_text(text)
                partial.replace(path)
            self._ssh_config = path
        return self._ssh_config


_SESSION = pytest.StashKey[VerifySession]()


def ssh_config_text(fleet: Fleet, names: list[str], control_dir: Path) -> str:
    """OpenSSH's config for these hosts, from their pyinfra connection data: host keys
    checked strictly, never a prompt, one master connection per host."""
    blocks = []
    for name in names:
        data = fleet.host_data[name]
        lines = [f"Host {name}", f"  HostName {data.get('ssh_hostname') or name}",
                 f"  Port {data.get('ssh_port') or 22}", f"  User {data.get('ssh_user') or 'root'}"]
        if data.get("ssh_key"):
            lines += [f"  IdentityFile {data['ssh_key']}", "  IdentitiesOnly yes"]
        if data.get("ssh_known_hosts_file"):
            lines.append(f"  UserKnownHostsFile {data['ssh_known_hosts_file']}")
        lines += ["  StrictHostKeyChecking yes", "  BatchMode yes", "  LogLevel ERROR",
                  f"  ConnectTimeout {CONNECT_TIMEOUT}", "  ControlMaster auto",
                  f"  ControlPath {control_dir}/%C", f"  ControlPersist {CONTROL_PERSIST}"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


# --- which hosts each check runs on ----------------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "host_name" not in metafunc.fixturenames:
        return
    session = metafunc.config.stash[_SESSION]
    marks = list(metafunc.definition.iter_markers("fleet"))
    hosts = [name for name in session.selected
             if all(m.kwargs.get("hosts", _every)(session.fleet.hosts[name], session)
                    for m in marks)]
    each = next((m for m in marks if "each" in m.kwargs), None)
    if each is None:
        metafunc.parametrize("host_name", hosts, ids=hosts, scope="module")
        return
    params, ids = [], []
    for name in hosts:
        for item_id, value in each.kwargs["each"](session.fleet.hosts[name], session):
            params.append((name, value))
            ids.append(f"{name}-{item_id}")
    metafunc.parametrize(("host_name", each.kwargs["arg"]), params, ids=ids, scope="module")


def _every(spec: Host, session: VerifySession) -> bool:
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A check no selected host needs is left out (not skipped); under pytest-xdist each
    host's checks stay in one worker (--dist loadgroup), over that host's one connection."""
    kept, dropped = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        name = params.params.get("host_name") if params else None
        if "host_name" in getattr(item, "fixturenames", ()) and not isinstance(name, str):
            dropped.append(item)
            continue
        if isinstance(name, str):
            item.add_marker(pytest.mark.xdist_group(name))
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> bool | None:
    """The hosts side by side: each host's checks in a process of its own (nixfleet.verify.
    hostrun), unless pytest-xdist distributes them or one host (or --fleet-workers 1) is
    checked."""
    config = session.config
    if (config.option.collectonly or session.testsfailed or hasattr(config, "workerinput")
            or getattr(config.option, "dist", "no") != "no"):
        return None
    groups: dict[str, list[pytest.Item]] = {}
    for item in session.items:
        params = getattr(item, "callspec", None)
        groups.setdefault(str(params.params.get("host_name", "")) if params else "",
                          []).append(item)
    at_once = config.getoption("fleet_workers") or min(len(groups), MAX_AT_ONCE)
    if at_once <= 1 or len(groups) <= 1:
        return None
    config.stash[_SESSION].open_connections([name for name in groups if name])
    run_forked(session, list(groups.values()), at_once)
    return True


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def fleet(request: pytest.FixtureRequest) -> Fleet:
    return request.config.stash[_SESSION].fleet


@pytest.fixture(scope="session")
def verify_session(request: pytest.FixtureRequest) -> VerifySession:
    return request.config.stash[_SESSION]


@pytest.fixture(scope="session")
def config_root(request: pytest.FixtureRequest) -> Path:
    """The configuration repository (inventory.py's directory: nix/, secrets/)."""
    return request.config.stash[_SESSION].root


@pytest.fixture
def spec(host_name: str, fleet: Fleet) -> Host:
    """The inventory's view of the host under check."""
    return fleet.hosts[host_name]


@pytest.fixture
def host(host_name: str, request: pytest.FixtureRequest) -> Any:
    """The host under check: a testinfra Host over OpenSSH (sudo where the user is not root)."""
    return request.config.stash[_SESSION].testinfra_host(host_name)


@pytest.fixture
def fleet_host(request: pytest.FixtureRequest) -> Callable[[str], Any]:
    """fleet_host("p620"): another host's connection (e.g. a client's monitoring server)."""
    return request.config.stash[_SESSION].testinfra_host


@pytest.fixture
def note(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """note("reboot required"): shown beside the host in the table, not a failure."""
    return lambda text: request.node.user_properties.append((NOTE_KEY, text))


# --- the report ------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    params = getattr(item, "callspec", None)
    if params and isinstance(params.params.get("host_name"), str):
        report.user_properties.append((HOST_KEY, params.params["host_name"]))
    if report.failed and call.excinfo is not None:
        report.user_properties.append(("verify_line", one_line(call.excinfo.value)))
    return report


def one_line(error: BaseException) -> str:
    """What a failed check says, in one line: an assertion's message, else the error."""
    text = str(error).strip()
    if isinstance(error, AssertionError):
        return text.splitlines()[0] if text else "assertion failed"
    if type(error).__name__ == "RuntimeError" and "exit_status=255" in text:
        return "SSH failed (host unreachable or its key refused)"
    if type(error).__name__ == "Failed":  # pytest.fail(): its message is the line
        return text.splitlines()[0] if text else "failed"
    first = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def check_name(nodeid: str) -> str:
    """tests/fleet/test_ollama.py::test_the_default_model_is_present[p620] ->
    "ollama: the default model is present"; an item (exporter, secret) is kept."""
    module, _, test = nodeid.partition("::")
    concern = Path(module).stem.removeprefix("test_").replace("_", " ")
    function, _, param = test.partition("[")
    name = function.removeprefix("test_").replace("_", " ")
    item = param.rstrip("]").partition("-")[2]
    return f"{concern}: {name}" + (f" ({item})" if item else "")


class _Reporter:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.result = Verification()
        for name in config.stash[_SESSION].selected:
            self.result.host(name)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        properties = {str(k): str(v) for k, v in report.user_properties}
        host = properties.get(HOST_KEY)
        if report.when != "call" and not report.failed:
            return
        if host is None:
            if report.failed:
                self.result.errors.append(f"{report.nodeid}: "
                                          f"{properties.get('verify_line', 'failed')}")
            return
        entry = self.result.host(host)
        if report.failed:
            entry.failures.append(Failure(check_name(report.nodeid),
                                          properties.get("verify_line", "failed")))
        elif report.passed:
            entry.passed += 1
        entry.notes += [str(v) for k, v in report.user_properties if k == NOTE_KEY
                        and v not in entry.notes]

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.result.errors.append(f"{report.nodeid}: cannot be collected")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        terminalreporter.write_sep("=", "nixfleet verify")
        for line in self.result.lines():
            terminalreporter.write_line(line)

    def pytest_sessionfinish(self) -> None:
        path = self.config.getoption("verify_report")
        if path:
            import json

            Path(path).write_text(json.dumps(self.result.to_json(), indent=2) + "\n")
