"""One error type whose message is the single line a user sees."""

from __future__ import annotations

from pyinfra.api.exceptions import PyinfraError


class NixfleetError(Exception):
    """A failure explained in one line; the CLI prints it and exits non-zero."""


class InventoryError(NixfleetError, PyinfraError):
    """Bad fleet data, raised before any SSH. pyinfra prints PyinfraError as one line too."""
