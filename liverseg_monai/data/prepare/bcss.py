"""BCSS (official layout) -> dataset folder: ``python -m liverseg_monai prepare bcss --src DIR --out D``.

Writes ``D/images/<name>.png`` (RGB), ``D/labels/<name>.png`` (class indices of the chosen grouping)
and ``D/dataset.json`` with ``training`` (with folds), ``validation`` and ``testing`` (labelled) lists
plus ``classes`` (the class names) and ``bcss_grouping`` (class name -> BCSS codes). Splits are by
patient, never by tile. The default test set is the BCSS paper's: every slide of the tissue source
sites OL, LL, E2, EW, GM and S3.

Nothing is written under ``D`` unless every input reads cleanly: the dataset is built in a staging
folder next to ``D`` and renamed onto it at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from liverseg_monai.data.datalist import write_datalist
from liverseg_monai.data.readers_pathology import (
    BCSS_GROUPINGS,
    BCSS_TEST_INSTITUTES,
    bcss_case,
    bcss_lookup,
    bcss_site,
    find_bcss_pairs,
    read_bcss_pair,
)
from liverseg_monai.errors import InputError


@contextlib.contextmanager
def staged_dataset(out: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces ``out``, on error it is removed.

    ``out`` must not exist, be empty, or (``overwrite=True``) hold an earlier dataset.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise InputError(out, "exists and is not empty; choose a new folder or pass --overwrite True")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield stage
        if out.exists():
            shutil.rmtree(out)
        os.replace(stage, out)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG")


def split_cases(cases: Sequence[str], seed: int, val_fraction: float, test_fraction: float,
                fixed_test: set[str] | None = None) -> dict[str, str]:
    """Assign each case (patient) to training / validation / testing, seeded; ``fixed_test`` cases go to testing."""
    rng = np.random.default_rng(seed)
    fixed_test = fixed_test or set()
    free = sorted(set(cases) - fixed_test)
    order = [free[i] for i in rng.permutation(len(free))]
    n_test = 0 if fixed_test else int(round(test_fraction * len(order)))
    n_val = int(round(val_fraction * len(order)))
    if len(order) >= 3:
        n_val = max(n_val, 1)
        n_test = n_test if fixed_test else max(n_test, 1)
    parts = {c: "testing" for c in fixed_test}
    for i, case in enumerate(order):
        parts[case] = "testing" if i < n_test else "validation" if i < n_test + n_val else "training"
    return parts


def _tiles(rgb: np.ndarray, label: np.ndarray, tile: int | None, keep_fraction: float, background: int | None):
    """Non-overlapping ``tile`` x ``tile`` crops (offset name suffixes) keeping those with enough annotated area."""
    if not tile:
        yield "", rgb, label
        return
    h, w = label.shape
    for y in range(0, h - tile + 1, tile):
        for x in range(0, w - tile + 1, tile):
            lab = label[y : y + tile, x : x + tile]
            if background is not None and np.mean(lab != background) < keep_fraction:
                continue
            yield f"_y{y}_x{x}", rgb[y : y + tile, x : x + tile], lab


def prepare_bcss(
    src: str | os.PathLike,
    out: str | os.PathLike,
    seed: int = 0,
    grouping: str | Mapping[str, Sequence[int]] = "main",
    split: str = "institute",
    test_sites: Sequence[str] = BCSS_TEST_INSTITUTES,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    tile_size: int | None = None,
    min_annotated: float = 0.5,
    downsample: int = 1,
    overwrite: bool = False,
) -> Path:
    """Convert a BCSS folder (``rgbs_colorNormalized/`` or ``images/`` + ``masks/``) into a dataset folder.

    Args:
        src: the BCSS folder.
        out: the dataset folder to write.
        seed: split seed.
        grouping: ``"main"`` (outside_roi + tumor, stroma, inflammatory, necrosis, other), ``"full"``
            (all 22 codes) or ``{class name: [codes]}`` (JSON text accepted); see
            :func:`liverseg_monai.data.readers_pathology.bcss_lookup`.
        split: ``"institute"`` (test = slides from ``test_sites``, the BCSS paper's split; validation
            drawn from the remaining patients; a random split when no slide is from those sites) or ``"random"`` (patients drawn at random for test too).
        test_sites: tissue source sites of the test set for ``split="institute"``.
        val_fraction, test_fraction: fractions of patients for validation (and testing with ``random``).
        tile_size: cut each ROI into non-overlapping tiles of this size (``None``: whole ROIs).
        min_annotated: with ``tile_size``: keep tiles with at least this fraction of pixels outside class 0.
        downsample: integer factor to shrink images (area average) and masks (nearest), e.g. 2 for
            0.25 -> 0.5 micron per pixel.
        overwrite: replace an existing dataset folder.
    """
    if isinstance(grouping, str) and grouping not in BCSS_GROUPINGS:
        try:
            grouping = json.loads(grouping)
        except json.JSONDecodeError:
            raise InputError(None, f"grouping must be one of {', '.join(BCSS_GROUPINGS)} or a JSON mapping, got {grouping!r}") from None
    try:
        lut, names = bcss_lookup(grouping)
    except ValueError as err:
        raise InputError(None, f"grouping: {err}") from None
    if split not in ("institute", "random"):
        raise InputError(None, f"split must be 'institute' or 'random', got {split!r}")
    if downsample < 1 or int(downsample) != downsample:
        raise InputError(None, f"downsample must be a positive integer, got {downsample}")
    pairs = find_bcss_pairs(src)
    cases = [bcss_case(img.name) for img, _ in pairs]
    fixed_test = set()
    if split == "institute":
        sites = {s.upper() for s in test_sites}
        fixed_test = {c for (img, _), c in zip(pairs, cases) if bcss_site(img.name) in sites}
    # no slide from the test sites (a subset of BCSS): fall back to a random patient split
    split_used = "institute" if fixed_test else "random"
    parts = split_cases(cases, seed, val_fraction, test_fraction, fixed_test)

    content: dict = {"training": [], "validation": [], "testing": []}
    with staged_dataset(out, overwrite) as stage:
        for (image_path, mask_path), case in zip(pairs, cases):
            rgb, label = read_bcss_pair(image_path, mask_path, lut)
            if downsample > 1:
                rgb, label = _downsample(rgb, label, int(downsample))
            stem = image_path.name[: -len(image_path.suffix)]
            for suffix, tile_rgb, tile_label in _tiles(rgb, label, tile_size, min_annotated, 0):
                rel_image, rel_label = f"images/{stem}{suffix}.png", f"labels/{stem}{suffix}.png"
                save_png(stage / rel_image, tile_rgb)
                save_png(stage / rel_label, tile_label)
                item = {"image": rel_image, "label": rel_label, "case": case}
                content[parts[case]].append(item)
        training_cases = sorted({it["case"] for it in content["training"]})
        fold_of = {c: i % 5 for i, c in enumerate(training_cases)}
        for item in content["training"]:
            item["fold"] = fold_of[item["case"]]
        if not any(content.values()):
            raise InputError(src, "no tile kept (every tile is mostly outside_roi; lower min_annotated)")
        content = {k: v for k, v in content.items() if v}
        content["classes"] = names
        content["bcss_grouping"] = {n: [int(c) for c in np.nonzero(lut == i)[0] if c in range(22)] for i, n in enumerate(names)}
        content["split"] = split_used
        content["source"] = "BCSS (Amgad et al. 2019), prepared by liverseg_monai.data.prepare.bcss"
        write_datalist(stage, content)
    return Path(out) / "dataset.json"


def _downsample(rgb: np.ndarray, label: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = (label.shape[0] // factor) * factor, (label.shape[1] // factor) * factor
    if h == 0 or w == 0:
        return rgb, label
    small = rgb[:h, :w].reshape(h // factor, factor, w // factor, factor, 3).mean(axis=(1, 3))
    return np.round(small).astype(np.uint8), label[factor // 2 : h : factor, factor // 2 : w : factor]
