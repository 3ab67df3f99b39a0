"""Sources of an exporter's metrics, read in the background so that a scrape only formats.

A ``Source`` reads one thing (a command's output through the facts' parser, a directory) and
turns it into samples of declared metric ``Family``s. The ``Refresher`` reads each source on
its own interval in a background thread and keeps the latest ``Reading``; the
``SourceCollector`` hands the readings to prometheus_client at scrape time. A source that
fails has no samples (its metrics are absent, never stale or made up) and its
``<prefix>_source_error{source}`` is 1 until it reads again.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

T = TypeVar("T")
log = logging.getLogger("nixfleet.exporters")

# NixOS gives a service a PATH of coreutils, findutils, grep, sed and systemd only; nix, awk
# and the GPU tools are in the system's profile.
SYSTEM_PATH = "/run/current-system/sw/bin"
COMMAND_TIMEOUT = 60.0


@dataclass(frozen=True)
class Family:
    """One metric family: its name, help text, label names and type."""

    name: str
    help: str
    labels: tuple[str, ...] = ()
    kind: Literal["gauge", "counter"] = "gauge"


@dataclass(frozen=True)
class Sample:
    family: Family
    labels: tuple[str, ...]
    value: float


def sample(family: Family, value: float, *labels: str) -> Sample:
    """A sample of ``family`` with its label values in the family's order."""
    return Sample(family, labels, value)


@dataclass(frozen=True)
class Source(Generic[T]):
    """What to read and which samples it gives.

    + name: the ``source`` label of the error gauge
    + read: reads the value; raises when it cannot, returns None when there is nothing to
      read on this host (a GPU tool that is not installed): no samples, no error
    + samples: the value's samples
    + interval: seconds between reads
    """

    name: str
    read: Callable[[], T | None]
    samples: Callable[[T], Iterable[Sample]]
    interval: float


@dataclass(frozen=True)
class Reading:
    """A source's latest read: its samples (made in the background), or why it failed."""

    samples: tuple[Sample, ...]
    error: str | None
    duration: float  # seconds the read took
    finished: float  # Unix time


class Refresher:
    """Reads each source when its interval is due, in one background thread.

    + sources: what to read
    + clock: monotonic seconds (tests pass their own)
    """

    def __init__(self, sources: Sequence[Source[Any]], clock: Callable[[], float] = time.monotonic):
        names = [source.name for source in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names repeat: {names}")
        self.sources = tuple(sources)
        self._clock = clock
        self._due = dict.fromkeys(names, float("-inf"))
        self._readings: dict[str, Reading] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def readings(self) -> dict[str, Reading]:
        """The latest reading of each source read so far (a snapshot)."""
        with self._lock:
            return dict(self._readings)

    def refresh_due(self) -> float:
        """Read every source whose interval is due; return the seconds until the next one."""
        for source in self.sources:
            if self._clock() >= self._due[source.name]:
                reading = self._read(source)
                self._due[source.name] = self._clock() + source.interval
                with self._lock:
                    previous = self._readings.get(source.name)
                    self._readings[source.name] = reading
                _log_change(source.name, previous, reading)
        return max(0.0, min(self._due.values()) - self._clock())

    def start(self) -> threading.Thread:
        """Read every source once now, then keep refreshing in a daemon thread."""
        self.refresh_due()
        thread = threading.Thread(target=self._run, name="exporter-refresh", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_due()):
            pass

    @staticmethod
    def _read(source: Source[Any]) -> Reading:
        started = time.monotonic()
        try:
            value = source.read()
            samples = () if value is None else tuple(source.samples(value))
            error = None
        except Exception as failure:  # any failure of one source only blanks that source
            samples, error = (), str(failure) or type(failure).__name__
        return Reading(samples, error, time.monotonic() - started, time.time())


def _log_change(name: str, previous: Reading | None, reading: Reading) -> None:
    before = previous.error if previous else None
    if reading.error and reading.error != before:
        log.warning("source %s failed: %s", name, reading.error)
    elif before and not reading.error:
        log.info("source %s reads again", name)


class SourceCollector:
    """A prometheus_client collector of the refresher's latest readings.

    Families are yielded in the declared order, each once, with the samples of every source
    that has some; then the exporter's own gauges per source.

    + prefix: of the exporter's own gauges (``nixos_exporter``)
    + refresher: whose readings to expose
    + families: every family the sources may produce
    """

    def __init__(self, prefix: str, refresher: Refresher, families: Sequence[Family]):
        self.refresher = refresher
        self.families = tuple(families)
        self.error = Family(
            f"{prefix}_source_error",
            "1 when the source's last read failed (its metrics are then absent), else 0",
            ("source",),
        )
        self.duration = Family(
            f"{prefix}_source_duration_seconds", "How long the source's last read took",
            ("source",),
        )  # fmt: skip
        self.finished = Family(
            f"{prefix}_source_last_read_timestamp_seconds",
            "When the source was last read (Unix time)",
            ("source",),
        )

    def collect(self) -> Iterator[Metric]:
        readings = self.refresher.readings()
        by_family: dict[str, list[Sample]] = {}
        for reading in readings.values():
            for item in reading.samples:
                by_family.setdefault(item.family.name, []).append(item)
        for family in self.families:
            if family.name in by_family:
                yield _metric(family, by_family[family.name])
        own = [(source.name, readings.get(source.name)) for source in self.refresher.sources]
        read = [(name, reading) for name, reading in own if reading is not None]
        for family, value in (
            (self.error, lambda r: float(r.error is not None)),
            (self.duration, lambda r: r.duration),
            (self.finished, lambda r: r.finished),
        ):
            yield _metric(family, [Sample(family, (name,), value(r)) for name, r in read])


def _metric(family: Family, samples: Iterable[Sample]) -> Metric:
    metric: GaugeMetricFamily | CounterMetricFamily
    if family.kind == "counter":
        metric = CounterMetricFamily(family.name, family.help, labels=family.labels)
    else:
        metric = GaugeMetricFamily(family.name, family.help, labels=family.labels)
    for item in samples:
        metric.add_metric(list(item.labels), item.value)
    return metric


class CommandFailed(RuntimeError):
    """A source's command exited non-zero or did not answer in time."""


def run(tool: str, command: str, timeout: float = COMMAND_TIMEOUT) -> str:
    """Run a shell command as the facts run it over SSH, and return its output.

    + tool: what to call the command in errors (``nix path-info``)
    + command: the shell command line
    + timeout: seconds; the command's whole process group is killed after that
    """
    environment = {**os.environ, "LC_ALL": "C", "PATH": command_path()}
    with subprocess.Popen(
        ["sh", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=environment, start_new_session=True,
    ) as process:  # fmt: skip
        try:
            output, errors = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # sh's children (nix, awk) would keep the pipes open: end the whole group.
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise CommandFailed(f"{tool}: no answer within {timeout:g} s") from None
    if process.returncode != 0:
        detail = next((line for line in errors.splitlines() if line.strip()), "")
        detail = detail or next((line for line in output.splitlines() if line.strip()), "")
        ending = f": {detail}" if detail else ""
        raise CommandFailed(f"{tool} exited {process.returncode}{ending}")
    return output


def command_path() -> str:
    """The PATH commands run with: the service's own, then the system profile's."""
    path = os.environ.get("PATH", "/usr/bin:/bin")
    return path if SYSTEM_PATH in path.split(":") else f"{path}:{SYSTEM_PATH}"
