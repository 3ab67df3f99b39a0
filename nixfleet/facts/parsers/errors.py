"""The one error every fact parser raises when a tool's output makes no sense."""

from __future__ import annotations

from typing import Any, ClassVar

_EXCERPT_CHARS = 120


class FactParseError(ValueError):
    """A tool printed something its parser cannot read.

    It is a ``ValueError`` for callers of the pure parsers. Once the pyinfra facts are
    imported, every FactParseError raised is also pyinfra's ``FactProcessError`` (see
    ``raised_as``), so a fact reports "could not process fact" for that host instead of a
    traceback.

    + tool: the command whose output was unreadable (``nvidia-smi``, ``systemctl``...)
    + problem: what was wrong, in a few words
    + output: the offending text; its start is quoted in the message
    """

    # nixfleet.facts.errors sets this to a subclass that is also pyinfra's FactProcessError.
    # The parsers cannot import pyinfra themselves: the exporters run them on hosts without it.
    raised_as: ClassVar[type[FactParseError] | None] = None

    def __new__(cls, *args: Any, **kwargs: Any) -> FactParseError:
        concrete = FactParseError.raised_as if cls is FactParseError else None
        return super().__new__(concrete or cls, *args, **kwargs)

    def __init__(self, tool: str, problem: str, output: str = "") -> None:
        message = f"{tool}: {problem}"
        excerpt = output.strip()
        if excerpt:
            if len(excerpt) > _EXCERPT_CHARS:
                excerpt = excerpt[:_EXCERPT_CHARS] + "..."
            message += f" (output: {excerpt!r})"
        super().__init__(message)
        self.tool = tool
        self.problem = problem
