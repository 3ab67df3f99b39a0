"""Building PromQL text: label selectors, so no rule or panel hand-writes braces and quotes."""

from __future__ import annotations

import json

# Byte multiples as PromQL arithmetic, so a threshold reads as written: `50 * 1024^3`.
GIB = "1024^3"
MIB = "1024^2"


def eq(label: str, value: str) -> str:
    """A `label="value"` matcher (the value quoted as PromQL's double-quoted strings are)."""
    return f"{label}={json.dumps(value)}"


def ne(label: str, value: str) -> str:
    return f"{label}!={json.dumps(value)}"


def re_match(label: str, pattern: str) -> str:
    return f"{label}=~{json.dumps(pattern)}"


def re_not(label: str, pattern: str) -> str:
    return f"{label}!~{json.dumps(pattern)}"


def selector(metric: str, *matchers: str) -> str:
    """`metric{m1,m2}`, or the bare metric name when there are no matchers."""
    return f"{metric}{{{','.join(matchers)}}}" if matchers else metric
