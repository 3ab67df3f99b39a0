"""Reading a Prometheus server's HTTP API: one place for `nixfleet monitoring status` and a
deploy's alert gate (nixfleet/alertgate.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from nixfleet.errors import NixfleetError

# Seconds each request may take: a server that is up answers these in milliseconds.
TIMEOUT = 5.0


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


def api_data(client: httpx.Client, server: str, url: str) -> Any:
    """The `data` of a Prometheus API answer; anything else is the command's error."""
    where = f"monitoring server {server}: Prometheus {url}"
    seconds = client.timeout.read  # the client's: each caller sets its own
    try:
        response = client.get(url)
    except httpx.TimeoutException:
        raise NixfleetError(f"{where}: no answer within {seconds:g} s") from None
    except httpx.HTTPError as error:
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
