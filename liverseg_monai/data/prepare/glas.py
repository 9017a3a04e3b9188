"""GlaS (official layout) -> dataset folder: ``python -m liverseg_monai prepare glas --src DIR --out D``.

Writes ``D/images/<name>.png`` (RGB), ``D/labels/<name>.png`` (0 background, 1 gland: the semantic
target), ``D/instances/<name>.png`` (16-bit gland instances 1..N for the object-level metrics) and
``D/dataset.json``: ``training`` (``train_*`` with folds, less a seeded validation share),
``validation`` and ``testing`` (``testA_*`` then ``testB_*``, labelled). Items carry ``instance``,
``split`` (train/testA/testB) and ``grade`` (from ``Grade.csv``). Nothing is written under ``D``
unless every input reads cleanly.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from liverseg_monai.data.datalist import write_datalist
from liverseg_monai.data.prepare.bcss import save_png, staged_dataset
from liverseg_monai.data.readers_pathology import find_glas_cases, read_glas_case
from liverseg_monai.errors import InputError

GLAS_CLASSES = ["background", "gland"]


def prepare_glas(
    src: str | os.PathLike,
    out: str | os.PathLike,
    seed: int = 0,
    val_fraction: float = 0.2,
    overwrite: bool = False,
) -> Path:
    """Convert the GlaS release folder into a dataset folder (see the module docstring).

    Args:
        src: folder with ``train_N.bmp``, ``train_N_anno.bmp``, ``testA_*``, ``testB_*``, ``Grade.csv``
            (or its parent).
        out: the dataset folder to write.
        seed: seed of the validation draw from ``train_*``.
        val_fraction: share of ``train_*`` images held out for validation (0: none).
        overwrite: replace an existing dataset folder.
    """
    cases = find_glas_cases(src)
    train = [c for c in cases if c.split == "train"]
    if not train:
        raise InputError(src, "no train_N.bmp images: the GlaS training set is needed")
    if not 0 <= val_fraction < 1:
        raise InputError(None, f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    n_val = int(round(val_fraction * len(train)))
    n_val = min(max(n_val, 1 if val_fraction > 0 and len(train) >= 2 else 0), len(train) - 1)
    val_names = {train[i].name for i in rng.permutation(len(train))[:n_val]}

    content: dict = {"training": [], "validation": [], "testing": []}
    with staged_dataset(out, overwrite) as stage:
        for case in cases:
            rgb, instances = read_glas_case(case)
            if instances.max() > 65535:
                raise InputError(case.annotation, f"{instances.max()} glands do not fit a 16-bit instance map")
            item = {"image": f"images/{case.name}.png", "label": f"labels/{case.name}.png",
                    "instance": f"instances/{case.name}.png", "split": case.split}
            if case.grade is not None:
                item["grade"] = case.grade
            save_png(stage / item["image"], rgb)
            save_png(stage / item["label"], (instances > 0).astype(np.uint8))
            save_png(stage / item["instance"], instances.astype(np.uint16))
            if case.split != "train":
                content["testing"].append(item)
            elif case.name in val_names:
                content["validation"].append(item)
            else:
                item["fold"] = len(content["training"]) % 5
                content["training"].append(item)
        content = {k: v for k, v in content.items() if v}
        content["classes"] = GLAS_CLASSES
        content["source"] = "GlaS (Sirinukunwattana et al. 2017), prepared by liverseg_monai.data.prepare.glas"
        write_datalist(stage, content)
    return Path(out) / "dataset.json"
