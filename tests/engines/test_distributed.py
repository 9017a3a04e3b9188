"""The torchrun helpers of liverseg_monai.engines.distributed, on two CPU processes (gloo)."""

import os

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ignite.handlers import ProgressBar
from monai.handlers import StatsHandler
from torch import nn

from liverseg_monai.engines.distributed import (
    SyncBuffers,
    attach_rank_handlers,
    is_main_process,
    mean_over_ranks,
    rank_handlers,
    unwrap,
    world_size,
)
from liverseg_monai.engines.handlers import EpochSeeder
from liverseg_monai.metrics.instance import InstanceAP


def _instance_cases() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Four (prediction [2, H, W] ids+scores, reference [1, H, W]) pairs with different AP50."""
    cases = []
    for i in range(4):
        ref = torch.zeros(1, 32, 32)
        ref[0, 4:12, 4:12], ref[0, 20:28, 20:28] = 1, 2
        pred = torch.zeros(2, 32, 32)
        pred[0, 4:12, 4 : 12 + 2 * i] = 1  # overlap shrinks with i: a miss from i = 2 on
        pred[1][pred[0] > 0] = 0.9
        if i % 2:
            pred[0, 20:28, 20:28], pred[1, 20:28, 20:28] = 2, 0.8
        cases.append((pred, ref))
    return cases


def _instance_ap(cases) -> float:
    metric = InstanceAP("AP50")
    metric.reset()
    for pred, ref in cases:
        metric.update(([pred], [ref]))
    return metric.compute()


def _worker(rank: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        bn = nn.BatchNorm1d(3)
        bn.running_mean.fill_(float(rank))
        bn.num_batches_tracked.fill_(5)
        SyncBuffers([bn])()
        handlers = [EpochSeeder(), StatsHandler(), ProgressBar(), None]
        queue.put({
            "rank": rank,
            "main": is_main_process(),
            "world": world_size(),
            "mean": mean_over_ranks(float(rank)),
            "running_mean": bn.running_mean.tolist(),
            "tracked": int(bn.num_batches_tracked),
            "handlers": [type(h).__name__ for h in rank_handlers(handlers)],
            "ap50": _instance_ap(_instance_cases()[rank::2]),  # each rank scores half of the images
        })
    finally:
        dist.destroy_process_group()


def test_helpers_on_two_ranks():
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_worker, args=(29651, queue), nprocs=2)
    results = sorted((queue.get(), queue.get()), key=lambda r: r["rank"])
    assert [r["main"] for r in results] == [True, False]
    assert all(r["world"] == 2 and r["mean"] == 0.5 for r in results)
    # BatchNorm running statistics averaged, the integer counter untouched
    assert all(r["running_mean"] == [0.5] * 3 and r["tracked"] == 5 for r in results)
    # rank 0 keeps every handler, rank 1 only those that are not writers
    assert results[0]["handlers"] == ["EpochSeeder", "StatsHandler", "ProgressBar"]
    assert results[1]["handlers"] == ["EpochSeeder"]
    # the distributed evaluator's AP50 is the one of all images together, on both ranks
    expected = _instance_ap(_instance_cases())
    halves = [_instance_ap(_instance_cases()[r::2]) for r in (0, 1)]
    assert halves[0] != halves[1]  # the check would notice per-rank scores
    assert [r["ap50"] for r in results] == [expected, expected]


def test_single_process_fallbacks():
    assert not dist.is_initialized()
    assert is_main_process() and world_size() == 1 and mean_over_ranks(2.5) == 2.5
    handlers = [StatsHandler(), None, EpochSeeder()]
    assert rank_handlers(handlers) == [handlers[0], handlers[2]]
    bn = nn.BatchNorm1d(2)
    bn.running_mean.fill_(3.0)
    SyncBuffers(bn)()
    assert bn.running_mean.tolist() == [3.0, 3.0]
    net = nn.Linear(2, 2)
    assert unwrap(net) is net and unwrap(nn.DataParallel(net)) is net
    assert np.isfinite(_instance_ap(_instance_cases()))


def test_attach_rank_handlers_attaches_what_this_rank_runs():
    from ignite.engine import Engine, Events

    engine = Engine(lambda e, b: None)
    seeder = EpochSeeder()
    assert attach_rank_handlers(engine, [seeder, None]) == [seeder]
    assert engine.has_event_handler(seeder, Events.EPOCH_STARTED)
    assert attach_rank_handlers(engine, None) == []
