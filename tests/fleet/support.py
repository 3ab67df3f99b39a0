"""What the checks share: HTTP over the host's own curl, and the exposition parser."""

from __future__ import annotations

import json
import shlex
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def fetch(host: Any, url: str, auth_file: str | None = None) -> str:
    """GET `url` from the host itself; a failure is one line naming the URL. With auth_file,
    basic auth admin:<its content>, handed to curl on stdin (never in an argument)."""
    command = f"curl -fsS --max-time 5 {shlex.quote(url)}"
    if auth_file:
        command = (f"printf 'user = \"admin:%s\"\\n' \"$(cat {shlex.quote(auth_file)})\" | "
                   f"{command} -K -")
    result = host.run(command)
    assert result.rc == 0, f"GET {url}: {(result.stderr or result.stdout).strip() or result.rc}"
    return str(result.stdout)


def fetch_json(host: Any, url: str, auth_file: str | None = None) -> Any:
    text = fetch(host, url, auth_file)
    try:
        return json.loads(text)
    except ValueError:
        raise AssertionError(f"GET {url}: not JSON: {text[:80]!r}") from None


def samples(text: str, url: str) -> dict[str, list[Any]]:
    """Sample name -> samples of a Prometheus exposition, parsed by prometheus-client."""
    found: dict[str, list[Any]] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                found.setdefault(sample.name, []).append(sample)
    except ValueError as error:
        raise AssertionError(f"{url}: not valid exposition: {error}") from None
    return found
