"""ai-cli against loopback servers that speak each provider's API (tests/unit/ai_support.py):
the requests it sends (paths, headers, bodies, streaming), what it prints, its retries,
fallback, cost optimisation, status, exit codes, and that keys go into headers only."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nixfleet import nixcheck
from nixfleet.ai import cli, streams
from nixfleet.ai.config import ConfigError, load_config, parse_config
from nixfleet.ai.transport import retry_after
from tests.unit import ai_support as fake
from tests.unit.ai_support import KEYS, FakeApi, Reply, answer, error

ROOT = Path(__file__).resolve().parents[2]
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                   "all_proxy")


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str
    waits: list[float]

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


class AiCli:
    """ai-cli run in this process with a configuration pointing at loopback servers."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 capsys: pytest.CaptureFixture[str]):
        self.tmp = tmp_path
        self.monkeypatch = monkeypatch
        self.capsys = capsys
        self.keys = tmp_path / "agenix"
        self.config_file = tmp_path / "ai-providers.json"
        fake.write_keys(self.keys)
        monkeypatch.setenv("AI_PROVIDERS_CONFIG", str(self.config_file))
        monkeypatch.delenv("AI_DEFAULT_PROVIDER", raising=False)
        monkeypatch.setenv("COLUMNS", "400")  # a table row on one line; the width tests set it
        for name in PROXY_VARIABLES:
            monkeypatch.delenv(name, raising=False)

    def configure(self, apis: dict[str, FakeApi], **settings: Any) -> dict[str, Any]:
        data = fake.config(apis, self.keys, **settings)
        self.config_file.write_text(json.dumps(data))
        return data

    def __call__(self, *argv: str, stdin: str = "", real_sleep: bool = False) -> Result:
        waits: list[float] = []

        def sleep(seconds: float) -> None:
            waits.append(seconds)
            if real_sleep:
                time.sleep(seconds)

        self.monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        self.capsys.readouterr()
        try:
            code = cli.main(list(argv), sleep=sleep)
        except SystemExit as exit:  # argparse: usage errors and --help
            code = int(exit.code or 0)
        out, err = self.capsys.readouterr()
        return Result(code, out, err, waits)


@pytest.fixture
def ai(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
       capsys: pytest.CaptureFixture[str]) -> AiCli:
    return AiCli(tmp_path, monkeypatch, capsys)


@pytest.fixture
def apis() -> Iterator[dict[str, FakeApi]]:
    yield from fake.apis("openai", "anthropic", "gemini", "ollama")


def no_key_anywhere(result: Result, *servers: FakeApi) -> None:
    for key in KEYS.values():
        assert key not in result.out and key not in result.err
        for server in servers:
            for request in server.requests:
                assert key not in request.path


# --- each provider's API ---------------------------------------------------------------------


def test_openai_chat_completions_stream(ai, apis):
    ai.configure(apis)
    apis["openai"].reply(answer("openai", "Nix ", "is a ", "package manager."))

    result = ai("-p", "openai", "What is Nix?")

    assert (result.code, result.out, result.err) == (0, "Nix is a package manager.\n", "")
    [request] = apis["openai"].requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == f"Bearer {KEYS['openai']}"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {"model": "gpt-4o-mini", "stream": True,
                            "messages": [{"role": "user", "content": "What is Nix?"}]}


def test_anthropic_messages_stream(ai, apis):
    ai.configure(apis)
    apis["anthropic"].reply(answer("anthropic", "Hello", " from Claude"))

    result = ai("-p", "anthropic", "-m", "claude-3-5-haiku-20241022", "Hi")

    assert (result.code, result.out, result.err) == (0, "Hello from Claude\n", "")
    [request] = apis["anthropic"].requests
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.headers["x-api-key"] == KEYS["anthropic"]
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers
    assert request.body == {"model": "claude-3-5-haiku-20241022", "max_tokens": 4096,
                            "stream": True, "messages": [{"role": "user", "content": "Hi"}]}


def test_gemini_stream_generate_content_with_the_key_in_its_header(ai, apis):
    ai.configure(apis)
    apis["gemini"].reply(answer("gemini", "Gemini ", "says hi"))

    result = ai("-p", "gemini", "Hi")

    assert (result.code, result.out, result.err) == (0, "Gemini says hi\n", "")
    [request] = apis["gemini"].requests
    assert (request.method, request.path) == (
        "POST", "/v1beta/models/gemini-1.5-flash:streamGenerateContent?alt=sse")
    assert request.headers["x-goog-api-key"] == KEYS["gemini"]
    assert "key=" not in request.path
    assert request.body == {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}


def test_ollama_chat_ndjson_without_a_key(ai, apis):
    ai.configure(apis)
    apis["ollama"].reply(answer("ollama", "Local ", "answer"))

    result = ai("-p", "ollama", "-m", "llama3.2", "Hi")

    assert (result.code, result.out, result.err) == (0, "Local answer\n", "")
    [request] = apis["ollama"].requests
    assert (request.method, request.path) == ("POST", "/api/chat")
    assert not {"authorization", "x-api-key", "x-goog-api-key"} & set(request.headers)
    assert request.body == {"model": "llama3.2", "stream": True,
                            "messages": [{"role": "user", "content": "Hi"}]}


def test_the_default_provider_is_the_configurations_unless_the_environment_names_one(
        ai, apis, monkeypatch):
    ai.configure(apis, defaultProvider="gemini")
    apis["gemini"].reply(answer("gemini", "from gemini"))
    apis["ollama"].reply(answer("ollama", "from ollama"))

    assert ai("question").out == "from gemini\n"
    monkeypatch.setenv("AI_DEFAULT_PROVIDER", "ollama")
    assert ai("question").out == "from ollama\n"
    monkeypatch.setenv("AI_DEFAULT_PROVIDER", "mistral")
    unknown = ai("question")
    assert unknown.code == cli.EXIT_USAGE
    assert ("AI_DEFAULT_PROVIDER: unknown provider 'mistral' (known: openai, anthropic, gemini, "
            "ollama)") in unknown.err


