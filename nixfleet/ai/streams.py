"""The two streaming formats of the providers' APIs, read from a response's bytes as they come.

OpenAI, Anthropic and Gemini (``alt=sse``) send server-sent events; Ollama sends one JSON
object per line (NDJSON). Lines are split here rather than by httpx, whose line splitting
changed between the versions hosts have (Debian's 0.23, PyPI's 0.28).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from nixfleet.ai.errors import FailureKind, ProviderError


def lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """The text lines of a byte stream (LF or CRLF), each as soon as it is complete."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield _decode(line.removesuffix(b"\r"))
    if pending:
        yield _decode(pending.removesuffix(b"\r"))


def _decode(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise ProviderError(FailureKind.MALFORMED, "the stream is not UTF-8 text") from None


@dataclass(frozen=True)
class Event:
    """One server-sent event: its type ("message" unless named) and its data lines joined."""

    event: str
    data: str

    def json(self) -> Any:
        return parse_json(self.data)


def sse_events(text_lines: Iterable[str]) -> Iterator[Event]:
    """Server-sent events (the WHATWG format): `event:` and `data:` fields, dispatched at a
    blank line; comments (`:`), `id:` and `retry:` ignored."""
    event = ""
    data: list[str] = []
    for line in text_lines:
        if not line:
            if data:
                yield Event(event or "message", "\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    if data:  # a last event without its blank line
        yield Event(event or "message", "\n".join(data))


def ndjson(text_lines: Iterable[str]) -> Iterator[Any]:
    """One JSON value per non-blank line."""
    for line in text_lines:
        if line.strip():
            yield parse_json(line)


def parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        snippet = " ".join(text.split())[:60]
        raise ProviderError(FailureKind.MALFORMED, f"malformed JSON in the stream: {snippet!r}"
                            ) from None
