"""Asking: one provider with retries, then the next ones when it fails (fallback).

A transient failure (no connection, a timeout, 5xx, 429) is retried up to maxRetries times,
after Retry-After when the provider sent one (at most MAX_RETRY_AFTER seconds), else after an
exponential backoff (0.5 s, 1 s, 2 s, ... at most 8 s). An authentication or request error
(401, 403, 400, 404) or a malformed answer is not retried. Once part of an answer has been
printed nothing is retried or asked elsewhere: the output would mix two answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

from nixfleet.ai.errors import FailureKind, ProviderError
from nixfleet.ai.log import Log
from nixfleet.ai.providers import Provider
from nixfleet.ai.routing import Step
from nixfleet.ai.transport import Transport

BACKOFF_BASE = 0.5
BACKOFF_MAX = 8.0
# A provider that asks for a longer pause is treated as failed (fallback may go on).
MAX_RETRY_AFTER = 60.0


@dataclass(frozen=True)
class Failure:
    provider: str
    model: str
    kind: FailureKind
    reason: str

    def __str__(self) -> str:
        if self.kind is FailureKind.UNAVAILABLE:
            return f"{self.provider} is not available ({self.reason})"
        return f"{self.provider} ({self.model}) failed: {self.reason}"


@dataclass(frozen=True)
class Outcome:
    """Who answered (None: nobody), every failure before, and whether the last failure came
    after part of its answer was printed."""

    answered: Step | None
    failures: tuple[Failure, ...]
    partial: bool = False

    @property
    def tried(self) -> bool:
        """Whether any request was sent (else no provider was available at all)."""
        return self.answered is not None or any(
            f.kind is not FailureKind.UNAVAILABLE for f in self.failures)


class Output:
    """The answer on stdout, as it arrives."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.started = False
        self._ends_with_newline = True

    def write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
        self.started = True
        self._ends_with_newline = text.endswith("\n")

    def finish(self) -> None:
        """End the answer with a newline (a terminal's prompt then starts on its own line)."""
        if self.started and not self._ends_with_newline:
            self.write("\n")


def backoff(retry: int) -> float:
    """Seconds before retry number `retry` (0 for the first)."""
    return float(min(BACKOFF_BASE * 2 ** retry, BACKOFF_MAX))


def ask(provider: Provider, model: str, prompt: str, transport: Transport, out: Output,
        max_retries: int, log: Log, sleep: Callable[[float], None] = time.sleep) -> None:
    """Stream one provider's answer to `out`, retrying transient failures."""
    retries = 0
    while True:
        try:
            for text in provider.texts(transport.lines(provider.name,
                                                       provider.chat_request(model, prompt))):
                out.write(text)
            return
        except ProviderError as error:
            if out.started or not error.kind.retryable:
                raise
            if retries >= max_retries:
                attempts = f"{retries + 1} attempt{'s' if retries else ''}"
                raise ProviderError(error.kind, f"{error} ({attempts})",
                                    status=error.status) from None
            wait = error.retry_after if error.retry_after is not None else backoff(retries)
            if wait > MAX_RETRY_AFTER:
                raise ProviderError(error.kind, f"{error} (asked to wait {wait:.0f} s, more "
                                    f"than {MAX_RETRY_AFTER:.0f} s)", status=error.status
                                    ) from None
            retries += 1
            why = "Retry-After" if error.retry_after is not None else "backoff"
            log.debug(f"{provider.name}: {error}; retry {retries}/{max_retries} in {wait:.1f} s "
                      f"({why})")
            sleep(wait)


def ask_in_turn(steps: Sequence[Step], providers: Mapping[str, Provider], prompt: str,
                transport: Transport, out: Output, max_retries: int, log: Log,
                sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """Ask each step's provider in turn until one answers; say on stderr who failed and who
    answered after them."""
    failures: list[Failure] = []
    for index, step in enumerate(steps):
        following = steps[index + 1] if index + 1 < len(steps) else None
        then = f"; trying {following.provider} ({following.model})" if following else ""
        if step.problem is not None:
            failures.append(Failure(step.provider, step.model, FailureKind.UNAVAILABLE,
                                    step.problem))
            log.say(f"{failures[-1]}{then}")
            continue
        log.debug(f"asking {step.provider} ({step.model})")
        try:
            ask(providers[step.provider], step.model, prompt, transport, out, max_retries, log,
                sleep)
        except ProviderError as error:
            failures.append(Failure(step.provider, step.model, error.kind, str(error)))
            if out.started:
                out.finish()
                log.say(f"{failures[-1]} after part of its answer was printed; not asking "
                        "again")
                return Outcome(None, tuple(failures), partial=True)
            log.say(f"{failures[-1]}{then}")
            continue
        out.finish()
        if failures:
            log.say(f"{step.provider} ({step.model}) answered after "
                    f"{_listing([f.provider for f in failures])} failed")
        return Outcome(step, tuple(failures))
    return Outcome(None, tuple(failures))


def _listing(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
