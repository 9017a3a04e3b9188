"""Ignite/MONAI event handlers that bundle configs attach to their evaluators."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import ignite.distributed as idist
import numpy as np
import torch
from ignite.handlers import DiskSaver
from monai.engines import Workflow
from monai.handlers import CheckpointSaver
from monai.utils import min_version, optional_import

from liverseg_monai.io.atomic import atomic_path, atomic_write_text
from liverseg_monai.io.meta import source_name, voxel_spacing
from liverseg_monai.io.naming import case_stem
from liverseg_monai.io.tables import write_table
from liverseg_monai.metrics.ct import case_metrics, summarise

Events, _ = optional_import("ignite.engine", "0.4.4", min_version, "Events")
logger = logging.getLogger(__name__)


class CaseMetricsSaver:
    """Measure every case an evaluator processes and write ``per_case.csv`` and ``summary.json``.

    Args:
        output_dir: where the tables go.
        class_names: ``{class value: name}`` to measure, e.g. ``{1: "liver"}``.
        pred_key, label_key: keys of the prediction and reference label maps in ``engine.state.output``
            (on the same voxel grid; spacing is taken from the prediction's affine).
        metric_fn: the per-case function, by default :func:`liverseg_monai.metrics.ct.case_metrics`.
        key_metric: summary metric copied to ``engine.state.metrics`` under its own name.
        extra: optional ``fn(item) -> dict`` whose values are added to each row (e.g. tumour burden).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Mapping[int, str],
        pred_key: str = "pred",
        label_key: str = "label",
        metric_fn: Callable | None = None,
        key_metric: str | None = None,
        extra: Callable | None = None,
        summary_name: str = "summary.json",
        table_name: str = "per_case.csv",
    ):
        self.output_dir = Path(output_dir)
        self.class_names = {int(k): v for k, v in class_names.items()}
        self.pred_key, self.label_key = pred_key, label_key
        self.metric_fn = metric_fn or case_metrics
        self.key_metric = key_metric
        self.extra = extra
        self.summary_name, self.table_name = summary_name, table_name
        self.rows: list[dict] = []

    def attach(self, engine: Workflow) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._measure)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Workflow) -> None:
        self.rows = []

    def _measure(self, engine: Workflow) -> None:
        output = engine.state.output
        items = output if isinstance(output, list) else [output]
        for item in items:
            pred, label = item[self.pred_key], item[self.label_key]
            spacing = voxel_spacing(pred)
            row = {"case": case_stem(source_name(pred))}
            row.update(self.metric_fn(pred, label, spacing.tolist(), self.class_names))
            if self.extra is not None:
                row.update(self.extra(item))
            self.rows.append(row)

    def _write(self, engine: Workflow) -> None:
        if not self.rows:
            logger.warning("CaseMetricsSaver: no cases were evaluated")
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_table(self.output_dir / self.table_name, self.rows)
        summary = {"n_cases": len(self.rows), "metrics": summarise(self.rows)}
        atomic_write_text(self.output_dir / self.summary_name, json.dumps(summary, indent=2))
        for k, v in summary["metrics"].items():
            engine.state.metrics[k] = v["mean"]
        if self.key_metric:
            engine.state.metrics[self.key_metric] = summary["metrics"][self.key_metric]["mean"]
        logger.info("evaluated %d cases; %s", len(self.rows),
                    ", ".join(f"{k}={v['mean']:.4f}" for k, v in summary["metrics"].items() if k.endswith("dice")))


class AtomicDiskSaver(DiskSaver):
    """Ignite's ``DiskSaver`` writing each checkpoint through :func:`liverseg_monai.io.atomic.atomic_path`.

    MONAI's ``CheckpointSaver`` saves with ``atomic=False`` (for file permissions), so a run killed
    while ``torch.save`` writes leaves a truncated ``checkpoint_epoch=N.pt`` that resuming then picks
    up. And ignite's ``Checkpoint`` removes the checkpoint it replaces *before* saving the new one, so
    with ``n_saved=1`` a kill mid-save would leave no checkpoint at all. Here the final name only ever
    holds a complete file (with ordinary permissions), and a removal is carried out only after the
    next save has succeeded: a crash at any point leaves the previous checkpoint to resume from.

    Args:
        dirname: the checkpoint folder (created).
        filename: a fixed file name (``model.pt``) used instead of ignite's generated one.
        save_on_rank: the rank that writes in distributed training.
    """

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None, save_on_rank: int = 0):
        super().__init__(dirname=dirname, atomic=True, create_dir=True, require_empty=False, save_on_rank=save_on_rank)
        self.filename = filename
        self._pending_removal: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if idist.get_rank() != self.save_on_rank:
            return
        name = self.filename or filename
        with atomic_path(self.dirname / name) as tmp:
            torch.save(checkpoint, tmp, **self.kwargs)
        for old in self._pending_removal:
            if old != name:
                (self.dirname / old).unlink(missing_ok=True)
        self._pending_removal = []

    def remove(self, filename: str) -> None:
        """Remove ``filename`` once the next checkpoint is safely on disk (ignite calls this first)."""
        if idist.get_rank() == self.save_on_rank:
            self._pending_removal.append(self.filename or filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` (same arguments) whose files are written atomically.

    Interval, key-metric and final checkpoints all go through :class:`AtomicDiskSaver`: a crash or
    ``SIGKILL`` mid-save leaves the previous checkpoint intact and no partial file under a
    checkpoint name, so resuming from the newest ``checkpoint_epoch=N.pt`` is always safe.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                checkpoint.save_handler = AtomicDiskSaver(self.save_dir, getattr(checkpoint.save_handler, "filename", None))


def to_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


class EpochSeeder:
    """Re-seed every random number generator at the start of each epoch from ``(seed, epoch)``.

    Makes training resumable to the same weights: a run resumed from the checkpoint of epoch N draws
    exactly the random numbers (shuffling, crops, augmentations) an uninterrupted run draws in epoch
    N+1. Seeds MONAI's transforms (``dataset.transform.set_random_state``), Python, NumPy and torch via
    ``monai.utils.set_determinism``. Exact for ``num_workers=0``; with workers, each worker's seed is
    drawn when the epoch's iterator is created and ignite may create it before ``EPOCH_STARTED``.

    Args:
        seed: the base seed.
        dataset: the training dataset whose ``transform`` is re-seeded (optional).
    """

    def __init__(self, seed: int = 0, dataset=None):
        self.seed = int(seed)
        self.dataset = dataset

    def attach(self, engine: Workflow) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Workflow) -> None:
        from monai.utils import set_determinism

        epoch_seed = self.seed * 100003 + int(engine.state.epoch)
        set_determinism(seed=epoch_seed)
        transform = getattr(self.dataset, "transform", None)
        if transform is not None and hasattr(transform, "set_random_state"):
            transform.set_random_state(seed=epoch_seed % (2**32))