def test_a_default_provider_that_is_not_enabled_is_named_with_where_it_came_from(
        ai, apis, monkeypatch):
    data = ai.configure(apis, defaultProvider="gemini")
    data["providers"]["gemini"]["enabled"] = False
    data["providers"]["anthropic"]["enabled"] = False
    ai.config_file.write_text(json.dumps(data))

    from_file = ai("question")
    assert from_file.code == cli.EXIT_NO_PROVIDER
    assert from_file.err_lines == [
        "ai-cli: gemini is not available (not enabled on this host)",
        f"ai-cli: nothing asked: gemini (from defaultProvider in {ai.config_file}) is not "
        "available; available: openai, ollama (-f asks them too)"]
    monkeypatch.setenv("AI_DEFAULT_PROVIDER", "anthropic")
    assert ai("question").err_lines[1] == (
        "ai-cli: nothing asked: anthropic (from AI_DEFAULT_PROVIDER) is not available; "
        "available: openai, ollama (-f asks them too)")
    data["providers"]["openai"]["enabled"] = data["providers"]["ollama"]["enabled"] = False
    ai.config_file.write_text(json.dumps(data))
    assert ai("question").err_lines[1] == "ai-cli: no provider available"
    assert all(not api.requests for api in apis.values())


def test_the_prompt_comes_from_stdin_when_no_argument_gives_it(ai, apis):
    ai.configure(apis)
    apis["ollama"].reply(answer("ollama", "ok"))

    assert ai("-p", "ollama", stdin="a prompt\nof two lines\n").out == "ok\n"
    assert apis["ollama"].requests[0].body["messages"][0]["content"] == "a prompt\nof two lines\n"


def test_the_answer_is_printed_as_it_streams(ai, apis, monkeypatch):
    """Each piece is written (and flushed) when it arrives, not when the answer is complete."""
    ai.configure(apis)
    apis["ollama"].reply(Reply(200, fake.ollama_stream("one ", "two ", "three"), pause=0.3,
                               content_type="application/x-ndjson"))
    writes: list[tuple[float, str]] = []
    write = cli.Output.write

    def timed(self: cli.Output, text: str) -> None:
        writes.append((time.monotonic(), text))
        write(self, text)

    monkeypatch.setattr(cli.Output, "write", timed)

    assert ai("-p", "ollama", "count").out == "one two three\n"
    assert [text for _, text in writes] == ["one ", "two ", "three", "\n"]
    assert writes[2][0] - writes[0][0] >= 0.5


# --- retries ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["openai", "anthropic", "gemini", "ollama"])
def test_a_500_is_retried_after_a_backoff_then_the_answer_streams(ai, apis, name):
    ai.configure(apis)
    apis[name].reply(error(500, "internal error"), answer(name, "second time lucky"))

    result = ai("-p", name, "-v", "Hi")

    assert (result.code, result.out) == (0, "second time lucky\n")
    assert len(apis[name].requests) == 2
    assert apis[name].requests[0].body == apis[name].requests[1].body
    assert result.waits == [0.5]
    assert f"ai-cli: {name}: HTTP 500: internal error (test); retry 1/2 in 0.5 s (backoff)" in (
        result.err_lines)


def test_retries_back_off_exponentially_up_to_max_retries(ai, apis):
    ai.configure(apis, maxRetries=3)
    apis["openai"].reply(*[error(503, "overloaded")] * 4)

    result = ai("-p", "openai", "Hi")

    assert result.code == cli.EXIT_ALL_FAILED
    assert len(apis["openai"].requests) == 4
    assert result.waits == [0.5, 1.0, 2.0]
    assert result.err_lines == [
        "ai-cli: openai (gpt-4o-mini) failed: HTTP 503: overloaded (test) (4 attempts)",
        "ai-cli: no answer: every provider asked failed (-f asks the other providers too)"]


def test_a_429_waits_as_long_as_retry_after_says_then_succeeds(ai, apis):
    ai.configure(apis)
    apis["anthropic"].reply(error(429, "rate limited", {"Retry-After": "1"}),
                            answer("anthropic", "after the pause"))

    result = ai("-p", "anthropic", "Hi", real_sleep=True)

    assert (result.code, result.out) == (0, "after the pause\n")
    assert result.waits == [1.0]
    first, second = apis["anthropic"].requests
    assert second.at - first.at >= 1.0


def test_retry_after_is_seconds_or_an_http_date():
    from datetime import UTC, datetime

    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after("7", now) == 7.0
    assert retry_after("Wed, 01 Jan 2025 12:00:30 GMT", now) == 30.0
    assert retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now) == 0.0
    assert retry_after("soon", now) is None
    assert retry_after(None, now) is None


def test_a_retry_after_longer_than_a_minute_is_a_failure_not_a_wait(ai, apis):
    ai.configure(apis)
    apis["openai"].reply(error(429, "quota", {"Retry-After": "3600"}))

    result = ai("-p", "openai", "Hi")

    assert result.code == cli.EXIT_ALL_FAILED
    assert result.waits == []
    assert ("ai-cli: openai (gpt-4o-mini) failed: HTTP 429: quota (test) (asked to wait 3600 s, "
            "more than 60 s)") in result.err_lines


def test_a_provider_that_does_not_answer_within_the_timeout_fails_after_its_retries(ai, apis):
    ai.configure(apis, maxRetries=1)
    apis["gemini"].reply(Reply(delay=3), Reply(delay=3))

    started = time.monotonic()
    result = ai("-p", "gemini", "-t", "0.5", "Hi")

    assert time.monotonic() - started < 2.5
    assert result.code == cli.EXIT_ALL_FAILED
    assert len(apis["gemini"].requests) == 2
    port = apis["gemini"].server.server_address[1]
    assert (f"ai-cli: gemini (gemini-1.5-flash) failed: 127.0.0.1:{port} did not answer within "
            "0.5 s (2 attempts)") in result.err_lines


