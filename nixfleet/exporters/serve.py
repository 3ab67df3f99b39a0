"""The exporters' HTTP side and command line: ``/metrics`` always answers 200.

Scrapes only format what the background refresh read (nixfleet.exporters.sources), so a
scrape costs no command; a collector that fails anyway still gives a 200 with what it could
write, never a 500 (Prometheus would drop every metric of the host for that scrape).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from nixfleet.exporters.sources import Family, Refresher, Source, SourceCollector

log = logging.getLogger("nixfleet.exporters")


def registry_of(prefix: str, refresher: Refresher, families: Sequence[Family]) -> CollectorRegistry:
    """A registry with the sources' collector and the exporter process's own metrics
    (``process_resident_memory_bytes``...).

    + prefix: of the per-source gauges (``nixos_exporter``)
    + refresher: whose readings to expose
    + families: every family the sources may produce
    """
    registry = CollectorRegistry()
    registry.register(SourceCollector(prefix, refresher, families))
    ProcessCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus' text format; on an unexpected failure, a comment saying so
    (valid exposition, so the scrape still succeeds and `up` stays 1)."""
    try:
        return generate_latest(registry)
    except Exception as error:
        log.exception("formatting the metrics failed")
        return f"# nixfleet exporter: formatting the metrics failed: {error!r}\n".encode()


class MetricsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry, title: str):
        super().__init__(address, MetricsHandler)
        self.registry = registry
        self.title = title


class MetricsHandler(BaseHTTPRequestHandler):
    server: MetricsServer

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._answer(200, CONTENT_TYPE_LATEST, exposition(self.server.registry))
        elif path == "/":
            page = f"<html><body><h1>{self.server.title}</h1><a href='/metrics'>Metrics</a>"
            self._answer(200, "text/html; charset=utf-8", page.encode())
        else:
            self._answer(404, "text/plain; charset=utf-8", b"not found: try /metrics\n")

    def _answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)


@dataclass(frozen=True)
class Exporter:
    """What sets one exporter apart: its name, port, metrics and sources.

    + name: the console script's name (``nixfleet-nixos-exporter``)
    + description: one line for --help
    + port: the default port (nix/lib/ports.json)
    + interval: the default seconds between reads
    + prefix: of the per-source gauges (``nixos_exporter``)
    + families: every family the sources may produce
    + sources: the sources, given the parsed command line
    + options: adds the exporter's own options to the command line
    """

    name: str
    description: str
    port: int
    interval: float
    prefix: str
    families: Sequence[Family]
    sources: Callable[[argparse.Namespace], Sequence[Source]]
    options: Callable[[argparse.ArgumentParser], None] = lambda parser: None


def main(exporter: Exporter, argv: Sequence[str] | None = None) -> int:
    """Parse the command line (--address, --port, --interval and the exporter's own), read the
    sources once, then serve /metrics while refreshing them in the background.

    + exporter: which one
    + argv: the arguments, sys.argv's by default
    """
    parser = argparse.ArgumentParser(prog=exporter.name, description=exporter.description)
    parser.add_argument("--address", default="", help="address to listen on (default: all)")
    parser.add_argument("--port", type=int, default=exporter.port,
                        help=f"port (default: {exporter.port})")
    parser.add_argument(
        "--interval", type=float, default=exporter.interval, metavar="SECONDS",
        help=f"seconds between reads of the sources (default: {exporter.interval:g})",
    )  # fmt: skip
    exporter.options(parser)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    refresher = Refresher(exporter.sources(args))
    refresher.start()
    registry = registry_of(exporter.prefix, refresher, exporter.families)
    server = MetricsServer((args.address, args.port), registry, exporter.name)
    log.info("%s listening on %s:%d", exporter.name, args.address or "*", server.server_address[1])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        refresher.stop()
        server.server_close()
    return 0
