"""The one error every fact parser raises when a tool's output makes no sense."""

from __future__ import annotations

from pyinfra.api.exceptions import FactProcessError

_EXCERPT_CHARS = 120


class FactParseError(FactProcessError, ValueError):
    """A tool printed something its parser cannot read.

    It is a ``ValueError`` for callers of the pure parsers, and a pyinfra
    ``FactProcessError`` so a fact reports it as "could not process fact" for that host
    instead of a traceback.

    + tool: the command whose output was unreadable (``nvidia-smi``, ``systemctl``...)
    + problem: what was wrong, in a few words
    + output: the offending text; its start is quoted in the message
    """

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