def test_the_configurations_timeout_applies_without_t(ai, apis):
    ai.configure(apis, maxRetries=0, timeout=0.5)
    apis["ollama"].reply(Reply(delay=3))

    started = time.monotonic()
    result = ai("-p", "ollama", "Hi")

    assert time.monotonic() - started < 2
    assert "did not answer within 0.5 s (1 attempt)" in result.err


# --- failures that are not retried, and fallback ----------------------------------------------


@pytest.mark.parametrize("name", ["openai", "anthropic", "gemini", "ollama"])
def test_malformed_json_fails_the_provider_without_a_retry(ai, apis, name):
    ai.configure(apis)
    apis[name].reply(Reply(200, [b'data: {"choices": [{"delta": {"content": "x"\n\n']
                           if name != "ollama" else [b'{"message": {"content": \n'],
                           content_type=fake.CONTENT_TYPES[name]))

    result = ai("-p", name, "Hi")

    assert result.code == cli.EXIT_ALL_FAILED
    assert len(apis[name].requests) == 1
    assert re.search(rf"ai-cli: {name} \(.*\) failed: malformed JSON in the stream", result.err)


def test_a_stream_that_ends_early_is_a_failure(ai, apis):
    ai.configure(apis)
    apis["openai"].reply(Reply(200, fake.openai_stream("cut")[:-1]))  # no [DONE]

    result = ai("-p", "openai", "Hi")

    assert result.code == cli.EXIT_ALL_FAILED
    assert result.out == "cut\n"
    assert result.err_lines == ["ai-cli: openai (gpt-4o-mini) failed: the stream ended before "
                                "[DONE] after part of its answer was printed; not asking again"]


def test_an_anthropic_overloaded_error_event_is_retried(ai, apis):
    ai.configure(apis)
    overloaded = fake.sse(("error", {"type": "error", "error": {
        "type": "overloaded_error", "message": "Overloaded"}}))
    apis["anthropic"].reply(Reply(200, overloaded), answer("anthropic", "fine now"))

    result = ai("-p", "anthropic", "Hi")

    assert (result.code, result.out, len(apis["anthropic"].requests)) == (0, "fine now\n", 2)


@pytest.mark.parametrize("status", [401, 403, 400, 404])
def test_auth_and_request_errors_are_not_retried(ai, apis, status):
    ai.configure(apis)
    apis["openai"].reply(error(status, "no"))

    result = ai("-p", "openai", "Hi")

    assert result.code == cli.EXIT_ALL_FAILED
    assert len(apis["openai"].requests) == 1
    assert result.waits == []


def test_a_401_falls_back_to_the_next_provider_by_priority_and_says_so(ai, apis):
    ai.configure(apis, defaultProvider="openai")
    apis["openai"].reply(error(401, f"Incorrect API key provided: {KEYS['openai']}"))
    apis["anthropic"].reply(answer("anthropic", "Claude here"))

    result = ai("-f", "Hi")

    assert (result.code, result.out) == (0, "Claude here\n")
    assert len(apis["openai"].requests) == 1
    assert result.err_lines == [
        "ai-cli: openai (gpt-4o-mini) failed: HTTP 401: Incorrect API key provided: [redacted] "
        "(test); trying anthropic (claude-3-5-sonnet-20241022)",
        "ai-cli: anthropic (claude-3-5-sonnet-20241022) answered after openai failed"]
    no_key_anywhere(result, *apis.values())


def test_fallback_is_on_when_the_configuration_enables_it(ai, apis):
    ai.configure(apis, defaultProvider="gemini", enableFallback=True)
    apis["gemini"].reply(error(401, "bad key"))
    apis["openai"].reply(answer("openai", "OpenAI here"))

    result = ai("Hi")

    assert (result.code, result.out) == (0, "OpenAI here\n")
    assert result.err_lines[-1] == "ai-cli: openai (gpt-4o-mini) answered after gemini failed"


def test_every_provider_down_exits_with_all_failed(ai, apis):
    ai.configure({}, maxRetries=1)  # every baseUrl a closed loopback port

    result = ai("-f", "Hi")

    assert result.code == cli.EXIT_ALL_FAILED == 4
    assert result.out == ""
    failed = [line.split(" failed: ")[0] for line in result.err_lines[:-1]]
    assert failed == ["ai-cli: anthropic (claude-3-5-sonnet-20241022)",
                      "ai-cli: openai (gpt-4o-mini)", "ai-cli: gemini (gemini-1.5-flash)",
                      "ai-cli: ollama (mistral-small3.1)"]
    assert all("cannot connect to 127.0.0.1:9: Connection refused (2 attempts)" in line
               for line in result.err_lines[:-1])
    assert result.err_lines[-1] == "ai-cli: no answer: every provider asked failed"


def test_an_answer_that_breaks_off_midway_is_not_asked_again_elsewhere(ai, apis):
    ai.configure(apis, enableFallback=True)
    broken = [*fake.anthropic_stream("half an ")[:4], b"event: content_block_delta\ndata: {"]
    apis["anthropic"].reply(Reply(200, broken))

    result = ai("Hi")

    assert result.code == cli.EXIT_ALL_FAILED
    assert result.out == "half an \n"
    assert [len(api.requests) for api in apis.values()] == [0, 1, 0, 0]


# --- keys ------------------------------------------------------------------------------------


def test_a_missing_key_file_makes_its_provider_unavailable_with_the_reason(ai, apis):
    ai.configure(apis)
    (ai.keys / "api-openai").unlink()

    alone = ai("-p", "openai", "Hi")
    assert alone.code == cli.EXIT_NO_PROVIDER == 3
    assert alone.err_lines == [
        f"ai-cli: openai is not available (key file {ai.keys}/api-openai is missing)",
        "ai-cli: nothing asked: openai (from -p) is not available; available: anthropic, "
        "gemini, ollama (-f asks them too)"]
    assert apis["openai"].requests == []

    apis["anthropic"].reply(answer("anthropic", "ok"))
    fallback = ai("-p", "openai", "-f", "Hi")
    assert (fallback.code, fallback.out) == (0, "ok\n")
    assert fallback.err_lines == [
        f"ai-cli: openai is not available (key file {ai.keys}/api-openai is missing); trying "
        "anthropic (claude-3-5-sonnet-20241022)",
        "ai-cli: anthropic (claude-3-5-sonnet-20241022) answered after openai failed"]


