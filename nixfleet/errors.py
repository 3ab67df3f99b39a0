"""One error type whose message is the single line a user sees."""

from __future__ import annotations

from types import FrameType, TracebackType


class NixfleetError(Exception):
    """A failure explained in one line; the CLI prints it and exits non-zero."""


class InventoryError(NixfleetError):
    """Bad fleet data, raised before any SSH."""


def for_pyinfra(error: NixfleetError, caller: FrameType | None = None) -> Exception:
    """The same error as a PyinfraError too, which pyinfra prints as one line (not a
    traceback). Made here, on demand, so that nixfleet's own commands need not import
    pyinfra (a third of their start-up).

    pyinfra names the innermost frame of the error's traceback outside pyinfra ("pyinfra error
    in FILE line N"), which would be nixfleet's own code that raised it. With `caller` (the
    user's inventory.py or deploy file, which called nixfleet) that frame ends the traceback,
    so the line names the user's file and the line of that call.
    """
    from pyinfra.api.exceptions import PyinfraError

    wrapped = type(f"Pyinfra{type(error).__name__}", (type(error), PyinfraError), {})(str(error))
    if caller is not None:
        wrapped = wrapped.with_traceback(
            TracebackType(None, caller, caller.f_lasti, caller.f_lineno))
    return wrapped
