"""ai-cli's stderr: what always shows (failures, fallback) and what -v adds (each request and
its status), with every key read this run replaced by [redacted] in every line."""

from __future__ import annotations

import sys
from typing import TextIO

from nixfleet.ai.config import ApiKey

REDACTED = "[redacted]"


class Log:
    def __init__(self, prog: str = "ai-cli", verbose: bool = False,
                 stream: TextIO | None = None):
        self.prog = prog
        self.verbose = verbose
        self._stream = stream
        self._secrets: list[str] = []

    def secret(self, key: ApiKey) -> None:
        """From now on, `key` never appears in a line of this log."""
        if key.reveal() not in self._secrets:
            self._secrets.append(key.reveal())

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def say(self, message: str) -> None:
        stream = self._stream or sys.stderr
        stream.write(self.redact(f"{self.prog}: {message}") + "\n")
        stream.flush()

    def debug(self, message: str) -> None:
        if self.verbose:
            self.say(message)