def test_an_unreadable_or_empty_key_file_is_reported_and_never_read_aloud(ai, apis):
    ai.configure(apis)
    (ai.keys / "api-gemini").write_text("\n")
    (ai.keys / "api-anthropic").write_text("two\nlines\n")

    result = ai("--status", "--json")

    rows = {row["name"]: row for row in json.loads(result.out)["providers"]}
    assert rows["gemini"]["key"] == f"key file {ai.keys}/api-gemini is empty"
    assert rows["anthropic"]["key"] == (f"key file {ai.keys}/api-anthropic holds more than one "
                                        "word or line")
    assert not rows["gemini"]["available"] and rows["gemini"]["reachable"] is None
    if os.geteuid() != 0:  # root reads any file
        (ai.keys / "api-openai").chmod(0)
        rows = {row["name"]: row for row in json.loads(ai("-s", "--json").out)["providers"]}
        assert rows["openai"]["key_present"] is True
        assert rows["openai"]["key_readable"] is False


def test_no_key_in_output_logs_or_urls_even_verbose(ai, apis):
    ai.configure(apis, enableFallback=True, defaultProvider="openai")
    apis["openai"].reply(error(500, f"echo {KEYS['openai']}"), error(401, "no"))
    apis["anthropic"].reply(error(403, f"key {KEYS['anthropic']} is not allowed"))
    apis["gemini"].reply(answer("gemini", "ok"))

    result = ai("-v", "Hi")

    assert result.code == 0
    requests = [line for line in result.err_lines if " POST " in line]
    assert requests == [
        f"ai-cli: openai: POST {apis['openai'].base_url}/chat/completions "
        "(authorization: [redacted])"] * 2 + [
        f"ai-cli: anthropic: POST {apis['anthropic'].base_url}/v1/messages "
        "(anthropic-version: 2023-06-01, x-api-key: [redacted])",
        f"ai-cli: gemini: POST {apis['gemini'].base_url}/models/gemini-1.5-flash:"
        "streamGenerateContent?alt=sse (x-goog-api-key: [redacted])"]
    assert "ai-cli: openai: HTTP 500 Internal Server Error in " in result.err
    assert "[redacted]" in result.err
    no_key_anywhere(result, *apis.values())


def test_ai_cli_starts_no_process(ai, apis, monkeypatch):
    """No key can reach a process argument: ai-cli runs no program at all (the strace test
    below checks the same from outside)."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"ai-cli started a process: {args!r}")

    for name in ("execv", "execve", "execvp", "execvpe", "posix_spawn", "posix_spawnp",
                 "system", "fork", "popen"):
        monkeypatch.setattr(os, name, refuse)
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    ai.configure(apis, enableFallback=True)
    apis["anthropic"].reply(error(401, "no"))
    apis["openai"].reply(answer("openai", "ok"))

    assert ai("-v", "Hi").code == 0
    apis["ollama"].reply(Reply(200, [b'{"version": "0.5.7"}']),
                         Reply(200, [b'{"models": [{"name": "mistral-small3.1:latest"}]}']))
    assert ai("--status").code == 0


def test_no_key_reaches_a_process_argument_under_strace(ai, apis, tmp_path):
    """ai-cli as a program, traced: the only execve is its own start, and no key is in any
    argument (or anywhere in the trace)."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.fail("strace not found: install Debian's strace (scripts/setup does)")
    config = ai.configure(apis, enableFallback=True, defaultProvider="gemini")
    apis["gemini"].reply(error(401, "no"))
    apis["anthropic"].reply(answer("anthropic", "traced"))
    trace = tmp_path / "trace"
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARIABLES}
    env["AI_PROVIDERS_CONFIG"] = str(ai.config_file)

    result = subprocess.run(
        [strace, "-f", "-qq", "-s", "4096", "-e", "trace=execve", "-o", str(trace),
         sys.executable, "-m", "nixfleet.ai", "-v", "Hi"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)

    assert (result.returncode, result.stdout) == (0, "traced\n"), result.stderr
    execs = [line for line in trace.read_text().splitlines() if "execve(" in line]
    assert len(execs) == 1 and sys.executable in execs[0]
    for key in KEYS.values():
        assert key not in trace.read_text()
        assert key not in result.stdout + result.stderr
    assert config["providers"]["gemini"]["apiKeyFile"] not in execs[0]


# --- cost optimisation -----------------------------------------------------------------------


@pytest.mark.parametrize(("disabled", "provider", "model"), [
    ([], "gemini", "gemini-2.0-flash-exp"),  # free while experimental; priority 3 before 4
    (["gemini"], "ollama", "mistral-small3.1"),  # free too; the first of its models
    (["gemini", "ollama"], "openai", "gpt-4o-mini"),  # 0.15 + 0.6, below haiku's 0.8 + 4
])
def test_c_asks_the_cheapest_available_model_by_the_price_table(ai, apis, disabled, provider,
                                                                model):
    data = ai.configure(apis)
    for name in disabled:
        data["providers"][name]["enabled"] = False
    ai.config_file.write_text(json.dumps(data))
    apis[provider].reply(answer(provider, "cheap"))

    assert ai("-c", "Hi").out == "cheap\n"

    [request] = apis[provider].requests
    asked = request.path.split("/models/")[1].split(":")[0] if provider == "gemini" else (
        request.body["model"])
    assert asked == model
    assert sum(len(api.requests) for api in apis.values()) == 1


def test_c_ranks_by_input_plus_output_and_skips_providers_without_a_key(ai, apis):
    data = ai.configure(apis)
    data["providers"]["gemini"]["enabled"] = False
    data["providers"]["ollama"]["enabled"] = False
    data["providers"]["anthropic"]["prices"]["claude-3-5-haiku-20241022"] = {
        "input": 0.1, "output": 0.2}
    ai.config_file.write_text(json.dumps(data))
    apis["anthropic"].reply(answer("anthropic", "haiku"))
    apis["openai"].reply(answer("openai", "mini"))

    assert ai("-c", "Hi").out == "haiku\n"
    assert apis["anthropic"].requests[-1].body["model"] == "claude-3-5-haiku-20241022"

    (ai.keys / "api-anthropic").unlink()
    assert ai("-c", "Hi").out == "mini\n"
    assert apis["openai"].requests[-1].body["model"] == "gpt-4o-mini"


def test_c_with_p_asks_that_providers_cheapest_model_and_m_wins_over_c(ai, apis):
    ai.configure(apis, costOptimization=True)
    apis["anthropic"].reply(answer("anthropic", "a"), answer("anthropic", "b"))

    ai("-p", "anthropic", "Hi")
    ai("-p", "anthropic", "-m", "claude-3-opus-20240229", "Hi")

    assert [r.body["model"] for r in apis["anthropic"].requests] == [
        "claude-3-5-haiku-20241022", "claude-3-opus-20240229"]


def test_m_alone_asks_the_provider_that_lists_the_model(ai, apis):
    ai.configure(apis)
    apis["ollama"].reply(answer("ollama", "llama"))

    assert ai("-m", "llama3.2", "Hi").out == "llama\n"
    assert apis["ollama"].requests[0].body["model"] == "llama3.2"


# --- status and lists ------------------------------------------------------------------------


def test_status_shows_settings_keys_and_reachability_never_a_key(ai, apis):
    data = ai.configure(apis)
    data["providers"]["gemini"]["enabled"] = False
    ai.config_file.write_text(json.dumps(data))
    (ai.keys / "api-anthropic").unlink()
    apis["openai"].reply(Reply(200, [b'{"object": "list", "data": [{"id": "gpt-4o-mini"}]}'],
                               content_type="application/json"))
    tags = {"models": [{"name": "mistral-small3.1:latest"}, {"name": "llama3.2:latest"}]}
    apis["ollama"].reply(Reply(200, [b'{"version": "0.5.7"}'], content_type="application/json"),
                         Reply(200, [json.dumps(tags).encode()],
                               content_type="application/json"))

    result = ai("--status")

    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0] == (f"config {ai.config_file}; default provider anthropic (from "
                        f"{ai.config_file}); fallback off; cost optimisation off; timeout 5 s; "
                        "retries 2")
    table = [re.split(r"\s{2,}", line) for line in lines[2:]]
    assert table == [
        ["provider", "enabled", "priority", "default model", "key", "reachable"],
        ["openai", "yes", "1", "gpt-4o-mini", f"{ai.keys}/api-openai: readable",
         "yes: HTTP 200, 1 models listed"],
        ["anthropic", "yes", "2", "claude-3-5-sonnet-20241022",
         f"key file {ai.keys}/api-anthropic is missing", "not asked"],
        ["gemini", "no", "3", "gemini-1.5-flash", f"{ai.keys}/api-gemini: readable", "-"],
        ["ollama", "yes", "4", "mistral-small3.1", "not needed",
         "yes: Ollama 0.5.7, 2 models: llama3.2:latest, mistral-small3.1:latest"]]
    assert [(r.method, r.path) for r in apis["openai"].requests] == [("GET", "/v1/models")]
    assert apis["openai"].requests[0].headers["authorization"] == f"Bearer {KEYS['openai']}"
    assert [r.path for r in apis["ollama"].requests] == ["/api/version", "/api/tags"]
    assert apis["gemini"].requests == apis["anthropic"].requests == []
    no_key_anywhere(result, *apis.values())


