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
