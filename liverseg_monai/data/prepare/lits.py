"""``python -m liverseg_monai prepare lits --src LITS_DIR --out D``.

The official LiTS17 training data come as ``Training Batch 1/`` and ``Training Batch 2/`` folders of
``volume-N.nii`` and ``segmentation-N.nii`` (sometimes gzipped). This links each pair into ``D``
(``D/volumes``, ``D/segmentations``; symbolic links, so nothing is copied; ``--copy True`` copies) and
writes ``D/dataset.json`` with a seeded case-level 70/20/10 split into training (with 5 folds),
validation and testing, as in the paper.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np

from liverseg_monai.data.datalist import write_datalist
from liverseg_monai.errors import InputError

_VOLUME = re.compile(r"^volume-(\d+)\.nii(\.gz)?$")


def find_lits_pairs(src: str | os.PathLike) -> dict[int, tuple[Path, Path]]:
    """``{case number: (volume path, segmentation path)}`` found anywhere under ``src``."""
    src = Path(src)
    if not src.is_dir():
        raise InputError(src, "LiTS folder does not exist")
    volumes = {int(m.group(1)): p for p in src.rglob("volume-*.nii*") if (m := _VOLUME.match(p.name))}
    if not volumes:
        raise InputError(src, "no LiTS volumes (volume-N.nii or volume-N.nii.gz) found")
    pairs = {}
    for n, vol in sorted(volumes.items()):
        segs = [p for p in src.rglob(f"segmentation-{n}.nii*") if p.name in (f"segmentation-{n}.nii", f"segmentation-{n}.nii.gz")]
        if not segs:
            raise InputError(vol, f"no matching segmentation-{n}.nii(.gz) under {src}")
        pairs[n] = (vol, segs[0])
    return pairs


def split_cases(cases: list, seed: int, fractions=(0.7, 0.2, 0.1)) -> dict[str, list]:
    """Seeded case-level split into training/validation/testing (every part non-empty from 3 cases)."""
    order = list(np.random.default_rng(seed).permutation(len(cases)))
    n = len(cases)
    n_val = max(1, round(n * fractions[1])) if n >= 3 else 0
    n_test = max(1, round(n * fractions[2])) if n >= 3 else 0
    n_train = n - n_val - n_test
    idx = {"training": order[:n_train], "validation": order[n_train : n_train + n_val], "testing": order[n_train + n_val :]}
    return {k: [cases[i] for i in sorted(v)] for k, v in idx.items()}


def prepare_lits(src: str | os.PathLike, out: str | os.PathLike, seed: int = 0, copy: bool = False, folds: int = 5) -> Path:
    """Link (or copy) the LiTS pairs into ``out`` and write ``out/dataset.json``; returns its path."""
    pairs = find_lits_pairs(src)
    out = Path(out)
    for sub in ("volumes", "segmentations"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    items = []
    for vol, seg in pairs.values():
        entry = {}
        for key, path, sub in (("image", vol, "volumes"), ("label", seg, "segmentations")):
            dest = out / sub / path.name
            if dest.is_symlink() or dest.exists():
                dest.unlink()
            if copy:
                shutil.copy2(path, dest)
            else:
                dest.symlink_to(path.resolve())
            entry[key] = f"{sub}/{path.name}"
        items.append(entry)
    split = split_cases(items, seed)
    for i, item in enumerate(split["training"]):
        item["fold"] = i % folds
    return write_datalist(out, split)
