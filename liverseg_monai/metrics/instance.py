"""Instance segmentation metrics for droplets, in numpy (no pycocotools).

Definitions (used in the steatosis model card):

- **IoU** of a predicted and a reference instance: |P ∩ G| / |P ∪ G| of their pixel masks.
- **Matching at IoU t** (COCO style): predictions in decreasing score order each take the unmatched
  reference with the highest IoU, if that IoU >= t. A matched prediction is a true positive (TP), an
  unmatched prediction a false positive (FP), an unmatched reference a false negative (FN).
- **precision** = TP / (TP + FP), **recall** = TP / (TP + FN), **F1** = 2 P R / (P + R), at IoU 0.5
  over all predictions the model outputs (after its score threshold), pooled over images.
- **AP50**: area under the interpolated precision-recall curve at IoU 0.5, COCO's 101-point version:
  predictions of all images ranked by score, precision made monotone (running max from the right),
  averaged at recalls 0, 0.01, ..., 1 (0 where a recall is never reached).
- **mask AP (COCO AP@[.5:.95])**: the mean of AP at IoU 0.50, 0.55, ..., 0.95.
- **Jaccard**: the pixel-level Jaccard index of droplet foreground (union of all instances),
  |P ∩ G| / |P ∪ G|, averaged over images (1 for an image where both are empty).
- **clump subset** (touching droplets): references that touch another reference (8-neighbourhood).
  A prediction matched to a reference outside the subset, or unmatched and overlapping no subset
  reference most, is ignored (COCO's ignore rule); the rest are scored as above with the subset as the
  references.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

IOU_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2))


def instance_ious(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU matrix between the instances of two label images.

    Returns:
        ``(iou, pred_ids, ref_ids)``: ``iou[i, j]`` of ``pred == pred_ids[i]`` and ``ref == ref_ids[j]``.
    """
    pred = np.asarray(pred).astype(np.int64).ravel()
    ref = np.asarray(ref).astype(np.int64).ravel()
    if pred.shape != ref.shape:
        raise ValueError(f"prediction and reference differ in size: {pred.size} vs {ref.size}")
    pred_ids = np.unique(pred[pred > 0])
    ref_ids = np.unique(ref[ref > 0])
    if len(pred_ids) == 0 or len(ref_ids) == 0:
        return np.zeros((len(pred_ids), len(ref_ids))), pred_ids, ref_ids
    pi = np.searchsorted(pred_ids, pred) + 1
    pi[pred == 0] = 0
    ri = np.searchsorted(ref_ids, ref) + 1
    ri[ref == 0] = 0
    inter = np.bincount(pi * (len(ref_ids) + 1) + ri, minlength=(len(pred_ids) + 1) * (len(ref_ids) + 1))
    inter = inter.reshape(len(pred_ids) + 1, len(ref_ids) + 1)
    area_p = inter.sum(1)[1:]
    area_r = inter.sum(0)[1:]
    inter = inter[1:, 1:].astype(np.float64)
    union = area_p[:, None] + area_r[None, :] - inter
    return inter / np.maximum(union, 1), pred_ids, ref_ids


def match_instances(iou: np.ndarray, scores: Sequence[float] | None = None, threshold: float = 0.5) -> np.ndarray:
    """Greedy COCO matching: for each prediction (by decreasing score) the index of its reference, or -1."""
    n_pred, n_ref = iou.shape
    order = np.argsort(-np.asarray(scores), kind="stable") if scores is not None else np.arange(n_pred)
    taken = np.zeros(n_ref, bool)
    match = np.full(n_pred, -1)
    for i in order:
        if n_ref == 0:
            break
        cand = np.where(taken, -1.0, iou[i])
        j = int(np.argmax(cand))
        if cand[j] >= threshold:
            match[i] = j
            taken[j] = True
    return match


def touching_ids(ref: np.ndarray) -> np.ndarray:
    """Ids of reference instances that touch another instance (8-neighbourhood)."""
    ref = np.asarray(ref).astype(np.int64)
    grown_max = ndi.grey_dilation(ref, size=(3, 3), mode="nearest")
    sentinel = int(ref.max()) + 1
    grown_min = ndi.grey_erosion(np.where(ref > 0, ref, sentinel), size=(3, 3), mode="nearest")
    touch = (ref > 0) & ((grown_max != ref) | ((grown_min != ref) & (grown_min != sentinel)))
    return np.unique(ref[touch])


