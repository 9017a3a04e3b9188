"""The error contract: every problem with an input names the file and says what is wrong.

Catch :class:`LiversegError` at a command-line boundary and print ``str(err)``; it is written to be
read by a person, not a stack trace.
"""

from __future__ import annotations

import os


class LiversegError(Exception):
    """Base class for all errors raised on purpose by liverseg_monai."""


class InputError(LiversegError, ValueError):
    """An input file (image, label, table, slide, datalist) is missing, unreadable or inconsistent.

    Args:
        path: the offending file or folder (or several, joined for the message).
        problem: what is wrong, in words a user can act on.
    """

    def __init__(self, path: str | os.PathLike | list | tuple | None, problem: str):
        if isinstance(path, list | tuple):
            shown = ", ".join(str(p) for p in path)
        else:
            shown = str(path) if path is not None else "<no file>"
        self.path = path
        self.problem = problem
        super().__init__(f"{shown}: {problem}")


class DatasetError(InputError):
    """The dataset folder or its dataset.json breaks the data contract (docs/bundles.md)."""


class ConfigError(LiversegError, ValueError):
    """A bundle configuration value is invalid."""


def find_error(exc: BaseException | None) -> LiversegError | None:
    """The first :class:`LiversegError` in an exception's cause/context chain (MONAI wraps errors
    raised inside transforms and config expressions in ``RuntimeError``\\s)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, LiversegError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _excepthook(exc_type, exc, tb, _previous=None):
    import sys

    err = find_error(exc)
    if err is None or os.environ.get("LIVERSEG_DEBUG"):
        (_previous or sys.__excepthook__)(exc_type, exc, tb)
        if err is not None:
            print(f"error: {err}", file=sys.stderr)
        return
    print(f"error: {err}\n(set LIVERSEG_DEBUG=1 for the full traceback)", file=sys.stderr)


def install_excepthook() -> None:
    """Make an uncaught error end with one clear line naming the file and the problem.

    Installed when ``liverseg_monai`` is imported (every bundle config imports it), so
    ``python -m monai.bundle run`` on a bad input exits non-zero with ``error: PATH: problem`` rather
    than only a deep traceback of MONAI's wrappers. ``LIVERSEG_DEBUG=1`` shows the traceback too.
    """
    import functools
    import sys

    if getattr(sys.excepthook, "__liverseg__", False):
        return
    hook = functools.partial(_excepthook, _previous=sys.excepthook)
    hook.__liverseg__ = True  # type: ignore[attr-defined]
    sys.excepthook = hook
