"""Helpers of the bundles' ``multi_gpu_train.json``: data-parallel training under ``torchrun``.

A ``multi_gpu_train.json`` is merged after a bundle's training config and run with
``torchrun --nproc_per_node=N -m monai.bundle run ...``: one process per GPU with NCCL or, where no
GPU is visible, one CPU process per rank with gloo (how CI checks it). The network is wrapped in
``DistributedDataParallel``, the training dataset is split by a ``DistributedSampler`` (MONAI's
engines call its ``set_epoch`` every epoch), validation is split the same way (MONAI's metrics gather
their buffers across ranks), and only rank 0 writes checkpoints, logs and TensorBoard files.

A ``multi_gpu_inference.json`` is merged after a bundle's ``inference.json`` and run the same way:
each rank infers its own share of the testing cases (:func:`shard`: every case once, by one rank, on
any number of nodes), failures of every rank are collected into one ``failed_cases.csv``
(:func:`gather_lists`, used by :func:`liverseg_monai.engines.cohort.run_cohort`), and tables that a
run appends to case by case are written per rank and merged by rank 0 (:func:`rank_file`,
:func:`merge_rank_tables`).

These functions keep the config's ``$`` expressions one line each.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = [
    "SyncBuffers",
    "attach_rank_handlers",
    "backend",
    "barrier",
    "gather_lists",
    "is_main_process",
    "local_device",
    "mean_over_ranks",
    "merge_rank_tables",
    "rank",
    "rank_file",
    "rank_handlers",
    "shard",
    "sync_batchnorm",
    "unwrap",
    "world_size",
]


def local_device() -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` (set by ``torchrun``) when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def backend() -> str:
    """The process-group backend for :func:`local_device`: ``nccl`` on GPUs, ``gloo`` on CPUs."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def rank() -> int:
    """The global rank (0 outside distributed runs)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 outside distributed runs)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 and outside distributed runs: the process that writes files."""
    return rank() == 0


def mean_over_ranks(value: float) -> float:
    """The mean of ``value`` over all ranks (``value`` itself outside distributed runs); every rank must call it."""
    n = world_size()
    if n == 1:
        return float(value)
    total = torch.tensor(float(value), dtype=torch.float64, device=local_device())
    dist.all_reduce(total)
    return float(total) / n


def barrier() -> None:
    """Wait for every rank (a no-op outside distributed runs)."""
    if world_size() > 1:
        dist.barrier()


def shard(items: Sequence) -> list:
    """This rank's share of ``items``: ``items[rank::world_size]`` (all of them outside distributed runs).

    Every item goes to exactly one rank (MONAI's ``partition_dataset(shuffle=False, even_divisible=False)``
    split, which also allows fewer items than ranks: a rank may get none), so each case is written once.
    """
    return list(items)[rank()::world_size()]


def gather_lists(items: Sequence) -> list:
    """The concatenation of every rank's ``items`` in rank order, on every rank (``items`` outside
    distributed runs); every rank must call it. Items are any picklable objects."""
    n = world_size()
    if n == 1:
        return list(items)
    parts: list = [None] * n
    dist.all_gather_object(parts, list(items))
    return [item for part in parts for item in part]


def rank_file(path: str | os.PathLike) -> str:
    """``path`` with the rank before its suffix (``steatosis.csv`` -> ``steatosis.rank1.csv``) in distributed
    runs, ``path`` itself otherwise: the per-rank part of a table that :func:`merge_rank_tables` joins."""
    path = str(path)
    if world_size() == 1:
        return path
    stem, dot, suffix = path.rpartition(".")
    return f"{stem}.rank{rank()}.{suffix}" if dot else f"{path}.rank{rank()}"