def average_precision(scores: np.ndarray, tp: np.ndarray, n_ref: int) -> float:
    """COCO 101-point interpolated AP from pooled prediction scores and TP flags (nan if no references)."""
    if n_ref == 0:
        return float("nan")
    scores, tp = np.asarray(scores, float), np.asarray(tp, bool)
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-scores, kind="mergesort")
    tp = tp[order]
    ctp = np.cumsum(tp)
    cfp = np.cumsum(~tp)
    recall = ctp / n_ref
    precision = ctp / np.maximum(ctp + cfp, np.finfo(float).eps)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    ap = 0.0
    for r in np.linspace(0, 1, 101):
        idx = np.searchsorted(recall, r, side="left")
        ap += precision[idx] if idx < len(precision) else 0.0
    return float(ap / 101)


@dataclass
class ImageStats:
    """Per-image matching results at every IoU threshold (pooled by :func:`summarize`)."""

    scores: np.ndarray
    tp: dict[float, np.ndarray]
    n_ref: int
    fg_inter: int
    fg_union: int
    matched_iou: list[float] = field(default_factory=list)

    def counts(self, threshold: float = 0.5) -> tuple[int, int, int]:
        tp = int(self.tp[threshold].sum())
        return tp, len(self.scores) - tp, self.n_ref - tp


def instance_stats(
    pred: np.ndarray,
    ref: np.ndarray,
    scores: Mapping[int, float] | None = None,
    thresholds: Iterable[float] = IOU_THRESHOLDS,
    subset: Iterable[int] | None = None,
) -> ImageStats:
    """Match the instances of one image at every IoU threshold.

    Args:
        pred: predicted instance labels (0 background).
        ref: reference instance labels, same shape.
        scores: score per predicted id (1.0 for all when omitted, e.g. the classical baseline).
        thresholds: IoU thresholds.
        subset: evaluate only these reference ids (e.g. :func:`touching_ids`), with COCO's ignore rule.
    """
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    iou, pred_ids, ref_ids = instance_ious(pred, ref)
    s = np.array([float(scores.get(int(i), 0.0)) if scores is not None else 1.0 for i in pred_ids])
    keep_pred = np.ones(len(pred_ids), bool)
    in_subset = np.ones(len(ref_ids), bool) if subset is None else np.isin(ref_ids, np.asarray(list(subset)))
    tp: dict[float, np.ndarray] = {}
    ignore: dict[float, np.ndarray] = {}
    for t in thresholds:
        t = float(round(t, 2))
        m = match_instances(iou, s, t)
        flags = m >= 0
        ign = np.zeros(len(pred_ids), bool)
        if subset is not None:
            matched_out = flags & ~in_subset[np.clip(m, 0, None)] if len(ref_ids) else np.zeros_like(flags)
            if len(ref_ids):
                best = np.argmax(iou, axis=1)
                best_iou = iou[np.arange(len(pred_ids)), best]
                unmatched_out = ~flags & ((best_iou == 0) | ~in_subset[best])
            else:
                unmatched_out = ~flags
            ign = matched_out | unmatched_out
        tp[t], ignore[t] = flags, ign
    # a prediction ignored at IoU 0.5 is ignored everywhere (keeps one prediction set per image)
    if subset is not None and tp:
        keep_pred = ~ignore[min(tp)]
    m50 = match_instances(iou, s, 0.5)
    matched = [float(iou[i, j]) for i, j in enumerate(m50) if j >= 0 and keep_pred[i] and in_subset[j]]
    fg_p, fg_r = pred > 0, ref > 0
    if subset is not None:
        fg_r = np.isin(ref, ref_ids[in_subset])
        fg_p = np.isin(pred, pred_ids[keep_pred])
    return ImageStats(
        scores=s[keep_pred],
        tp={t: f[keep_pred] for t, f in tp.items()},
        n_ref=int(in_subset.sum()),
        fg_inter=int((fg_p & fg_r).sum()),
        fg_union=int((fg_p | fg_r).sum()),
        matched_iou=matched,
    )


