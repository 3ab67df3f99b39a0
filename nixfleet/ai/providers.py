"""One small class per provider API: the chat request, the text in its stream, and the status
probe. Each speaks the provider's own HTTP API:

    openai     POST {baseUrl}/chat/completions, "Authorization: Bearer KEY"; server-sent events
               of chat.completion.chunk (choices[].delta.content) up to "data: [DONE]"
    anthropic  POST {baseUrl}/v1/messages, "x-api-key: KEY", "anthropic-version: 2023-06-01";
               events content_block_delta (delta.text) up to message_stop, or error
    gemini     POST {baseUrl}/models/MODEL:streamGenerateContent?alt=sse, "x-goog-api-key: KEY"
               (never ?key=: a key in a URL ends up in logs); events of GenerateContentResponse
               (candidates[0].content.parts[].text) up to a finishReason
    ollama     POST {baseUrl}/api/chat, no key; NDJSON (message.content) up to "done": true

--status asks the cloud APIs for their model list (GET .../models with the key), which shows
both that the endpoint answers and whether it takes the key, and Ollama for /api/version and
/api/tags.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote

from nixfleet.ai.config import ApiKey, ProviderConfig
from nixfleet.ai.errors import FailureKind, ProviderError
from nixfleet.ai.streams import ndjson, sse_events
from nixfleet.ai.transport import Request, Transport

ANTHROPIC_VERSION = "2023-06-01"
# Anthropic requires a limit; 4096 is what every one of the configured Claude models allows.
ANTHROPIC_MAX_TOKENS = 4096
# Anthropic's error events that mean "try again later" (HTTP 529 and 500 as events).
ANTHROPIC_TRANSIENT = frozenset({"overloaded_error", "api_error"})


@dataclass(frozen=True)
class Probe:
    """What --status found: whether the endpoint answered, in words, and (Ollama) the models
    it has."""

    reachable: bool
    ok: bool
    detail: str
    models: tuple[str, ...] | None = None


class Provider:
    """A configured provider with its key (None when it needs none)."""

    name: ClassVar[str]

    def __init__(self, config: ProviderConfig, key: ApiKey | None = None):
        self.config = config
        self.key = key

    def chat_request(self, model: str, prompt: str) -> Request:
        raise NotImplementedError

    def texts(self, text_lines: Iterable[str]) -> Iterator[str]:
        """The answer's text, piece by piece, from the stream's lines; a ProviderError when
        the stream says it failed, is malformed, or ends before its end marker."""
        raise NotImplementedError

    def models_request(self) -> Request:
        raise NotImplementedError

    def probe(self, transport: Transport) -> Probe:
        try:
            data = transport.json(self.name, self.models_request())
        except ProviderError as error:
            return _probe_failed(error)
        count = len(data.get("data") or data.get("models") or []) if isinstance(data, dict) \
            else 0
        return Probe(True, True, f"HTTP 200, {count} models listed")

    def models(self, transport: Transport) -> list[str]:
        """The models ai-cli offers for this provider: the configured ones."""
        return list(self.config.models)

    def url(self, path: str) -> str:
        return self.config.base_url + path

    def _key(self) -> str:
        if self.key is None:
            raise ProviderError(FailureKind.UNAVAILABLE, "no key")
        return self.key.reveal()


def _probe_failed(error: ProviderError) -> Probe:
    if error.kind is FailureKind.AUTH:
        return Probe(True, False, f"key rejected: {error}")
    return Probe(error.status is not None, False, str(error))


def _shape(what: str) -> ProviderError:
    return ProviderError(FailureKind.MALFORMED, f"unexpected {what} in the stream")


def _stream_error(error: Any, transient: bool = False) -> ProviderError:
    """An error the provider reported inside a 200 stream."""
    message = str(error.get("message") or error) if isinstance(error, dict) else str(error)
    return ProviderError(FailureKind.SERVER if transient else FailureKind.REQUEST,
                         f"error in the stream: {message}")


class OpenAI(Provider):
    name = "openai"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key()}"}

    def chat_request(self, model: str, prompt: str) -> Request:
        return Request("POST", self.url("/chat/completions"), self._headers(), {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "stream": True,
        })

    def texts(self, text_lines: Iterable[str]) -> Iterator[str]:
        for event in sse_events(text_lines):
            if event.data.strip() == "[DONE]":
                return
            chunk = event.json()
            if not isinstance(chunk, dict):
                raise _shape("event")
            if "error" in chunk:
                raise _stream_error(chunk["error"], transient=True)
            choices = chunk.get("choices")
            if not isinstance(choices, list):
                raise _shape("chunk without choices")
            for choice in choices:
                delta = choice.get("delta") if isinstance(choice, dict) else None
                content = delta.get("content") if isinstance(delta, dict) else None
                if isinstance(content, str) and content:
                    yield content
        raise ProviderError(FailureKind.MALFORMED, "the stream ended before [DONE]")

    def models_request(self) -> Request:
        return Request("GET", self.url("/models"), self._headers())


class Anthropic(Provider):
    name = "anthropic"

    def _headers(self) -> dict[str, str]:
        return {"x-api-key": self._key(), "anthropic-version": ANTHROPIC_VERSION}

    def chat_request(self, model: str, prompt: str) -> Request:
        return Request("POST", self.url("/v1/messages"), self._headers(), {
            "model": model,
            "max_tokens": ANTHROPIC_MAX_TOKENS,
            "messages": [{"role": "user", "content": prompt}],
            "stream": True,
        })

    def texts(self, text_lines: Iterable[str]) -> Iterator[str]:
        for event in sse_events(text_lines):
            data = event.json()
            if not isinstance(data, dict):
                raise _shape("event")
            kind = data.get("type") or event.event
            if kind == "content_block_delta":
                delta = data.get("delta")
                if not isinstance(delta, dict):
                    raise _shape("content_block_delta")
                if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                    yield delta["text"]
            elif kind == "message_stop":
                return
            elif kind == "error":
                error = data.get("error")
                transient = isinstance(error, dict) and error.get("type") in ANTHROPIC_TRANSIENT
                raise _stream_error(error, transient)
        raise ProviderError(FailureKind.MALFORMED, "the stream ended before message_stop")

    def models_request(self) -> Request:
        return Request("GET", self.url("/v1/models"), self._headers())


class Gemini(Provider):
    name = "gemini"

    def _headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self._key()}

    def chat_request(self, model: str, prompt: str) -> Request:
        return Request(
            "POST", self.url(f"/models/{quote(model, safe='')}:streamGenerateContent?alt=sse"),
            self._headers(), {"contents": [{"role": "user", "parts": [{"text": prompt}]}]})

    def texts(self, text_lines: Iterable[str]) -> Iterator[str]:
        finished = None
        for event in sse_events(text_lines):
            data = event.json()
            if not isinstance(data, dict):
                raise _shape("event")
            if "error" in data:
                raise _stream_error(data["error"], transient=True)
            feedback = data.get("promptFeedback")
            if isinstance(feedback, dict) and feedback.get("blockReason"):
                raise ProviderError(FailureKind.REQUEST,
                                    f"prompt blocked: {feedback['blockReason']}")
            candidates = data.get("candidates")
            if candidates is None:
                continue  # a chunk with only usageMetadata
            if not isinstance(candidates, list) or not candidates \
                    or not isinstance(candidates[0], dict):
                raise _shape("candidates")
            candidate = candidates[0]
            content = candidate.get("content") or {}
            parts = content.get("parts") if isinstance(content, dict) else None
            for part in parts or []:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    yield part["text"]
            finished = candidate.get("finishReason") or finished
        if finished is None:
            raise ProviderError(FailureKind.MALFORMED, "the stream ended without a finishReason")
        if finished not in ("STOP", "MAX_TOKENS"):
            raise ProviderError(FailureKind.REQUEST, f"the answer stopped: {finished}")

    def models_request(self) -> Request:
        return Request("GET", self.url("/models"), self._headers())


class Ollama(Provider):
    name = "ollama"

    def chat_request(self, model: str, prompt: str) -> Request:
        return Request("POST", self.url("/api/chat"), {}, {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "stream": True,
        })

    def texts(self, text_lines: Iterable[str]) -> Iterator[str]:
        for data in ndjson(text_lines):
            if not isinstance(data, dict):
                raise _shape("line")
            if "error" in data:
                raise _stream_error(data["error"], transient=True)
            message = data.get("message")
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str) and content:
                yield content
            if data.get("done") is True:
                return
        raise ProviderError(FailureKind.MALFORMED, 'the stream ended before "done": true')

    def models_request(self) -> Request:
        return Request("GET", self.url("/api/tags"))

    def probe(self, transport: Transport) -> Probe:
        try:
            version = transport.json(self.name, Request("GET", self.url("/api/version")))
            models = self._tags(transport)
        except ProviderError as error:
            return _probe_failed(error)
        said = version.get("version") if isinstance(version, dict) else None
        detail = f"Ollama {said or 'of unknown version'}, {len(models)} models"
        if models:
            detail += ": " + ", ".join(models)
        default = _with_tag(self.config.default_model)
        ok = default in models
        if not ok:
            detail += f"; default model {self.config.default_model} is not pulled"
        return Probe(True, ok, detail, tuple(models))

    def models(self, transport: Transport) -> list[str]:
        """What the server has (/api/tags), not what the configuration lists."""
        return self._tags(transport)

    def _tags(self, transport: Transport) -> list[str]:
        data = transport.json(self.name, self.models_request())
        models = data.get("models") if isinstance(data, dict) else None
        if not isinstance(models, list):
            raise ProviderError(FailureKind.MALFORMED, "/api/tags has no models list",
                                status=200)
        return sorted(m["name"] for m in models if isinstance(m, dict)
                      and isinstance(m.get("name"), str))


def _with_tag(model: str) -> str:
    """Ollama's full name: a model without a tag is its :latest."""
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


PROVIDERS: dict[str, type[Provider]] = {
    cls.name: cls for cls in (OpenAI, Anthropic, Gemini, Ollama)}


def provider_for(config: ProviderConfig, key: ApiKey | None) -> Provider:
    """The API class for a configured provider (by its name)."""
    cls = PROVIDERS.get(config.name)
    if cls is None:
        raise ProviderError(FailureKind.UNAVAILABLE,
                            f"ai-cli does not know the {config.name} API")
    return cls(config, key)
