"""Frozen-feature evaluation of a pretrained encoder: patches, embeddings, weighted k-NN classification.

The protocol of DINO's k-NN evaluation (Caron et al. 2021, after Wu et al. 2018): L2-normalised
embeddings of labelled training patches form the memory bank; a query patch votes with its ``k``
nearest neighbours (cosine similarity), each weighted by ``exp(similarity / T)``.

For tissue tiles with a label map, the patches are a grid of crops and each crop's label is the
majority class of its label map (:func:`grid_patches`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from liverseg_monai.ssl.augment import IMAGENET_MEAN, IMAGENET_STD
from liverseg_monai.ssl.data import read_label_map, read_rgb


def majority_label(label: np.ndarray, n_classes: int | None = None, ignore: Sequence[int] = ()) -> int:
    """The most frequent class in a label crop (ties: the lower index); ``-1`` if only ignored values."""
    counts = np.bincount(np.asarray(label, np.int64).ravel(), minlength=n_classes or 0)
    for i in ignore:
        if i < len(counts):
            counts[i] = 0
    return int(np.argmax(counts)) if counts.sum() > 0 else -1


def grid_patches(image: np.ndarray, label: np.ndarray | None, patch: int, stride: int | None = None,
                 ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Cut a ``(H, W, 3)`` tile into a grid of ``patch x patch`` crops.

    Args:
        image: uint8 or float RGB tile, channels last.
        label: optional ``(H, W)`` class map; each crop's label is its majority class.
        patch: crop edge in pixels (the whole tile is one crop if it is smaller).
        stride: grid step (default: ``patch``, no overlap).

    Returns:
        ``(crops (N, patch, patch, 3), labels (N,) or -1, [(y, x), ...] top-left corners)``.
    """
    h, w = image.shape[:2]
    p = min(patch, h, w)
    s = stride or p
    ys = list(range(0, h - p + 1, s))
    xs = list(range(0, w - p + 1, s))
    crops, labels, corners = [], [], []
    for y in ys:
        for x in xs:
            crops.append(image[y : y + p, x : x + p])
            labels.append(majority_label(label[y : y + p, x : x + p]) if label is not None else -1)
            corners.append((y, x))
    return np.stack(crops), np.asarray(labels, np.int64), corners


def normalise_rgb(crops: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                  ) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 / [0, 1] float crops -> ``(N, 3, H, W)`` normalised float tensor."""
    x = torch.as_tensor(np.asarray(crops, np.float32))
    if float(x.max()) > 1.5:
        x = x / 255.0
    x = x.permute(0, 3, 1, 2)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


@torch.no_grad()
def embed(backbone: nn.Module, images: torch.Tensor, batch_size: int = 64,
          device: str | torch.device = "cpu") -> torch.Tensor:
    """Embeddings ``(N, D)`` of normalised images ``(N, 3, H, W)`` with the backbone in eval mode."""
    backbone.eval()
    out = [backbone(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros(0)


def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, k: int = 20,
                temperature: float = 0.07, n_classes: int | None = None) -> torch.Tensor:
    """Weighted k-NN labels of ``queries`` ``(M, D)`` from a labelled ``bank`` ``(N, D)`` (cosine similarity).

    Each of the ``k`` nearest bank items votes for its class with weight ``exp(sim / temperature)``.
    """
    bank = F.normalize(bank.float(), dim=1)
    queries = F.normalize(queries.float(), dim=1)
    n_classes = n_classes or int(bank_labels.max()) + 1
    k = min(k, len(bank))
    sim = queries @ bank.T
    top_sim, top_idx = sim.topk(k, dim=1)
    weights = (top_sim / temperature).exp()
    votes = torch.zeros(len(queries), n_classes)
    votes.scatter_add_(1, bank_labels[top_idx], weights)
    return votes.argmax(dim=1)


def classification_scores(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy, balanced accuracy (mean recall over the classes present) and per-class recall."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    out: dict[str, float] = {"accuracy": float(np.mean(pred == truth)) if len(truth) else float("nan")}
    recalls = []
    for c in range(n_classes):
        sel = truth == c
        if sel.any():
            r = float(np.mean(pred[sel] == c))
            out[f"recall_{c}"] = r
            recalls.append(r)
    out["balanced_accuracy"] = float(np.mean(recalls)) if recalls else float("nan")
    return out


def patch_set(items: Sequence[dict], patch: int, stride: int | None = None, ignore: Sequence[int] = (),
              ) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Grid patches of labelled tiles (datalist items with ``image`` and ``label``).

    Returns crops ``(N, p, p, 3)`` uint8, labels ``(N,)`` and one record per patch
    (``case``, ``y``, ``x``, ``label``); patches whose majority class is in ``ignore`` are dropped.
    """
    crops, labels, records = [], [], []
    for item in items:
        rgb = read_rgb(item["image"])
        label = read_label_map(item["label"], rgb.shape[:2]) if item.get("label") else None
        c, lab, corners = grid_patches(rgb, label, patch, stride)
        keep = [i for i, v in enumerate(lab) if v not in ignore]
        crops.append(c[keep])
        labels.append(lab[keep])
        case = Path(item["image"]).name.split(".")[0]
        records += [{"case": case, "y": corners[i][0], "x": corners[i][1], "label": int(lab[i])} for i in keep]
    if not crops:
        return np.zeros((0, patch, patch, 3), np.uint8), np.zeros(0, np.int64), []
    return np.concatenate(crops), np.concatenate(labels), records


