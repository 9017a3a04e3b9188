"""Every CSV table the project writes goes through :func:`write_table`.

One writer keeps tables alike: written atomically (a crash leaves the previous file or none, never a
partial table, see :mod:`liverseg_monai.io.atomic`), columns in a stable order (the ones given, else
each key in the order it is first seen across the rows), ``csv`` module quoting.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

from liverseg_monai.io.atomic import atomic_write_text


def table_columns(rows: Iterable[Mapping]) -> list[str]:
    """Every key of ``rows``, in the order each is first seen.

    >>> table_columns([{"case": "a", "dice": 0.9}, {"case": "b", "hd95": 3.0}])
    ['case', 'dice', 'hd95']
    """
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def table_text(
    rows: Iterable[Mapping | Sequence],
    columns: Sequence[str] | None = None,
    extra: Literal["raise", "ignore"] = "raise",
    lineterminator: str = "\r\n",
) -> str:
    """CSV text of ``rows`` under a header row.

    Args:
        rows: one mapping per row (missing keys are left empty), or one sequence of values per row
            in the order of ``columns``.
        columns: the columns in order; by default every key of the rows in first-seen order
            (:func:`table_columns`). Required for sequence rows.
        extra: what a mapping key outside ``columns`` does: ``"raise"`` a ``ValueError`` or is
            ``"ignore"``-d.
        lineterminator: the row separator (the ``csv`` module's ``"\\r\\n"`` by default).

    >>> table_text([{"case": "a", "dice": 0.5}], lineterminator="\\n")
    'case,dice\\na,0.5\\n'
    >>> table_text([["liver", 3]], columns=["class", "pixels"], lineterminator="\\n")
    'class,pixels\\nliver,3\\n'
    """
    rows = list(rows)
    if columns is None:
        if any(not isinstance(r, Mapping) for r in rows):
            raise ValueError("table_text: rows given as sequences need their columns")
        columns = table_columns(rows)
    columns = list(columns)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=lineterminator)
    writer.writerow(columns)
    for row in rows:
        if isinstance(row, Mapping):
            unknown = [k for k in row if k not in columns] if extra == "raise" else []
            if unknown:
                raise ValueError(f"table_text: row keys {unknown} are not among the columns {columns}")
            row = [row.get(c, "") for c in columns]
        elif len(row) != len(columns):
            raise ValueError(f"table_text: a row of {len(row)} values for {len(columns)} columns")
        writer.writerow(row)
    return buf.getvalue()


def write_table(
    path: str | os.PathLike,
    rows: Iterable[Mapping | Sequence],
    columns: Sequence[str] | None = None,
    extra: Literal["raise", "ignore"] = "raise",
    lineterminator: str = "\r\n",
) -> Path:
    """Write ``rows`` as a CSV table at ``path``, atomically; returns ``path``.

    Arguments as for :func:`table_text`; the parent folder is created.

    Example:
        >>> write_table(out / "per_case.csv", [{"case": "a", "liver_dice": 0.97}])  # doctest: +SKIP
    """
    path = Path(path)
    atomic_write_text(path, table_text(rows, columns, extra=extra, lineterminator=lineterminator))
    return path
