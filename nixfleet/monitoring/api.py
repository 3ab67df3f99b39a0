"""Reading a monitoring server's HTTP APIs: one place for `nixfleet monitoring status`,
`nixfleet status` and a deploy's alert gate (nixfleet/alertgate.py).

One GET over the standard library's http.client (the servers answer plain HTTP on the fleet's
network): importing an HTTP client library and making its client (TLS context and all) cost a
command like `nixfleet status` more CPU than all its questions to Prometheus.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from http.client import HTTPConnection, HTTPException
from typing import Any
from urllib.parse import urlsplit

from nixfleet.errors import NixfleetError

# Seconds each request may take: a server that is up answers these in milliseconds.
TIMEOUT = 5.0


@dataclass(frozen=True)
class Response:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON (ValueError: it is not)."""
        return json.loads(self.content)


class Unanswered(Exception):
    """No HTTP answer: the server cannot be reached (timed_out: not within the timeout)."""

    def __init__(self, message: str, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out


def get(url: str, timeout: float = TIMEOUT) -> Response:
    """GET an http:// URL, waiting at most `timeout` seconds to connect and for each read.

    + url: http://HOST:PORT/PATH?QUERY (HOST in brackets when it is IPv6)
    + timeout: seconds
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise Unanswered(f"not an http:// URL: {url}", timed_out=False)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection = HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        connection.request("GET", target, headers={"Accept": "application/json"})
        answer = connection.getresponse()
        return Response(answer.status, answer.read())
    except TimeoutError:
        raise Unanswered("timed out", timed_out=True) from None
    except (OSError, HTTPException) as error:
        raise Unanswered(str(error) or type(error).__name__, timed_out=False) from None
    finally:
        connection.close()


@dataclass(frozen=True)
class FiringAlert:
    server: str
    name: str
    host: str | None
    severity: str | None
    active_at: datetime | None
    summary: str


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def timestamp(value: Any) -> datetime | None:
    """An RFC 3339 time from the API; Prometheus's zero time means never."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return None if moment.year <= 1 else moment


def api_data(server: str, url: str, seconds: float = TIMEOUT) -> Any:
    """The `data` of a Prometheus API answer; anything else is the command's error.

    + server: the monitoring server's name
    + url: the API's URL on it
    + seconds: the request's timeout (each caller has its own)
    """
    where = f"monitoring server {server}: Prometheus {url}"
    try:
        response = get(url, seconds)
    except Unanswered as error:
        if error.timed_out:
            raise NixfleetError(f"{where}: no answer within {seconds:g} s") from None
        raise NixfleetError(f"{where}: cannot be reached: {one_line(str(error))} "
                            f"(timeout {seconds:g} s)") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("status") != "success" or "data" not in body:
        detail = (body.get("error") if isinstance(body, dict) else None) or response.text[:200]
        raise NixfleetError(f"{where}: HTTP {response.status_code}: {one_line(str(detail))}")
    return body["data"]


def firing(server: str, data: Any) -> list[FiringAlert]:
    result = []
    for item in (data or {}).get("alerts") or []:
        if item.get("state") != "firing":
            continue
        labels = item.get("labels") or {}
        annotations = item.get("annotations") or {}
        result.append(FiringAlert(
            server=server, name=str(labels.get("alertname", "?")), host=labels.get("host"),
            severity=labels.get("severity"), active_at=timestamp(item.get("activeAt")),
            summary=one_line(annotations.get("summary") or annotations.get("description")
                             or "")))
    return result
