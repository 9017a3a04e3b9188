"""Training and loading glue of the two-stage liver / tumour cascade.

The cascade itself is a network (:class:`liverseg_monai.networks.two_stage.TwoStageSegmenter`); its
per-case measures live in :mod:`liverseg_monai.metrics.cascade` and the DICOM writers in
:mod:`liverseg_monai.io.dicom_writers`. Here:

- :class:`PrepareBatchWithPrior` hands the clinical weak-supervision targets to the training loss;
- :class:`TwoStageModelSaver` writes ``models/model.pt``, the composed network's state dict, when the
  tumour stage's training ends (from the two stages' best checkpoints);
- :func:`load_two_stage_weights` loads that file for inference (or, for bundles trained before it
  existed, the two stage checkpoints) and refuses to run with untrained weights.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import PrepareBatch
from monai.utils import CommonKeys
from torch import nn

from liverseg_monai.errors import InputError
from liverseg_monai.io.atomic import atomic_path
from liverseg_monai.networks.two_stage import OneStageSegmenter, TwoStageSegmenter

logger = logging.getLogger(__name__)


class PrepareBatchWithPrior(PrepareBatch):
    """``prepare_batch`` for a ``SupervisedTrainer`` whose loss needs more than the label.

    Returns ``(image, target)`` where ``target`` is a dict with ``label`` and each of ``extra_keys``
    found in the batch (missing ones are left out), moved to the device as float tensors. Used with
    :class:`liverseg_monai.losses.vae.SegVAELoss` for the clinical weak-supervision term.
    """

    def __init__(self, extra_keys: Sequence[str] = ("liver", "tumor_fraction_prior", "tumor_fraction_std")):
        self.extra_keys = tuple(extra_keys)

    def __call__(self, batchdata: dict, device=None, non_blocking: bool = False, **kwargs):
        image = batchdata[CommonKeys.IMAGE].to(device=device, non_blocking=non_blocking, **kwargs)
        target = {"label": batchdata[CommonKeys.LABEL].to(device=device, non_blocking=non_blocking, **kwargs)}
        for key in self.extra_keys:
            if key in batchdata:
                value = torch.as_tensor(batchdata[key])
                target[key] = value.to(device=device, dtype=torch.float32, non_blocking=non_blocking)
        return image, target


def _load_part(module: nn.Module, path: str | os.PathLike) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state) if isinstance(state, dict) else state
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise InputError(path, f"does not fit the network of this configuration: {str(err).splitlines()[0]}") from err


def load_stage_weights(module: nn.Module, path: str | os.PathLike) -> str:
    """Load one stage's checkpoint (a plain state dict or ``{"model": ...}``) into ``module``; returns ``path``.

    Raises:
        InputError: the file is missing or does not fit the network.
    """
    if not os.path.isfile(path):
        raise InputError(path, "no trained weights: train this configuration first")
    _load_part(module, path)
    return str(path)


def save_two_stage_model(network: TwoStageSegmenter, liver_ckpt: str | os.PathLike, tumor_ckpt: str | os.PathLike,
                         path: str | os.PathLike) -> str:
    """Load the stage checkpoints into ``network``'s stages and write its state dict to ``path`` (atomically).

    Args:
        network: the composed network (``network_def`` of the tumour bundle).
        liver_ckpt, tumor_ckpt: the stages' best checkpoints (plain state dicts of the stage networks).
        path: the composed checkpoint, ``models/model.pt``.
    """
    for ckpt, stage in ((liver_ckpt, network.liver_stage), (tumor_ckpt, network.tumor_stage)):
        if not os.path.isfile(ckpt):
            raise InputError(ckpt, "stage checkpoint missing: train the liver stage (train.json) and the tumour "
                                   "stage (train.json + train_tumor.json) first")
        _load_part(stage.net, ckpt)
    with atomic_path(path) as tmp:
        torch.save(network.state_dict(), tmp)
    logger.info("wrote the two-stage network (%s + %s) to %s", liver_ckpt, tumor_ckpt, path)
    return str(path)


class TwoStageModelSaver:
    """Trainer handler: when training ends, write ``path`` = the composed network's state dict.

    Attached to both stages' trainers (``train.json`` and ``train_tumor.json``): whichever stage
    finishes second composes the liver stage's best checkpoint and the tumour stage's best
    checkpoint (written by validation) through :func:`save_two_stage_model`, so the stages can be
    trained in either order. While one stage checkpoint is still missing it logs a warning naming
    the missing file and writes nothing. In a distributed run only rank 0 writes.
    """

    def __init__(self, network: TwoStageSegmenter, liver_ckpt: str, tumor_ckpt: str, path: str):
        self.network, self.liver_ckpt, self.tumor_ckpt, self.path = network, liver_ckpt, tumor_ckpt, path

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        import ignite.distributed as idist

        if idist.get_rank() != 0:
            return
        missing = [str(p) for p in (self.liver_ckpt, self.tumor_ckpt) if not os.path.isfile(p)]
        if missing:
            logger.warning("%s not written yet: stage checkpoint %s missing; it is written when both the liver "
                           "stage (train.json) and the tumour stage (train.json + train_tumor.json) are trained",
                           self.path, " and ".join(missing))
            return
        save_two_stage_model(self.network, self.liver_ckpt, self.tumor_ckpt, self.path)


def load_two_stage_weights(network: TwoStageSegmenter, path: str | os.PathLike, liver_ckpt: str | os.PathLike,
                           tumor_ckpt: str | os.PathLike) -> str:
    """Load the composed checkpoint ``path`` into ``network``; returns the file(s) used.

    A bundle trained before ``models/model.pt`` existed has only the two stage checkpoints; they are
    loaded into the stages instead. Without either, inference would predict with random weights, so
    this raises :class:`~liverseg_monai.errors.InputError` naming the missing files.
    """
    if isinstance(network, OneStageSegmenter):  # configs/baseline_one_network.json: one network, all classes
        return load_stage_weights(network.stage.net, liver_ckpt)
    if os.path.isfile(path):
        _load_part(network, path)
        return str(path)
    if os.path.isfile(liver_ckpt) and os.path.isfile(tumor_ckpt):
        _load_part(network.liver_stage.net, liver_ckpt)
        _load_part(network.tumor_stage.net, tumor_ckpt)
        return f"{liver_ckpt} + {tumor_ckpt}"
    raise InputError([path, liver_ckpt, tumor_ckpt], "no trained weights: train the bundle first (configs/train.json, "
                     "then train.json + train_tumor.json) or place models/model.pt there")