def test_status_reports_a_rejected_key_and_a_down_provider(ai, apis):
    ai.configure(apis)
    apis["openai"].reply(error(401, "invalid key"))
    apis["anthropic"].reply(Reply(200, [b'{"data": []}'], content_type="application/json"))
    apis["gemini"].close()

    rows = {row["name"]: row for row in json.loads(ai("-s", "--json").out)["providers"]}

    assert (rows["openai"]["reachable"], rows["openai"]["ready"]) == (True, False)
    assert rows["openai"]["detail"] == "key rejected: HTTP 401: invalid key (test)"
    assert (rows["anthropic"]["reachable"], rows["anthropic"]["ready"]) == (True, True)
    assert (rows["gemini"]["reachable"], rows["gemini"]["ready"]) == (False, False)
    assert "Connection refused" in rows["gemini"]["detail"]
    assert apis["anthropic"].requests[0].headers["anthropic-version"] == "2023-06-01"


def test_status_exits_no_provider_when_none_is_ready(ai):
    ai.configure({})

    result = ai("-s", "--json")

    assert result.code == cli.EXIT_NO_PROVIDER
    status = json.loads(result.out)
    assert [p["ready"] for p in status["providers"]] == [False] * 4
    assert (status["defaultProvider"], status["enableFallback"], status["maxRetries"]) == (
        "anthropic", False, 2)


def test_list_providers_in_priority_order_with_their_state(ai, apis):
    data = ai.configure(apis)
    data["providers"]["ollama"]["enabled"] = False
    ai.config_file.write_text(json.dumps(data))
    (ai.keys / "api-gemini").unlink()

    result = ai("-l")

    assert [re.split(r"\s{2,}", line) for line in result.out.splitlines()] == [
        ["priority", "provider", "default model", "models", "state"],
        ["1", "openai", "gpt-4o-mini", "3", "available"],
        ["2", "anthropic", "claude-3-5-sonnet-20241022", "3", "available (default)"],
        ["3", "gemini", "gemini-1.5-flash", "3", f"key file {ai.keys}/api-gemini is missing"],
        ["4", "ollama", "mistral-small3.1", "2", "not enabled on this host"]]
    assert all(not request for request in (a.requests for a in apis.values()))


