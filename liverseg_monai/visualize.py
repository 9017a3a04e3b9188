"""Overlay PNGs: people look at pictures.

``save_overlay`` writes a montage of image slices (or an RGB tile) with label maps drawn on top,
one colour per class, optionally next to a reference label map. Writes are atomic.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

CLASS_COLOURS = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],  # 1 red
        [60, 180, 75],  # 2 green
        [255, 225, 25],  # 3 yellow
        [0, 130, 200],  # 4 blue
        [245, 130, 48],  # 5 orange
        [145, 30, 180],  # 6 purple
        [70, 240, 240],  # 7 cyan
        [240, 50, 230],  # 8 magenta
    ],
    dtype=np.float32,
) / 255.0


def _to_rgb(image: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    image = np.asarray(image, np.float32)
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        rgb = image[..., :3]
        return rgb / 255.0 if rgb.max() > 1.5 else rgb
    lo, hi = window if window is not None else (float(np.percentile(image, 1)), float(np.percentile(image, 99)))
    grey = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.repeat(grey[..., None], 3, axis=-1)


def blend_labels(image: np.ndarray, label: np.ndarray, window=None, alpha: float = 0.4) -> np.ndarray:
    """RGB float image in [0, 1] with each non-zero class painted in its colour."""
    rgb = _to_rgb(image, window)
    label = np.asarray(label).astype(np.int64)
    colours = CLASS_COLOURS[np.clip(label, 0, len(CLASS_COLOURS) - 1)]
    on = (label > 0)[..., None]
    return np.where(on, (1 - alpha) * rgb + alpha * colours, rgb)


def pick_slices(label: np.ndarray | None, depth: int, n: int = 3) -> list[int]:
    """Axial slice indices worth showing: spread through the labelled extent (or the volume)."""
    if label is not None and np.any(label):
        zs = np.nonzero(np.any(label, axis=(0, 1)))[0]
        lo, hi = int(zs.min()), int(zs.max())
    else:
        lo, hi = 0, depth - 1
    return sorted({int(round(v)) for v in np.linspace(lo, hi, n + 2)[1:-1]})


def save_overlay(
    path: str | os.PathLike,
    image: np.ndarray,
    pred: np.ndarray,
    reference: np.ndarray | None = None,
    window: tuple[float, float] | None = (-160.0, 240.0),
    slices: Sequence[int] | None = None,
    title: str = "",
) -> str:
    """Write an overlay PNG.

    Args:
        path: output PNG path (written atomically).
        image: a 3D volume (H, W, D) shown as axial slices, a 2D grey image, or an RGB tile (H, W, 3).
        pred: the predicted label map, same spatial shape as ``image``.
        reference: optional ground truth, shown in a second row.
        window: display window for grey images (HU for CT); ``None`` uses the 1st-99th percentiles.
        slices: axial indices for 3D images; by default three through the predicted structures.
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from liverseg_monai.io.atomic import atomic_path

    image = np.asarray(image)
    pred = np.asarray(pred)
    is_volume = image.ndim == 3 and image.shape[-1] not in (3, 4)
    if is_volume:
        idx = list(slices) if slices is not None else pick_slices(pred if np.any(pred) else reference, image.shape[-1])
        panels_img = [np.rot90(image[..., z]) for z in idx]
        panels_pred = [np.rot90(pred[..., z]) for z in idx]
        panels_ref = [np.rot90(reference[..., z]) for z in idx] if reference is not None else None
        names = [f"slice {z}" for z in idx]
    else:
        panels_img, panels_pred = [image], [pred]
        panels_ref = [reference] if reference is not None else None
        names = [""]
    rows = 2 if panels_ref is not None else 1
    cols = len(panels_img)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for c in range(cols):
        axes[0, c].imshow(blend_labels(panels_img[c], panels_pred[c], window if is_volume or image.ndim == 2 else None))
        axes[0, c].set_title(f"prediction {names[c]}".strip(), fontsize=8)
        if panels_ref is not None:
            axes[1, c].imshow(blend_labels(panels_img[c], panels_ref[c], window if is_volume or image.ndim == 2 else None))
            axes[1, c].set_title(f"reference {names[c]}".strip(), fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return str(path)
