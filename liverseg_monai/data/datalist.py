"""The one data contract shared by every bundle (see docs/bundles.md).

``DATASET_DIR/dataset.json`` follows the MSD / Auto3DSeg datalist format::

    {"training":   [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz", "fold": 0}, ...],
     "validation": [{"image": ..., "label": ...}, ...],           # optional when folds are given
     "testing":    [{"image": "imagesTs/c.nii.gz"}, "imagesTs/d.nii.gz", ...]}

Paths are relative to the dataset folder and must stay inside it. Training reads ``training`` and
``validation``; evaluation reads ``validation``; inference reads ``testing``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from liverseg_monai.errors import DatasetError

DATALIST_NAME = "dataset.json"
PATH_KEYS = ("image", "label")


def _resolve(root: Path, rel, datalist: Path, index: int, key: str, field: str, check_exists: bool):
    if isinstance(rel, list | tuple):
        return [_resolve(root, r, datalist, index, key, field, check_exists) for r in rel]
    if not isinstance(rel, str) or not rel:
        raise DatasetError(datalist, f"{key}[{index}].{field} must be a non-empty path string, got {rel!r}")
    if os.path.isabs(rel):
        raise DatasetError(datalist, f"{key}[{index}].{field} is absolute ({rel}); paths must be relative to the dataset folder")
    # normalise ".." without following links: a prepared dataset may link to files stored elsewhere
    base = Path(os.path.abspath(root))
    full = Path(os.path.abspath(base / rel))
    if base not in full.parents:
        raise DatasetError(datalist, f"{key}[{index}].{field} points outside the dataset folder: {rel}")
    if check_exists and not full.exists():
        raise DatasetError(full, f"listed in {datalist} ({key}[{index}].{field}) but does not exist")
    return str(full)


def load_datalist(
    dataset_dir: str | os.PathLike,
    key: str = "training",
    fold: int | None = None,
    require: Sequence[str] = ("image",),
    check_exists: bool = True,
) -> list[dict]:
    """Read ``key`` from ``dataset_dir/dataset.json`` with absolute, checked paths.

    Args:
        dataset_dir: the dataset folder (``--dataset_dir``).
        key: ``training``, ``validation`` or ``testing``.
        fold: with folds in ``training``: ``key="validation"`` falls back to the training items of this
            fold when there is no ``validation`` list, and ``key="training"`` leaves this fold out.
        require: fields every item must have (for example ``("image", "label")`` for training).
        check_exists: raise when a listed file is missing.

    Returns:
        a list of dicts; string items (allowed in ``testing``) become ``{"image": path}``.

    Raises:
        DatasetError: naming dataset.json or the listed file, for every breach of the contract.
    """
    root = Path(dataset_dir)
    datalist = root / DATALIST_NAME
    if not root.is_dir():
        raise DatasetError(root, "dataset folder does not exist")
    if not datalist.is_file():
        raise DatasetError(datalist, "missing: every dataset folder needs a dataset.json (MSD/Auto3DSeg datalist)")
    try:
        content = json.loads(datalist.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(datalist, f"not valid JSON ({err})") from None
    if not isinstance(content, dict):
        raise DatasetError(datalist, "must hold a JSON object with training/validation/testing lists")

    items = content.get(key)
    if key == "validation" and not items and fold is not None:
        items = [it for it in content.get("training", []) if isinstance(it, dict) and it.get("fold") == fold]
    elif key == "training" and fold is not None and items:
        items = [it for it in items if not (isinstance(it, dict) and it.get("fold") == fold)]
    if not items:
        raise DatasetError(datalist, f"has no '{key}' items" + (f" (fold {fold})" if fold is not None else ""))
    if not isinstance(items, list):
        raise DatasetError(datalist, f"'{key}' must be a list")

    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = {"image": item}
        if not isinstance(item, dict):
            raise DatasetError(datalist, f"{key}[{i}] must be an object or a path string, got {type(item).__name__}")
        missing = [f for f in require if f not in item]
        if missing:
            raise DatasetError(datalist, f"{key}[{i}] lacks {', '.join(missing)}")
        item = dict(item)
        for field in PATH_KEYS:
            if field in item:
                item[field] = _resolve(root, item[field], datalist, i, key, field, check_exists)
        out.append(item)
    return out


def write_datalist(dataset_dir: str | os.PathLike, content: dict) -> Path:
    """Write ``dataset.json`` (atomically) with paths already relative to ``dataset_dir``."""
    from liverseg_monai.io.atomic import atomic_write_text

    path = Path(dataset_dir) / DATALIST_NAME
    atomic_write_text(path, json.dumps(content, indent=2))
    return path
