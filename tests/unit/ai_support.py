"""Loopback HTTP servers that speak the part of each provider's API ai-cli uses, for its tests.

A `FakeApi` answers each request with the next scripted `Reply` (status, headers, body chunks
sent as they are, a delay before the answer) and records what it got. The stream builders
write each API's streaming format as the real services send it. Nothing listens beyond
127.0.0.1.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

KEYS = {"openai": "sk-test-OPENAI-0123456789abcdef", "anthropic": "sk-ant-test-ANTHROPIC-4567",
        "gemini": "AIzaTest-GEMINI-89abcdef"}
PRIORITIES = {"openai": 1, "anthropic": 2, "gemini": 3, "ollama": 4}
MODELS: dict[str, dict[str, tuple[float, float]]] = {
    "openai": {"gpt-4o-mini": (0.15, 0.6), "gpt-4o": (2.5, 10.0), "gpt-3.5-turbo": (0.5, 1.5)},
    "anthropic": {"claude-3-5-sonnet-20241022": (3.0, 15.0),
                  "claude-3-5-haiku-20241022": (0.8, 4.0),
                  "claude-3-opus-20240229": (15.0, 75.0)},
    "gemini": {"gemini-1.5-flash": (0.075, 0.3), "gemini-1.5-pro": (1.25, 5.0),
               "gemini-2.0-flash-exp": (0, 0)},
    "ollama": {"mistral-small3.1": (0, 0), "llama3.2": (0, 0)},
}
# Where each API lives under its baseUrl (the configuration's baseUrl has OpenAI's /v1 and
# Gemini's /v1beta in it, as the real ones).
BASE_PATHS = {"openai": "/v1", "anthropic": "", "gemini": "/v1beta", "ollama": ""}


@dataclass
class Reply:
    status: int = 200
    chunks: Sequence[bytes] = ()
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the status line
    pause: float = 0.0  # seconds between chunks
    content_type: str = "text/event-stream"


@dataclass(frozen=True)
class Received:
    method: str
    path: str  # with the query string
    headers: dict[str, str]  # names in lower case
    body: Any
    at: float  # time.monotonic() when it arrived


class FakeApi:
    """A provider's endpoint on 127.0.0.1: scripted replies, recorded requests."""

    def __init__(self, name: str):
        self.name = name
        self.replies: deque[Reply] = deque()
        self.requests: list[Received] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the body ends when the connection closes

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                api.handle(self)

            do_POST = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A short poll: shutdown() waits for it, four servers per test.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                       daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{BASE_PATHS[self.name]}"

    def reply(self, *replies: Reply) -> FakeApi:
        self.replies.extend(replies)
        return self

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        self.requests.append(Received(
            handler.command, handler.path, {k.lower(): v for k, v in handler.headers.items()},
            json.loads(raw) if raw else None, time.monotonic()))
        reply = self.replies.popleft() if self.replies else Reply(
            599, [b'{"error": "no reply scripted"}'], content_type="application/json")
        try:
            time.sleep(reply.delay)
            handler.send_response(reply.status)
            handler.send_header("Content-Type", reply.content_type)
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            for index, chunk in enumerate(reply.chunks):
                if index:
                    time.sleep(reply.pause)
                handler.wfile.write(chunk)
                handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def config(apis: dict[str, FakeApi], key_dir: Path, **settings: Any) -> dict[str, Any]:
    """/etc/ai-providers.json as nix/lib/ai-providers.nix renders it, every provider enabled
    and pointed at its loopback server (or a closed port), keys in `key_dir`."""
    providers = {}
    for name, models in MODELS.items():
        api = apis.get(name)
        providers[name] = {
            "enabled": True,
            "priority": PRIORITIES[name],
            "models": list(models),
            "defaultModel": next(iter(models)),
            "baseUrl": api.base_url if api else f"http://127.0.0.1:9{BASE_PATHS[name]}",
            "apiKeyFile": None if name == "ollama" else str(key_dir / f"api-{name}"),
            "requiresApiKey": name != "ollama",
            "prices": {m: {"input": i, "output": o} for m, (i, o) in models.items()},
        }
    return {"defaultProvider": "anthropic", "enableFallback": False, "costOptimization": False,
            "timeout": 5, "maxRetries": 2, "providers": providers, **settings}


def write_keys(key_dir: Path) -> None:
    key_dir.mkdir(parents=True, exist_ok=True)
    for name, key in KEYS.items():
        (key_dir / f"api-{name}").write_text(key + "\n")
        (key_dir / f"api-{name}").chmod(0o600)


# --- each API's stream, as the services send it ---------------------------------------------


def sse(*events: tuple[str | None, Any], newline: bytes = b"\n") -> list[bytes]:
    out = []
    for event, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        lines = ([f"event: {event}".encode()] if event else []) + [f"data: {text}".encode()]
        out.append(newline.join(lines) + newline + newline)
    return out


def openai_stream(*texts: str, model: str = "gpt-4o-mini") -> list[bytes]:
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model}
    events: list[tuple[str | None, Any]] = [(None, {**chunk, "choices": [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})]
    events += [(None, {**chunk, "choices": [
        {"index": 0, "delta": {"content": text}, "finish_reason": None}]}) for text in texts]
    events += [(None, {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
               (None, "[DONE]")]
    return sse(*events)


def anthropic_stream(*texts: str, model: str = "claude-3-5-sonnet-20241022") -> list[bytes]:
    events: list[tuple[str | None, Any]] = [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "usage": {"input_tokens": 5, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
    ]
    events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "text_delta", "text": text}})
               for text in texts]
    events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
               ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                  "usage": {"output_tokens": 9}}),
               ("message_stop", {"type": "message_stop"})]
    return sse(*events)


def gemini_stream(*texts: str) -> list[bytes]:
    """Gemini's alt=sse stream: CRLF line ends, no end marker but a finishReason."""
    events: list[tuple[str | None, Any]] = []
    for index, text in enumerate(texts):
        candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"},
                                     "index": 0}
        if index == len(texts) - 1:
            candidate["finishReason"] = "STOP"
        events.append((None, {"candidates": [candidate], "modelVersion": "gemini-1.5-flash"}))
    return sse(*events, newline=b"\r\n")


def ollama_stream(*texts: str, model: str = "mistral-small3.1") -> list[bytes]:
    lines = [{"model": model, "created_at": "2025-01-01T00:00:00Z",
              "message": {"role": "assistant", "content": text}, "done": False}
             for text in texts]
    lines.append({"model": model, "created_at": "2025-01-01T00:00:00Z",
                  "message": {"role": "assistant", "content": ""}, "done": True,
                  "done_reason": "stop", "eval_count": len(texts)})
    return [json.dumps(line).encode() + b"\n" for line in lines]


STREAMS = {"openai": openai_stream, "anthropic": anthropic_stream, "gemini": gemini_stream,
           "ollama": ollama_stream}
CONTENT_TYPES = {"openai": "text/event-stream", "anthropic": "text/event-stream",
                 "gemini": "text/event-stream", "ollama": "application/x-ndjson"}


def answer(name: str, *texts: str) -> Reply:
    """A successful streamed answer of provider `name`."""
    return Reply(200, STREAMS[name](*texts), content_type=CONTENT_TYPES[name])


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, [json.dumps({"error": {"message": message, "type": "test"}}).encode()],
                 headers or {}, content_type="application/json")


def apis(*names: str) -> Iterator[dict[str, FakeApi]]:
    """A FakeApi per name, closed afterwards (a fixture's body)."""
    servers = {name: FakeApi(name) for name in names}
    try:
        yield servers
    finally:
        for server in servers.values():
            server.close()
