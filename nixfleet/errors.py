"""One error type whose message is the single line a user sees."""

from __future__ import annotations


class NixfleetError(Exception):
    """A failure explained in one line; the CLI prints it and exits non-zero."""


class InventoryError(NixfleetError):
    """Bad fleet data, raised before any SSH."""


def for_pyinfra(error: InventoryError) -> Exception:
    """The same error as a PyinfraError too, which pyinfra prints as one line (not a
    traceback). Made here, on demand, so that nixfleet's own commands need not import
    pyinfra (a third of their start-up)."""
    from pyinfra.api.exceptions import PyinfraError

    class PyinfraInventoryError(InventoryError, PyinfraError):
        pass

    return PyinfraInventoryError(str(error))
