"""The training loss of a SegResNetVAE: segmentation loss + VAE regulariser (+ optional extra terms).

``SegVAELoss`` takes the ``(logits, vae_loss)`` pair of
:class:`liverseg_monai.networks.segresnetvae.WithVAELoss` (or plain logits) and a target that is the
label tensor or a dict from :class:`liverseg_monai.engines.two_stage.PrepareBatchWithPrior`:

    L = L_seg(logits, label) + vae_weight * vae_loss + L_ws(logits, liver, mu, sigma)

where ``L_ws`` is :class:`liverseg_monai.losses.weak_supervision.ClinicalTumorFractionLoss`.
"""

from __future__ import annotations

import torch
from torch import nn

from liverseg_monai.losses.weak_supervision import ClinicalTumorFractionLoss


class SegVAELoss(nn.Module):
    """Segmentation loss plus the weighted VAE loss, plus the clinical weak-supervision term if given.

    Args:
        seg_loss: loss on ``(logits, label)``, e.g. ``DiceCELoss(to_onehot_y=True, softmax=True)``.
        vae_weight: weight of the VAE regulariser (Myronenko 2018 used 0.1).
        weak_loss: optional :class:`ClinicalTumorFractionLoss`; needs a dict target with ``liver`` and
            ``tumor_fraction_prior`` (``tumor_fraction_std`` optional).
    """

    def __init__(self, seg_loss: nn.Module, vae_weight: float = 0.1, weak_loss: ClinicalTumorFractionLoss | None = None):
        super().__init__()
        self.seg_loss = seg_loss
        self.vae_weight = float(vae_weight)
        self.weak_loss = weak_loss

    def forward(self, pred: torch.Tensor | tuple | list, target: torch.Tensor | dict) -> torch.Tensor:
        logits, vae_loss = (pred[0], pred[1]) if isinstance(pred, tuple | list) else (pred, None)
        label = target["label"] if isinstance(target, dict) else target
        loss = self.seg_loss(logits, label)
        if vae_loss is not None and self.vae_weight:
            loss = loss + self.vae_weight * vae_loss
        if self.weak_loss is not None and self.weak_loss.weight and isinstance(target, dict) and "tumor_fraction_prior" in target:
            loss = loss + self.weak_loss(logits, target["liver"], target["tumor_fraction_prior"], target.get("tumor_fraction_std"))
        return loss
