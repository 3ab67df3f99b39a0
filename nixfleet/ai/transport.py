"""One HTTP request to a provider (httpx), its failures as ProviderError, and -v's log lines.

The timeout (-t, else the configuration's) bounds each wait of every request: connecting,
sending, and each wait for the next piece of the answer, so a streamed answer may take longer
as long as it keeps coming. Redirects are not followed (a key must not travel to another
host). The key headers are never logged.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from nixfleet.ai.errors import FailureKind, ProviderError
from nixfleet.ai.log import REDACTED, Log
from nixfleet.ai.streams import lines

# The headers that carry a key (OpenAI, Anthropic, Gemini): never in a log line.
SECRET_HEADERS = frozenset({"authorization", "x-api-key", "x-goog-api-key"})
USER_AGENT = "ai-cli (nixfleet)"
# How much of an error answer is read for its message.
ERROR_BODY_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None  # sent as JSON when not None

    def describe(self) -> str:
        """The request as -v logs it: the key headers redacted."""
        headers = ", ".join(
            f"{name.lower()}: {REDACTED if name.lower() in SECRET_HEADERS else value}"
            for name, value in sorted(self.headers.items()))
        return f"{self.method} {self.url}" + (f" ({headers})" if headers else "")


class Transport:
    def __init__(self, timeout: float, log: Log, client: httpx.Client | None = None):
        self.timeout = timeout
        self.log = log
        self.client = client or httpx.Client(
            timeout=httpx.Timeout(timeout), follow_redirects=False,
            headers={"User-Agent": USER_AGENT})

    def close(self) -> None:
        self.client.close()

    def lines(self, provider: str, request: Request) -> Iterator[str]:
        """The lines of a 200 answer as they arrive; any other status, and every transport
        failure, a ProviderError."""
        self.log.debug(f"{provider}: {request.describe()}")
        started = time.monotonic()
        try:
            with self.client.stream(request.method, request.url, headers=dict(request.headers),
                                    json=request.body) as response:
                self.log.debug(f"{provider}: HTTP {response.status_code} "
                               f"{response.reason_phrase} in {time.monotonic() - started:.2f} s")
                if response.status_code != 200:
                    raise http_failure(response.status_code, response.headers,
                                       _read_some(response))
                yield from lines(response.iter_bytes())
        except httpx.HTTPError as error:
            raise self._failure(error) from None
        except httpx.InvalidURL as error:
            raise ProviderError(FailureKind.REQUEST, f"bad URL {request.url!r}: {error}"
                                ) from None

    def json(self, provider: str, request: Request) -> Any:
        """A 200 answer's JSON."""
        text = "\n".join(self.lines(provider, request))
        try:
            return json.loads(text)
        except ValueError:
            raise ProviderError(FailureKind.MALFORMED, "the answer is not JSON: "
                                f"{' '.join(text.split())[:60]!r}", status=200) from None

    def _failure(self, error: httpx.HTTPError) -> ProviderError:
        where = _where(error)
        if isinstance(error, httpx.ConnectTimeout):
            return ProviderError(FailureKind.TIMEOUT,
                                 f"no connection to {where} within {self.timeout:g} s")
        if isinstance(error, httpx.TimeoutException):
            return ProviderError(FailureKind.TIMEOUT,
                                 f"{where} did not answer within {self.timeout:g} s")
        if isinstance(error, httpx.DecodingError):
            return ProviderError(FailureKind.MALFORMED, f"{where} sent an undecodable answer: "
                                 f"{_reason(error)}")
        if isinstance(error, httpx.UnsupportedProtocol):
            return ProviderError(FailureKind.REQUEST, f"unsupported URL: {error}")
        if isinstance(error, httpx.ConnectError):
            return ProviderError(FailureKind.CONNECT, f"cannot connect to {where}: "
                                 f"{_reason(error)}")
        if isinstance(error, httpx.TransportError):
            return ProviderError(FailureKind.CONNECT, f"the connection to {where} broke: "
                                 f"{_reason(error)}")
        return ProviderError(FailureKind.CONNECT, f"{where}: {_reason(error)}")


def http_failure(status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
    """A non-200 answer as a ProviderError, with the provider's own message."""
    message = f"HTTP {status}"
    detail = error_message(body)
    if detail:
        message += f": {detail}"
    if status == 429:
        return ProviderError(FailureKind.RATE_LIMITED, message, status=status,
                             retry_after=retry_after(headers.get("retry-after")))
    if status in (401, 403):
        return ProviderError(FailureKind.AUTH, message, status=status)
    if status == 408:
        return ProviderError(FailureKind.TIMEOUT, message, status=status)
    if status >= 500:
        return ProviderError(FailureKind.SERVER, message, status=status,
                             retry_after=retry_after(headers.get("retry-after")))
    return ProviderError(FailureKind.REQUEST, message, status=status)


def error_message(body: bytes) -> str:
    """The message in an error answer, in any of the four APIs' shapes: {"error": "..."}
    (Ollama), {"error": {"message": ...}} (OpenAI, Anthropic, Gemini); else its first line."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, str):
            return error
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            kind = error.get("type") or error.get("status")
            return error["message"] + (f" ({kind})" if isinstance(kind, str) else "")
        if isinstance(data.get("message"), str):
            return data["message"]
    return " ".join(text.split())[:200]


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After in seconds: a number, or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _read_some(response: httpx.Response) -> bytes:
    body = b""
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) >= ERROR_BODY_LIMIT:
            break
    return body[:ERROR_BODY_LIMIT]


def _where(error: httpx.HTTPError) -> str:
    try:
        url = error.request.url
    except RuntimeError:  # no request attached
        return "the provider"
    port = f":{url.port}" if url.port else ""
    return f"{url.host}{port}"


def _reason(error: Exception) -> str:
    """The innermost cause's words: '[Errno 111] Connection refused' -> 'Connection refused'."""
    text = str(error) or type(error).__name__
    if text.startswith("[Errno") and "] " in text:
        text = text.split("] ", 1)[1]
    return text