@pytest.mark.parametrize("columns", ["", "80", "50"])
def test_tables_fit_the_width_with_every_word(ai, apis, columns):
    """-l, -s and -M piped: $COLUMNS, else 80 columns (the provider list was 81 wide and
    --status 170); a cell too long wraps, a table that cannot fit is a block per provider."""
    if columns:
        ai.monkeypatch.setenv("COLUMNS", columns)
    else:
        ai.monkeypatch.delenv("COLUMNS")
    width = int(columns or 80)
    data = ai.configure(apis)
    data["providers"]["ollama"]["enabled"] = False
    ai.config_file.write_text(json.dumps(data))
    (ai.keys / "api-gemini").unlink()
    apis["openai"].reply(Reply(200, [b'{"object": "list", "data": [{"id": "gpt-4o-mini"}]}'],
                               content_type="application/json"))
    apis["anthropic"].reply(Reply(200, [b'{"data": []}'], content_type="application/json"))

    listing, status, models = ai("-l").out, ai("-s").out, ai("-M", "openai").out

    for out in (listing, status, models):
        assert max(len(line) for line in out.splitlines()) <= width, out
    listed = cells_by_column(listing, ("priority", "provider", "default model", "models",
                                       "state"))
    assert "claude-3-5-sonnet-20241022" in listed["default model"], listing
    for cell in ("available (default)", f"key file {ai.keys}/api-gemini is missing",
                 "not enabled on this host"):
        assert "".join(cell.split()) in listed["state"], listing
    settings, table = status.split("\n\n")
    assert "".join(settings.split()) == "".join((
        f"config {ai.config_file}; default provider anthropic (from {ai.config_file}); "
        "fallback off; cost optimisation off; timeout 5 s; retries 2").split())
    rows = cells_by_column(table, ("provider", "enabled", "priority", "default model", "key",
                                   "reachable"))
    for cell in (f"{ai.keys}/api-openai: readable", f"key file {ai.keys}/api-gemini is missing",
                 "not needed"):
        assert "".join(cell.split()) in rows["key"], status
    assert "yes:HTTP200,1modelslisted" in rows["reachable"], status
    for word in ("gpt-4o-mini", "gpt-4o", "default"):
        assert word in models.split(), models


def cells_by_column(out: str, headers: tuple[str, ...]) -> dict[str, str]:
    """Each column's text, whitespace left out, from a table or from its blocks."""
    lines = out.splitlines()
    texts = dict.fromkeys(headers, "")
    if lines[0].startswith(headers[0]):  # a table: columns start where their headers do
        starts = [lines[0].index(h) for h in headers]
        for line in lines[1:]:
            for name, start, end in zip(headers, starts, [*starts[1:], None], strict=True):
                texts[name] += "".join(line[start:end].split())
        return texts
    name = headers[0]
    for line in lines:
        if not line.startswith(" "):
            name = headers[0]
            texts[name] += line
        elif line.startswith("  ") and not line.startswith("   "):
            name, value = line[2:].split(":", 1)
            texts[name] += "".join(value.split())
        else:
            texts[name] += "".join(line.split())
    return texts


def test_a_table_too_wide_for_the_width_is_a_block_per_row():
    from nixfleet.ai import columns

    rows = [("priority", "provider", "default model", "state"),
            ("1", "anthropic", "claude-3-5-sonnet-20241022", "available (default)")]
    assert columns.table(rows, 30) == [
        "1",
        "  provider:      anthropic",
        "  default model: claude-3-5-so",
        "                 nnet-20241022",
        "  state:         available",
        "                 (default)"]
    assert columns.table(rows, 80) == [
        "priority  provider   default model               state",
        "1         anthropic  claude-3-5-sonnet-20241022  available (default)"]


def test_list_models_ollama_live_others_from_the_configuration(ai, apis):
    ai.configure(apis)
    tags = {"models": [{"name": "qwen2.5:7b"}, {"name": "mistral-small3.1:latest"}]}
    apis["ollama"].reply(Reply(200, [json.dumps(tags).encode()], content_type="application/json"))

    ollama = ai("-M", "ollama", "--json")
    gemini = ai("-p", "gemini", "-M")

    assert json.loads(ollama.out) == [
        {"provider": "ollama", "model": "mistral-small3.1:latest",
         "price": {"input": 0, "output": 0}, "default": True},
        {"provider": "ollama", "model": "qwen2.5:7b", "price": None, "default": False}]
    assert [re.split(r"\s{2,}", line) for line in gemini.out.splitlines()] == [
        ["provider", "model", "USD per 1M tokens in / out"],
        ["gemini", "gemini-1.5-flash", "0.075 / 0.3", "default"],
        ["gemini", "gemini-1.5-pro", "1.25 / 5"],
        ["gemini", "gemini-2.0-flash-exp", "0 / 0"]]
    assert apis["gemini"].requests == []


def test_list_models_says_when_ollama_cannot_be_asked(ai):
    ai.configure({})

    result = ai("-M", "ollama")

    assert result.code == cli.EXIT_ALL_FAILED
    assert result.err.startswith("ai-cli: ollama: cannot list its models: cannot connect to")


# --- usage, configuration, interruption ------------------------------------------------------