def summarize(stats: Sequence[ImageStats]) -> dict[str, float]:
    """Pool per-image stats: AP50, AP75, mask AP@[.5:.95], precision, recall, F1, Jaccard, counts."""
    if not stats:
        return {}
    thresholds = sorted(stats[0].tp)
    scores = np.concatenate([s.scores for s in stats])
    n_ref = sum(s.n_ref for s in stats)
    aps = {t: average_precision(scores, np.concatenate([s.tp[t] for s in stats]), n_ref) for t in thresholds}
    tp = sum(s.counts(0.5)[0] for s in stats)
    fp = sum(s.counts(0.5)[1] for s in stats)
    fn = sum(s.counts(0.5)[2] for s in stats)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    jaccard = [s.fg_inter / s.fg_union if s.fg_union else 1.0 for s in stats]
    matched = [v for s in stats for v in s.matched_iou]
    return {
        "AP50": aps.get(0.5, float("nan")),
        "AP75": aps.get(0.75, float("nan")),
        "mask_AP": float(np.mean(list(aps.values()))) if n_ref else float("nan"),
        "precision": precision,
        "recall": recall,
        "F1": f1,
        "jaccard": float(np.mean(jaccard)),
        "mean_matched_iou": float(np.mean(matched)) if matched else 0.0,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "n_reference": n_ref,
        "n_images": len(stats),
    }


def scores_from_map(labels: np.ndarray, score_map: np.ndarray | None) -> dict[int, float]:
    """Per-instance score: the maximum of ``score_map`` over each instance (1.0 without a map)."""
    labels = np.asarray(labels).astype(np.int64)
    ids = np.unique(labels[labels > 0])
    if score_map is None:
        return {int(i): 1.0 for i in ids}
    vals = ndi.maximum(np.asarray(score_map, float), labels, ids) if len(ids) else []
    return {int(i): float(v) for i, v in zip(ids, np.atleast_1d(vals))}


# ----------------------------------------------------------------------------------------------------
# engine glue: an ignite metric and an evaluation table writer
# ----------------------------------------------------------------------------------------------------
def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def steatosis_area_pct(ids: np.ndarray) -> float:
    """Droplet area as a percentage of the image (``ids > 0``): the steatosis-area figure of a tile.

    The denominator is the whole tile, the same for a prediction and its reference, so the absolute
    difference of two of these is the error of the steatosis percentage in percentage points.
    """
    ids = np.asarray(ids)
    return float(100.0 * np.count_nonzero(ids > 0) / max(ids.size, 1))


def _ids_and_scores(pred) -> tuple[np.ndarray, dict[int, float]]:
    """Instance ids and per-id scores from a ``[2, H, W]`` (ids, scores) or ``[1, H, W]`` prediction."""
    p = _np(pred)
    ids = np.rint(p[0] if p.ndim == 3 else p).astype(np.int64)
    return ids, scores_from_map(ids, p[1] if p.ndim == 3 and p.shape[0] > 1 else None)


def _ref(label) -> np.ndarray:
    lab = _np(label)
    return np.rint(lab[0] if lab.ndim == 3 else lab).astype(np.int64)


try:  # ignite is a MONAI engine dependency; keep the numpy functions importable without it
    from ignite.metrics import Metric as _IgniteMetric
except ImportError:  # pragma: no cover
    _IgniteMetric = object


class InstanceAP(_IgniteMetric):
    """Ignite metric for MONAI evaluators: pooled instance metric (default AP50) over an epoch.

    ``output_transform`` must give ``(preds, labels)``: lists of ``[2, H, W]`` predictions (ids, scores)
    and ``[1, H, W]`` reference instance maps, e.g. ``from_engine(["pred", "label"])``.

    Args:
        metric: a key of :func:`summarize` (``AP50``, ``mask_AP``, ``F1``, ``jaccard``...).
    """

    def __init__(self, metric: str = "AP50", output_transform=lambda x: x, device="cpu") -> None:
        self.metric = metric
        self._stats: list[ImageStats] = []
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._stats = []

    def update(self, output) -> None:
        preds, labels = output
        for pred, label in zip(preds, labels):
            ids, scores = _ids_and_scores(pred)
            self._stats.append(instance_stats(ids, _ref(label), scores))

    def compute(self) -> float:
        stats = _all_ranks(self._stats)  # a distributed evaluator scores every rank's images together
        value = summarize(stats).get(self.metric, 0.0) if stats else 0.0
        return 0.0 if value != value else float(value)  # nan (no references) -> 0


