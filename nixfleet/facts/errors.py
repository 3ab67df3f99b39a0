"""The one error every fact parser raises when a tool's output makes no sense, as pyinfra
sees it.

The parsers (nixfleet.facts.parsers) raise FactParseError without importing pyinfra; this
module, which every fact imports, makes each one raised also a pyinfra ``FactProcessError``.
"""

from __future__ import annotations

from pyinfra.api.exceptions import FactProcessError

from nixfleet.facts.parsers.errors import FactParseError

__all__ = ["FactParseError", "PyinfraFactParseError"]


class PyinfraFactParseError(FactParseError, FactProcessError):
    """A FactParseError that pyinfra reports as "could not process fact" for that host."""


FactParseError.raised_as = PyinfraFactParseError