def merge_rank_tables(path: str | os.PathLike) -> None:
    """Join the per-rank parts of a CSV table (:func:`rank_file`) into ``path`` on rank 0 and remove them.

    Every rank must call it (it waits for all of them first). Rows keep rank order; a rank that wrote no
    part contributes nothing. A no-op outside distributed runs.
    """
    import csv
    from pathlib import Path

    from liverseg_monai.io.tables import write_table

    n = world_size()
    if n == 1:
        return
    dist.barrier()
    if is_main_process():
        path = Path(path)
        parts = [path.with_name(f"{path.stem}.rank{r}{path.suffix}") for r in range(n)]
        rows: list[dict] = []
        for part in parts:
            if part.is_file():
                with open(part, newline="") as f:
                    rows += list(csv.DictReader(f))
        if rows:
            write_table(path, rows)
        for part in parts:
            part.unlink(missing_ok=True)
    dist.barrier()


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` (or ``module`` itself)."""
    if isinstance(module, nn.parallel.DistributedDataParallel | nn.DataParallel):
        return module.module
    return module


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm turned into ``SyncBatchNorm`` on GPUs; unchanged on CPUs.

    ``SyncBatchNorm`` needs CUDA tensors (it refuses CPU input with a ``ValueError``); with gloo on CPUs
    each rank keeps per-process batch statistics, and DDP copies rank 0's running statistics to the
    other ranks at the start of every training forward pass.
    """
    return nn.SyncBatchNorm.convert_sync_batchnorm(module) if torch.cuda.is_available() else module


def _writer_types() -> tuple[type, ...]:
    from ignite.handlers import ProgressBar
    from monai.handlers import CheckpointSaver, MLFlowHandler, StatsHandler, TensorBoardHandler

    from liverseg_monai.engines.checkpoints import TrainConfigWriter

    return CheckpointSaver, MLFlowHandler, ProgressBar, StatsHandler, TensorBoardHandler, TrainConfigWriter


def rank_handlers(handlers: Iterable | None) -> list:
    """The handlers this process attaches: all of them on rank 0; on the other ranks all but the writers.

    Writers are the handlers whose job is output: checkpoint savers (``CheckpointSaver`` and
    subclasses, ``TrainConfigWriter``), any handler with a true ``rank_zero_writer`` attribute (the
    SSL ``SaveBackbone``; an attribute, so this layer does not import ``ssl``), ``StatsHandler``,
    TensorBoard and MLflow handlers and progress bars.
    Everything else (validation, which every rank must run because its metric is gathered across
    ranks, learning-rate schedules, epoch seeding, checkpoint loading, training phases) runs on every
    rank, so the ranks stay in step. ``None`` entries (disabled components) are dropped.
    """
    handlers = [h for h in (handlers or []) if h is not None]
    if is_main_process():
        return handlers
    writers = _writer_types()
    return [h for h in handlers if not (isinstance(h, writers) or getattr(h, "rank_zero_writer", False))]


def attach_rank_handlers(engine: Engine, handlers: Iterable | None) -> list:
    """Attach to ``engine`` the handlers this process runs (:func:`rank_handlers`); returns them.

    The form a multi-GPU config uses for handlers attached in ``run`` rather than listed in the
    trainer (checkpoint loading for a resume, a checkpoint saver): every rank loads, rank 0 writes.
    """
    attached = rank_handlers(handlers)
    for handler in attached:
        handler.attach(engine)
    return attached


class SyncBuffers:
    """Trainer handler: average the floating-point buffers of ``modules`` across ranks after every epoch.

    BatchNorm running statistics are buffers that every rank updates from its own batches. DDP copies
    rank 0's buffers to the other ranks at the start of each training forward pass, so after the last
    step of an epoch the ranks differ, and rank 0's checkpoint holds statistics of its own batches
    only. Averaging them at ``EPOCH_COMPLETED`` (before validation and the checkpoint savers, so list
    this handler first) gives every rank the same weights, estimated from all ranks' batches. Integer
    buffers (``num_batches_tracked``) are equal on all ranks and left alone. A no-op outside
    distributed runs.

    Args:
        modules: the modules whose buffers are averaged (DDP wrappers are unwrapped), e.g. the DDP
            network and, for DINO, the EMA teacher (which has its own BatchNorm statistics).
    """

    def __init__(self, modules: nn.Module | Sequence[nn.Module]):
        self.modules = [modules] if isinstance(modules, nn.Module) else list(modules)

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    @torch.no_grad()
    def __call__(self, engine=None) -> None:
        n = world_size()
        if n == 1:
            return
        for module in self.modules:
            for buffer in unwrap(module).buffers():
                if buffer.is_floating_point():
                    dist.all_reduce(buffer)
                    buffer.div_(n)