def knn_evaluation(
    backbone: nn.Module,
    train_items: Sequence[dict],
    val_items: Sequence[dict],
    patch: int = 64,
    k: int = 20,
    temperature: float = 0.07,
    ignore: Sequence[int] = (),
    class_names: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
) -> tuple[dict, list[dict]]:
    """k-NN tissue classification of frozen ``backbone`` features: bank from ``train_items``, queries from ``val_items``.

    Returns ``(summary, rows)``: accuracy, balanced accuracy and per-class recall; one row per query
    patch with its true and predicted class.
    """
    bank = patch_set(train_items, patch, ignore=ignore)
    queries = patch_set(val_items, patch, ignore=ignore)
    return knn_on_patches(backbone, bank, queries, k, temperature, class_names, device, batch_size)


def knn_on_patches(
    backbone: nn.Module,
    bank: tuple[np.ndarray, np.ndarray, list[dict]],
    queries: tuple[np.ndarray, np.ndarray, list[dict]],
    k: int = 20,
    temperature: float = 0.07,
    class_names: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
) -> tuple[dict, list[dict]]:
    """:func:`knn_evaluation` on patch sets already cut (:func:`patch_set` outputs), so several encoders can
    be scored on the same patches without reading the tiles again."""
    (bank_x, bank_y, _), (query_x, query_y, records) = bank, queries
    patch = int(bank_x.shape[1]) if len(bank_x) else 0
    if len(bank_x) == 0 or len(query_x) == 0:
        raise ValueError("k-NN evaluation needs labelled patches in both the training and validation tiles")
    n_classes = len(class_names) if class_names else int(max(bank_y.max(), query_y.max())) + 1
    backbone = backbone.to(device)
    bank_emb = embed(backbone, normalise_rgb(bank_x), batch_size, device)
    query_emb = embed(backbone, normalise_rgb(query_x), batch_size, device)
    pred = knn_predict(bank_emb, torch.as_tensor(bank_y), query_emb, k, temperature, n_classes).numpy()
    scores = classification_scores(pred, query_y, n_classes)
    names = list(class_names) if class_names else [str(c) for c in range(n_classes)]
    summary = {
        "k": k, "temperature": temperature, "patch": patch,
        "n_bank_patches": int(len(bank_y)), "n_query_patches": int(len(query_y)),
        "knn_accuracy": scores["accuracy"], "knn_balanced_accuracy": scores["balanced_accuracy"],
        "recall": {names[c]: scores[f"recall_{c}"] for c in range(n_classes) if f"recall_{c}" in scores},
        "query_class_counts": {names[c]: int((query_y == c).sum()) for c in range(n_classes) if (query_y == c).any()},
    }
    rows = [{**r, "label_name": names[r["label"]], "pred": int(p), "pred_name": names[int(p)]}
            for r, p in zip(records, pred)]
    return summary, rows


def write_knn_evaluation(output_dir: str | os.PathLike, summary: dict, rows: list[dict]) -> Path:
    """``summary.json`` and ``per_case.csv`` (one row per query patch) in ``output_dir``, atomically."""
    import json

    from liverseg_monai.io.atomic import atomic_write_text
    from liverseg_monai.io.tables import write_table

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_table(out / "per_case.csv", rows, None if rows else ["case"])
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return out / "summary.json"