@pytest.mark.parametrize(("argv", "message"), [
    ([], "no prompt: give it as arguments or on stdin"),
    (["-p", "mistral", "Hi"], "-p: unknown provider 'mistral'"),
    (["-t", "0", "Hi"], "argument -t/--timeout: must be more than 0 seconds"),
    (["-s", "-l"], "argument -l/--list-providers: not allowed with argument -s/--status"),
    (["--json", "Hi"], "--json goes with --status, --list-providers or --list-models"),
    (["-s", "Hi"], "--status and --list-providers take no prompt"),
    (["-M", "nope"], "unknown provider 'nope'"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_bad_usage_exits_2(ai, argv, message):
    ai.configure({})
    result = ai(*argv)
    assert result.code == cli.EXIT_USAGE == 2
    assert message in result.err


def test_a_missing_or_broken_configuration_exits_1(ai):
    missing = ai("Hi")
    assert missing.code == cli.EXIT_CONFIG == 1
    assert missing.err == (f"ai-cli: {ai.config_file}: no such file (is features.ai.providers "
                           "enabled on this host? AI_PROVIDERS_CONFIG names another file)\n")
    data = ai.configure({})
    data["providers"]["openai"]["priority"] = "first"
    ai.config_file.write_text(json.dumps(data))
    assert ai("Hi").err == (f"ai-cli: {ai.config_file}: providers.openai.priority: expected an "
                            'integer, got "first"\n')


def test_ctrl_c_exits_130(ai, apis):
    ai.configure(apis)
    apis["openai"].reply(error(503, "busy"))

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    ai.monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code = cli.main(["-p", "openai", "Hi"], sleep=interrupted)

    assert code == cli.EXIT_INTERRUPTED == 130
    assert ai.capsys.readouterr().err.endswith("ai-cli: interrupted\n")


def test_ctrl_c_mid_answer_ends_the_answers_line_first(ai, apis, monkeypatch):
    from nixfleet.ai import ask

    ai.configure(apis)
    apis["openai"].reply(answer("openai", "half an ", "answer"))
    write = ask.Output.write

    def interrupted_after_the_first_piece(self: ask.Output, text: str) -> None:
        write(self, text)
        if text == "half an ":
            raise KeyboardInterrupt

    monkeypatch.setattr(ask.Output, "write", interrupted_after_the_first_piece)
    result = ai("-p", "openai", "Hi")

    assert result.code == cli.EXIT_INTERRUPTED
    assert (result.out, result.err) == ("half an \n", "ai-cli: interrupted\n")


def test_the_help_documents_the_exit_codes(ai):
    out = ai("--help").out
    for code, words in [(1, "the configuration file is missing"), (2, "bad usage"),
                        (3, "no provider available"), (4, "every provider asked failed"),
                        (130, "interrupted")]:
        assert re.search(rf"^  {code}\s+{words}", out, re.MULTILINE), (code, out)


def test_ai_cli_needs_only_the_standard_library_and_httpx():
    """What a host without the rest of nixfleet's dependencies runs (the lab: Debian's
    python3 and python3-httpx)."""
    import ast

    imported = set()
    for path in (ROOT / "nixfleet" / "ai").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module)
    outside = {name for name in imported if name.split(".")[0] not in sys.stdlib_module_names
               and name != "httpx" and not name.startswith("nixfleet.ai")}
    assert outside == set()


# --- the streaming formats -------------------------------------------------------------------


def test_sse_events_follow_the_format():
    text = (b": comment\r\nevent: a\r\ndata: one\r\ndata: two\r\n\r\n"
            b"id: 7\nretry: 10\ndata:{\"x\": 1}\n\ndata: last")
    chunked = [text[i:i + 3] for i in range(0, len(text), 3)]

    events = list(streams.sse_events(streams.lines(chunked)))

    assert events == [streams.Event("a", "one\ntwo"), streams.Event("message", '{"x": 1}'),
                      streams.Event("message", "last")]


def test_a_utf8_character_split_across_chunks_is_whole():
    data = "data: Grüße\n\n".encode()
    split = data.index("ü".encode()) + 1
    events = list(streams.sse_events(streams.lines([data[:split], data[split:]])))
    assert events == [streams.Event("message", "Grüße")]


# --- the configuration the flake renders -----------------------------------------------------


def test_the_flakes_configuration_loads_and_prices_every_model(tmp_path):
    if shutil.which("nix-instantiate") is None:
        pytest.fail("nix-instantiate not found: install Debian's nix-bin (scripts/setup does)")
    rendered = nixcheck.evaluate("""{ nixDir }: let lib = /. + nixDir + "/lib"; in
      builtins.mapAttrs (name: data: import (lib + "/ai-providers.nix") {
        settings = data.features.ai.providers;
      }) (import (lib + "/fleet.nix") { hostsDir = /. + nixDir + "/hosts"; }).hosts
    """, nixDir=str(ROOT / "nix"))

    for host, data in rendered.items():
        config = parse_config(data, Path(f"/{host}/etc/ai-providers.json"))
        for provider in config.providers.values():
            assert set(provider.prices) == set(provider.models), (host, provider.name)
            assert provider.default_model in provider.models
    p620 = parse_config(rendered["p620"], Path("p620"))
    assert {name: (p.prices[p.default_model].input, p.prices[p.default_model].output)
            for name, p in p620.providers.items()} == {
        "openai": (0.15, 0.6), "anthropic": (3.0, 15.0), "gemini": (0.075, 0.3),
        "ollama": (0, 0)}
    assert [p.name for p in p620.by_priority() if p.enabled] == [
        "openai", "anthropic", "gemini", "ollama"]
    dex5550 = parse_config(rendered["dex5550"], Path("dex5550"))
    assert not dex5550.providers["ollama"].enabled


def test_a_model_without_a_price_fails_the_flakes_evaluation(tmp_path):
    if shutil.which("nix-instantiate") is None:
        pytest.fail("nix-instantiate not found: install Debian's nix-bin (scripts/setup does)")
    lib = tmp_path / "lib"
    shutil.copytree(ROOT / "nix" / "lib", lib)
    source = (lib / "ai-providers.nix").read_text()
    (lib / "ai-providers.nix").write_text(source.replace(
        '"gpt-3.5-turbo"\n      ];', '"gpt-3.5-turbo"\n        "gpt-5"\n      ];', 1))
    with pytest.raises(Exception, match=r"ai-providers.nix: no price for openai/gpt-5"):
        nixcheck.evaluate("""{ lib }: import (/. + lib + "/ai-providers.nix") { settings = {
            defaultProvider = "openai"; enableFallback = true; costOptimization = false;
            timeout = 30; maxRetries = 3; enabled = [ "openai" ]; }; }""", lib=str(lib))


def test_load_config_names_the_file_and_field(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{")
    with pytest.raises(ConfigError, match=r"c.json: not JSON"):
        load_config(path)
    path.write_text(json.dumps({"defaultProvider": "x", "enableFallback": True,
                                "costOptimization": False, "timeout": 30, "maxRetries": 3,
                                "providers": {}}))
    with pytest.raises(ConfigError, match=r"defaultProvider: 'x' is not one of the providers"):
        load_config(path)


@pytest.mark.parametrize(("change", "message"), [
    ({"defaultModel": "gpt-5"},
     "providers.openai.defaultModel: 'gpt-5' is not one of its models (gpt-4o-mini, gpt-4o, "
     "gpt-3.5-turbo)"),
    ({"models": [], "prices": {}},
     "providers.openai.models: empty (a provider needs at least one model)"),
    ({"baseUrl": "api.openai.com/v1"},
     "providers.openai.baseUrl: 'api.openai.com/v1' is no http:// or https:// URL"),
])
def test_a_provider_that_cannot_work_is_one_line_at_load(ai, apis, change, message):
    data = ai.configure(apis)
    data["providers"]["openai"].update(change)
    ai.config_file.write_text(json.dumps(data))

    for argv in (["Hi"], ["-l"]):
        result = ai(*argv)
        assert (result.code, result.err) == (cli.EXIT_CONFIG, f"ai-cli: {ai.config_file}: "
                                                              f"{message}\n")


def test_an_unknown_provider_type_is_one_line_at_load(ai, apis):
    data = ai.configure(apis)
    data["providers"]["mistral"] = data["providers"]["openai"]
    ai.config_file.write_text(json.dumps(data))

    result = ai("-s")
    assert (result.code, result.err) == (cli.EXIT_CONFIG, (
        f"ai-cli: {ai.config_file}: providers.mistral: unknown provider type (ai-cli speaks "
        "openai, anthropic, gemini, ollama)\n"))
    from nixfleet.ai.config import APIS
    from nixfleet.ai.providers import PROVIDERS
    assert set(PROVIDERS) == set(APIS)


# --- the lab's Ollama stand-in ---------------------------------------------------------------


def test_ai_cli_answers_from_the_labs_ollama_stand_in(ai, tmp_path):
    from tests.unit.test_standins import Ollama

    server = Ollama(tmp_path / "ollama")
    server.serve("--load-models", "mistral-small3.1,llama3.2")
    try:
        data = ai.configure({})
        data["providers"]["ollama"]["baseUrl"] = f"http://127.0.0.1:{server.port}"
        ai.config_file.write_text(json.dumps(data))

        result = ai("-p", "ollama", "what runs in the lab?")
        status = {row["name"]: row for row in json.loads(ai("-s", "--json").out)["providers"]}
    finally:
        server.stop()

    assert (result.code, result.err) == (0, "")
    assert result.out == ('Lab stand-in for Ollama (mistral-small3.1), no model ran. You said: '
                          '"what runs in the lab?"\n')
    assert status["ollama"]["ready"] is True
    assert status["ollama"]["live_models"] == ["llama3.2:latest", "mistral-small3.1:latest"]
    assert status["ollama"]["detail"].startswith("Ollama 0.5.7, 2 models")


# --- the NixOS module: commands, aliases, ai-switch --------------------------------------------


def module_shell(host: str) -> dict[str, Any]:
    """nix/modules/features/ai.nix for `host`, evaluated with a stub lib: what it puts into
    the environment when ai.providers is enabled."""
    if shutil.which("nix-instantiate") is None:
        pytest.fail("nix-instantiate not found: install Debian's nix-bin (scripts/setup does)")
    return nixcheck.evaluate("""{ nixDir, stubs, host }:
      let
        dir = /. + nixDir;
        fleet = import (dir + "/lib/fleet.nix") { hostsDir = dir + "/hosts"; };
        config = {
          nixfleet.features.ai = fleet.hosts.${host}.features.ai;
          nixfleet.package = "nixfleet-host";
        };
        module = import (dir + "/modules/features/ai.nix")
          (import (/. + stubs) // { inherit config; });
        providers = builtins.elemAt module.config.content.contents 1;
      in {
        enabled = providers.condition;
        inherit (providers.content.environment) shellAliases interactiveShellInit
          systemPackages;
        etc = builtins.attrNames providers.content.environment.etc;
      }""", nixDir=str(ROOT / "nix"), host=host,
        stubs=str(nixcheck.EXPRESSIONS / "stub-module-args.nix"))


def test_the_module_installs_ai_cli_with_the_originals_aliases():
    module = module_shell("p620")

    assert module["enabled"] is True
    assert module["systemPackages"] == ["nixfleet-host"]
    assert module["etc"] == ["ai-providers.json"]
    assert module["shellAliases"] == {
        "ai": "ai-cli", "chat": "ai-cli", "aii": "ai-cli", "aif": "ai-cli --fallback",
        "aic": "ai-cli --cost-optimize", "ai-status": "ai-cli --status",
        "ai-models": "ai-cli --list-models"}
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["ai-cli"] == scripts["ai-chat"] == "nixfleet.ai.cli:main"


def test_ai_switch_sets_the_default_for_this_shell_only_to_an_enabled_provider(ai, tmp_path):
    module = module_shell("dex5550")  # cloud providers only
    ai.configure({})
    aliases = "".join(f"alias {name}={shlex.quote(value)}\n"
                      for name, value in module["shellAliases"].items())
    # ai-cli as a shell function that runs this checkout's (no program on PATH).
    script = (f"ai-cli() {{ {shlex.quote(sys.executable)} -m nixfleet.ai \"$@\"; }}\n"
              "shopt -s expand_aliases\n" + aliases + module["interactiveShellInit"] + """
ai-switch gemini
ai-status --json | grep -o '"defaultProvider.*'
ai-switch ollama; echo "rc=$?"
ai-switch; echo "rc=$?"
echo "now $AI_DEFAULT_PROVIDER"
""")
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARIABLES}
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=False)

    assert result.stdout.splitlines() == [
        "ai-switch: ai-cli asks gemini first in this shell",
        '"defaultProvider": "gemini",',
        '"defaultProviderFrom": "AI_DEFAULT_PROVIDER",',
        "rc=2", "rc=2", "now gemini"]
    assert result.stderr.splitlines() == [
        "ai-switch: 'ollama' is not an enabled provider (enabled here: openai anthropic gemini)",
        "usage: ai-switch PROVIDER (enabled here: openai anthropic gemini)"]
    # The shell that ran ai-switch only: not this process's environment.
    assert "AI_DEFAULT_PROVIDER" not in os.environ
