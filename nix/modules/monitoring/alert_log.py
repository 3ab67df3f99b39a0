"""Alertmanager's webhook receiver on the monitoring server: one line per alert on stdout (the
journal: `journalctl -u nixfleet-alert-log`).

The original sent its receivers (default, critical, warning) to a netcat loop on :9094 that
logged to /var/log/monitoring/alerts.log; this keeps those URLs (/webhook, /webhook/critical,
/webhook/warning) and reads Alertmanager's webhook payload (version 4). Python's standard
library only: server.nix runs it with nixpkgs' python3.

    python3 alert_log.py --port 9094
"""

from __future__ import annotations

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PATHS = {"/webhook": "default", "/webhook/critical": "critical", "/webhook/warning": "warning"}


def alert_lines(route: str, payload: Any) -> list[str]:
    """`ROUTE STATUS ALERTNAME host=H severity=S: SUMMARY` for each alert of a payload."""
    if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
        raise ValueError("not an Alertmanager webhook payload (no alerts list)")
    lines = []
    for alert in payload["alerts"]:
        labels = alert.get("labels") or {}
        summary = (alert.get("annotations") or {}).get("summary", "")
        lines.append(f"{route} {alert.get('status', '?')} {labels.get('alertname', '?')} "
                     f"host={labels.get('host', '-')} severity={labels.get('severity', '-')}: "
                     f"{summary}")
    return lines


class Receiver(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # the health gate and people: it is up
        self._answer(200, "nixfleet alert log\n")

    def do_POST(self) -> None:
        route = PATHS.get(self.path.rstrip("/"))
        if route is None:
            self._answer(404, f"no receiver at {self.path}\n")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            lines = alert_lines(route, json.loads(self.rfile.read(length)))
        except ValueError as error:  # json.JSONDecodeError is one
            self._answer(400, f"{error}\n")
            return
        for line in lines:
            print(line, flush=True)
        self._answer(200, "ok\n")

    def _answer(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per alert is the log; requests are not


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--address", default="127.0.0.1")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.address, args.port), Receiver)
    host, port = server.server_address[:2]
    print(f"listening on {host!s}:{port}", flush=True)
    server.serve_forever()  # until systemd stops it
    return 0


if __name__ == "__main__":
    sys.exit(main())
