"""Training Mask R-CNN with MONAI's SupervisedTrainer: the iteration function and the training phases.

The trainer is configured as usual; ``iteration_update`` is :func:`maskrcnn_train_iteration`, which
turns each batch's instance label maps into torchvision detection targets and sums the detector's
losses. :class:`TrainingPhases` freezes the ResNet body for the first ``heads_epochs`` epochs
("heads" phase: FPN, RPN and box/mask heads) and then trains all layers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from monai.engines.utils import IterationEvents
from monai.utils import min_version, optional_import
from torch import Tensor, nn

from liverseg_monai.networks.maskrcnn import LOSS_NAMES

GRAD_CLIP_NORM = 10.0  # gradient norm clipping keeps SGD at lr 0.02 stable from random initialisation

Events, _ = optional_import("ignite.engine", "0.4.4", min_version, "Events")
logger = logging.getLogger(__name__)


def instances_to_target(label: Tensor, min_pixels: int = 4) -> dict[str, Tensor]:
    """torchvision detection target from one instance label map ``[1, H, W]`` or ``[H, W]`` (0 = background).

    Instances with fewer than ``min_pixels`` pixels (for example cut by a crop) are left out.
    Returns ``{"boxes": [N, 4] (x0, y0, x1, y1), "labels": [N] (all 1), "masks": [N, H, W] uint8}``.
    """
    lab = torch.as_tensor(label).round().to(torch.int64)
    if lab.ndim == 3:
        lab = lab[0]
    ids = torch.unique(lab)
    ids = ids[ids > 0]
    masks = lab[None] == ids[:, None, None] if len(ids) else torch.zeros((0, *lab.shape), dtype=torch.bool)
    masks = masks[masks.flatten(1).sum(1) >= min_pixels] if len(ids) else masks
    boxes = torch.zeros((len(masks), 4), dtype=torch.float32)
    for i, m in enumerate(masks):
        ys, xs = torch.nonzero(m, as_tuple=True)
        boxes[i] = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
    return {"boxes": boxes, "labels": torch.ones(len(masks), dtype=torch.int64), "masks": masks.to(torch.uint8)}


def detector_of(network: nn.Module) -> nn.Module:
    """The torchvision detector inside a wrapper (``network.detector``), or the network itself."""
    net = network.module if hasattr(network, "module") else network  # DistributedDataParallel
    return getattr(net, "detector", net)


def maskrcnn_train_iteration(engine, batchdata: dict) -> dict:
    """SupervisedTrainer ``iteration_update``: one SGD step of Mask R-CNN on a batch.

    ``batchdata`` holds ``image`` ``[B, 3, H, W]`` in [0, 1] and ``label`` ``[B, 1, H, W]`` instance ids.
    Fires MONAI's iteration events like ``SupervisedTrainer`` (so the output is decollated and handlers
    such as ``StatsHandler`` or MLflow read ``loss`` with ``from_engine(["loss"], first=True)``).
    Returns the engine output: ``loss`` (the summed loss) and each detector loss.
    """
    images = batchdata["image"].to(engine.state.device, torch.float32)
    targets = [{k: v.to(images.device) for k, v in instances_to_target(lab).items()} for lab in batchdata["label"]]
    engine.network.train()
    loss_vector = engine.network(images, targets)
    loss = loss_vector.sum()
    engine.fire_event(IterationEvents.FORWARD_COMPLETED)
    engine.fire_event(IterationEvents.LOSS_COMPLETED)
    engine.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
    if GRAD_CLIP_NORM:
        torch.nn.utils.clip_grad_norm_(engine.network.parameters(), GRAD_CLIP_NORM)
    engine.optimizer.step()
    engine.state.output = {"image": images, "loss": loss.detach()}
    engine.state.output.update({k: float(v) for k, v in zip(LOSS_NAMES, loss_vector.detach())})
    engine.fire_event(IterationEvents.MODEL_COMPLETED)  # MONAI decollates the output here, as SupervisedTrainer
    return engine.state.output


class TrainingPhases:
    """Two training phases: "heads" (ResNet body frozen) for ``heads_epochs`` epochs, then "all" layers.

    Args:
        network: the wrapper (with ``.detector``) or the detector.
        heads_epochs: epochs of the heads phase (0 trains all layers from the start).
        frozen: names of the detector's sub-modules frozen in the heads phase (the ResNet body).
    """

    def __init__(self, network: nn.Module, heads_epochs: int = 1, frozen: Sequence[str] = ("backbone.body",)):
        self.network = network
        self.heads_epochs = int(heads_epochs)
        self.frozen = tuple(frozen)

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine) -> None:
        heads = engine.state.epoch <= self.heads_epochs
        detector = detector_of(self.network)
        for name in self.frozen:
            for p in detector.get_submodule(name).parameters():
                p.requires_grad_(not heads)
        if engine.state.epoch in (1, self.heads_epochs + 1):
            logger.info("epoch %d: training %s", engine.state.epoch, "heads" if heads else "all layers")


def warmup_step_lr(
    optimizer: torch.optim.Optimizer, warmup_iters: int = 100, step_iters: int = 1000, gamma: float = 0.1
) -> torch.optim.lr_scheduler.LambdaLR:
    """Iteration-level schedule: linear warm-up from 1 % over ``warmup_iters``, then step decay by
    ``gamma`` every ``step_iters`` iterations (attach with ``LrScheduleHandler(epoch_level=False)``)."""

    def factor(it: int) -> float:
        warm = min(1.0, 0.01 + 0.99 * it / max(warmup_iters, 1))
        return warm * gamma ** (it // max(step_iters, 1))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