def _all_ranks(items: list) -> list:
    """``items`` of every process, in rank order (``items`` itself outside distributed runs)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return items
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]


class InstanceMetricsSaver:
    """Evaluator handler: per-case and pooled instance metrics of the network and the baseline.

    For every case in ``engine.state.output`` it matches ``pred_key`` (network) and ``baseline_key``
    (clump splitting, when present) against ``label_key``, on all droplets and on touching droplets
    (:func:`touching_ids`), writes ``per_case.csv`` and, at the end, ``summary.json`` with the pooled
    metrics of :func:`summarize` side by side (``network``, ``network_touching``, ``clump_splitting``,
    ``clump_splitting_touching``).
    """

    def __init__(self, output_dir, pred_key: str = "pred", label_key: str = "label",
                 baseline_key: str | None = "baseline", image_key: str = "image",
                 summary_name: str = "summary.json", table_name: str = "per_case.csv") -> None:
        from pathlib import Path

        self.output_dir = Path(output_dir)
        self.pred_key, self.label_key, self.baseline_key, self.image_key = pred_key, label_key, baseline_key, image_key
        self.summary_name, self.table_name = summary_name, table_name
        self.stats: dict[str, list[ImageStats]] = {}
        self.rows: list[dict] = []

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.measure)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    def reset(self, engine=None) -> None:
        self.stats, self.rows = {}, []

    def measure(self, engine) -> None:
        import os

        output = engine.state.output
        for item in output if isinstance(output, list) else [output]:
            ref = _ref(item[self.label_key])
            touching = touching_ids(ref)
            meta = getattr(item.get(self.image_key), "meta", {}) or {}
            row: dict = {"case": os.path.basename(str(meta.get("filename_or_obj", len(self.rows)))).split(".")[0],
                         "n_droplets": int(len(np.unique(ref[ref > 0]))), "n_touching": int(len(touching)),
                         "ref_area_pct": round(steatosis_area_pct(ref), 4)}
            sources = {"network": item[self.pred_key]}
            if self.baseline_key and self.baseline_key in item:
                sources["clump_splitting"] = item[self.baseline_key]
            for name, pred in sources.items():
                ids, scores = _ids_and_scores(pred)
                for suffix, subset in (("", None), ("_touching", touching)):
                    s = instance_stats(ids, ref, scores, subset=subset)
                    self.stats.setdefault(name + suffix, []).append(s)
                    one = summarize([s])
                    for k in ("AP50", "precision", "recall", "F1", "jaccard"):
                        row[f"{name}{suffix}_{k}"] = round(float(one[k]), 5)
                area = steatosis_area_pct(ids)
                row[f"{name}_area_pct"] = round(area, 4)
                row[f"{name}_area_pct_error"] = round(abs(area - row["ref_area_pct"]), 4)
            self.rows.append(row)

    def summary(self) -> dict:
        out = {"n_cases": len(self.rows), **{name: summarize(s) for name, s in self.stats.items()}}
        for name in ("network", "clump_splitting"):
            errors = [r[f"{name}_area_pct_error"] for r in self.rows if f"{name}_area_pct_error" in r]
            if errors and name in out:  # mean absolute error of the steatosis-area percentage, per tile
                out[name]["area_pct_mae"] = float(np.mean(errors))
        return out

    def write(self, engine=None) -> None:
        import json

        from liverseg_monai.io.atomic import atomic_write_text
        from liverseg_monai.io.tables import write_table

        if not self.rows:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_table(self.output_dir / self.table_name, self.rows)
        summary = self.summary()
        atomic_write_text(self.output_dir / self.summary_name, json.dumps(summary, indent=2, default=float))
        if engine is not None:
            for name in ("network", "clump_splitting"):
                if name in summary:
                    engine.state.metrics[f"{name}_AP50"] = summary[name]["AP50"]