def dataset_class_names(dataset_dir: str | os.PathLike) -> list[str] | None:
    """Class names from ``dataset.json``: a ``classes`` list or an MSD ``labels`` dict (``{"0": "background"}``)."""
    import json

    try:
        content = json.loads((Path(dataset_dir) / "dataset.json").read_text())
    except (OSError, ValueError):
        return None
    if isinstance(content.get("classes"), list):
        return [str(c) for c in content["classes"]]
    labels = content.get("labels")
    if isinstance(labels, dict):
        try:
            return [str(labels[k]) for k in sorted(labels, key=int)]
        except (TypeError, ValueError):
            return None
    return None


class KNNEvaluation:
    """The bundle's evaluation: k-NN tissue classification of frozen features, against a random encoder.

    Called with the pretrained backbone, it classifies grid patches of the labelled ``validation``
    tiles from a memory bank of the labelled ``training`` tiles' patches (labels = majority class of
    each patch), does the same with randomly initialised backbones of ``baseline_arch`` (one per seed
    of ``baseline_seeds``: random encoders differ by several points between seeds, so one seed is not a
    fair reference), and writes ``summary.json`` (``knn_accuracy``, ``knn_balanced_accuracy``, per-class
    recall; under ``random_init`` the random encoders' mean accuracy, mean balanced accuracy and mean
    per-class recall, and each seed's figures under ``random_init.per_seed``; the gains over the mean)
    and ``per_case.csv`` (one row per validation patch).

    Args:
        dataset_dir: the dataset folder (``training`` and ``validation`` items with ``image`` and ``label``).
        output_dir: where the tables go.
        patch: patch edge in pixels.
        k, temperature: the weighted k-NN parameters (DINO: 20, 0.07).
        ignore: class indices whose patches are left out (e.g. ``[0]`` for glass).
        baseline_arch: ResNet name of the random-initialisation baseline (``None``: no baseline).
        baseline_seeds: the random encoders' seeds.
        device: where to compute the embeddings.
    """

    def __init__(self, dataset_dir: str | os.PathLike, output_dir: str | os.PathLike, patch: int = 64, k: int = 20,
                 temperature: float = 0.07, ignore: Sequence[int] = (), baseline_arch: str | None = "resnet50",
                 baseline_seeds: Sequence[int] = (0, 1, 2), device: str | torch.device = "cpu"):
        self.dataset_dir, self.output_dir = Path(dataset_dir), Path(output_dir)
        self.patch, self.k, self.temperature = int(patch), int(k), float(temperature)
        self.ignore = tuple(int(i) for i in ignore)
        self.baseline_arch = baseline_arch
        self.baseline_seeds = tuple(int(v) for v in baseline_seeds)
        self.device = device

    def __call__(self, backbone: nn.Module) -> dict:
        from liverseg_monai.data.datalist import load_datalist
        from liverseg_monai.ssl.dino import resnet_backbone

        train_items = load_datalist(self.dataset_dir, "training", require=("image", "label"))
        val_items = load_datalist(self.dataset_dir, "validation", require=("image", "label"))
        names = dataset_class_names(self.dataset_dir)
        bank = patch_set(train_items, self.patch, ignore=self.ignore)  # cut once, scored for every encoder
        queries = patch_set(val_items, self.patch, ignore=self.ignore)
        kwargs = {"k": self.k, "temperature": self.temperature, "class_names": names, "device": self.device}
        summary, rows = knn_on_patches(backbone, bank, queries, **kwargs)
        if self.baseline_arch and self.baseline_seeds:
            per_seed = []
            for seed in self.baseline_seeds:
                with torch.random.fork_rng():
                    torch.manual_seed(seed)
                    baseline = resnet_backbone(self.baseline_arch)
                base, _ = knn_on_patches(baseline, bank, queries, **kwargs)
                per_seed.append({"seed": seed, **{k: base[k] for k in ("knn_accuracy", "knn_balanced_accuracy", "recall")}})
            mean = {k: float(np.mean([r[k] for r in per_seed])) for k in ("knn_accuracy", "knn_balanced_accuracy")}
            recall = {c: float(np.mean([r["recall"][c] for r in per_seed if c in r["recall"]])) for c in summary["recall"]}
            summary["random_init"] = {**mean, "recall": recall, "per_seed": per_seed}
            for k in ("knn_accuracy", "knn_balanced_accuracy"):
                summary[f"{k}_gain_over_random_init"] = summary[k] - mean[k]
        write_knn_evaluation(self.output_dir, summary, rows)
        return summary
