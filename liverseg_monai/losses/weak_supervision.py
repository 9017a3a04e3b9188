"""Clinical weak supervision: pull each patient's predicted tumour burden toward its stage group's.

For patient ``i`` in clinical stage group ``g(i)`` (for example its BCLC stage), the population-level
severity indicator is the expected tumour fraction of the liver in that group, ``mu_g``, with spread
``sigma_g``, both fitted on the training split (:func:`liverseg_monai.data.clinical.fit_severity`).
The predicted tumour fraction is the soft ratio

    f_i = sum_v p_i(v) * L_i(v) / sum_v L_i(v)

with ``p_i`` the tumour probability and ``L_i`` the liver mask of the stage-2 crop. The loss is the
Gaussian negative log-likelihood of ``f_i`` under ``N(mu_g, sigma_g^2)`` (constants dropped),
averaged over the patients of the batch that have clinical data:

    L_ws = weight * mean_{i : mu_g(i) known} ( (f_i - mu_g(i)) / sigma_g(i) )^2 / 2

Patients without clinical data carry ``mu = NaN`` and are skipped; the counts of used and skipped
patients are kept on the module (``n_used``, ``n_skipped``) and logged.

Ramp-up: at initialisation the soft tumour fraction is about 1/C everywhere, tens of ``sigma_g`` away
from a group's mean, so at full weight the term dominates the segmentation loss and is satisfied by a
low, uniform tumour probability that argmax never selects (measured: tumour Dice 0.00 after the
demo's 80 steps, 0.68 without the term). As in semi-supervised consistency losses (Laine & Aila 2017),
the weight therefore rises from 0 with ``exp(-5 (1 - t)^2)``, ``t = epoch / rampup_epochs``: the network
first learns where tumour is, then the clinical prior adjusts how much. The trainer sets the epoch
(:meth:`ClinicalTumorFractionLoss.set_epoch`, attached with :func:`attach_rampup`).
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

logger = logging.getLogger(__name__)


def predicted_tumor_fraction(logits: torch.Tensor, liver: torch.Tensor, tumor_channel: int = 1, eps: float = 1e-6) -> torch.Tensor:
    """Soft tumour fraction of the liver per batch item.

    Args:
        logits: ``(B, C, *spatial)`` network output (softmax over ``C``).
        liver: ``(B, 1, *spatial)`` or ``(B, *spatial)`` liver mask (tumour included), 0/1.
        tumor_channel: the channel of the tumour class.
        eps: avoids division by zero for an empty liver mask.

    Returns:
        ``(B,)`` fractions in [0, 1].
    """
    prob = torch.softmax(logits.float(), dim=1)[:, tumor_channel]
    liver = liver.float().reshape(prob.shape)
    dims = tuple(range(1, prob.ndim))
    return (prob * liver).sum(dims) / (liver.sum(dims) + eps)


class ClinicalTumorFractionLoss(nn.Module):
    """Weak supervision from the clinical table (see the module docstring for the formula).

    Args:
        weight: the loss weight ``weight``; 0 switches the term off.
        tumor_channel: the tumour channel of the logits.
        min_std: lower bound on ``sigma_g`` (a fraction of the liver), so a tight group cannot dominate.
        start_epoch: epochs (from 0) without the term, while the network first learns where tumour is.
        rampup_epochs: epochs after ``start_epoch`` over which the weight rises from 0 to ``weight``
            (0: full weight at ``start_epoch``).

    Example:
        >>> loss = ClinicalTumorFractionLoss(weight=0.1)
        >>> logits = torch.zeros(2, 2, 8, 8, 8); liver = torch.ones(2, 1, 8, 8, 8)
        >>> value = loss(logits, liver, torch.tensor([0.2, float("nan")]), torch.tensor([0.1, 0.1]))
        >>> round(float(value), 4), loss.n_used, loss.n_skipped   # f = 0.5: 0.1 * ((0.5 - 0.2) / 0.1)^2 / 2
        (0.45, 1, 1)
    """

    def __init__(self, weight: float = 0.1, tumor_channel: int = 1, min_std: float = 0.01,
                 start_epoch: float = 0, rampup_epochs: float = 0):
        super().__init__()
        self.weight = float(weight)
        self.start_epoch = float(start_epoch)
        self.rampup_epochs = float(rampup_epochs)
        self.epoch = 0.0
        self.tumor_channel = tumor_channel
        self.min_std = float(min_std)
        self.n_used = 0
        self.n_skipped = 0

    def forward(self, logits: torch.Tensor, liver: torch.Tensor, prior_mean: torch.Tensor, prior_std: torch.Tensor | None = None) -> torch.Tensor:
        prior_mean = torch.as_tensor(prior_mean, dtype=torch.float32, device=logits.device).reshape(-1)
        std = torch.ones_like(prior_mean) if prior_std is None else torch.as_tensor(prior_std, dtype=torch.float32, device=logits.device).reshape(-1)
        known = torch.isfinite(prior_mean)
        n_known = int(known.sum())
        self.n_used += n_known
        self.n_skipped += int(known.numel() - n_known)
        weight = self.current_weight()
        if weight == 0 or n_known == 0:
            return logits.sum() * 0.0
        frac = predicted_tumor_fraction(logits[known], liver[known], self.tumor_channel)
        std = torch.nan_to_num(std[known], nan=1.0).clamp_min(self.min_std)
        return weight * (((frac - prior_mean[known]) / std) ** 2).mean() / 2

    def set_epoch(self, epoch: float) -> None:
        """The training epoch (from 0) that the ramp-up follows."""
        self.epoch = float(epoch)

    def current_weight(self) -> float:
        """0 before ``start_epoch``, then ``weight * exp(-5 (1 - t)^2)`` with
        ``t = min((epoch - start_epoch) / rampup_epochs, 1)`` (``weight`` without ramp-up)."""
        if self.weight == 0 or self.epoch < self.start_epoch:
            return 0.0
        if self.rampup_epochs <= 0:
            return self.weight
        t = min(max((self.epoch - self.start_epoch) / self.rampup_epochs, 0.0), 1.0)
        return self.weight * math.exp(-5.0 * (1.0 - t) ** 2)

    def log_counts(self, reset: bool = True) -> None:
        """Log how many patients used the term and how many were skipped (no clinical data)."""
        if self.n_skipped:
            logger.info("weak supervision: %d patient samples used, %d skipped (no clinical data)", self.n_used, self.n_skipped)
        if reset:
            self.n_used = self.n_skipped = 0


def attach_rampup(trainer, loss: ClinicalTumorFractionLoss | None) -> None:
    """Set ``loss``'s epoch (from 0) at the start of every epoch of an ignite ``trainer`` (also after a
    resume, since it reads ``trainer.state.epoch``); nothing when there is no weak-supervision term."""
    from ignite.engine import Events

    if loss is None:
        return
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda engine: loss.set_epoch(engine.state.epoch - 1))


def attach_count_log(trainer, loss: ClinicalTumorFractionLoss | None) -> None:
    """Log ``loss``'s patient counts (:meth:`ClinicalTumorFractionLoss.log_counts`) at the end of every
    epoch of an ignite ``trainer``; nothing when there is no weak-supervision term, nor on the ranks
    other than 0 of a distributed run (one log line per epoch)."""
    from ignite.engine import Events

    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if loss is None or (distributed and torch.distributed.get_rank() != 0):
        return
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: loss.log_counts())
