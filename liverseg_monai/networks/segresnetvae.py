"""SegResNetVAE for inference and export: the segmentation alone; the VAE branch only in training.

MONAI's :class:`~monai.networks.nets.SegResNetVAE` (Myronenko, "3D MRI brain tumor segmentation using
autoencoder regularization", BrainLes 2018, arXiv:1810.11654) returns ``(seg, vae_loss)`` in training
mode and ``(seg, None)`` in eval mode. Bundle tooling (``verify_net_in_out``, ``ckpt_export``, sliding
window inferers) expects one tensor, so :class:`SegResNetVAESeg` returns the segmentation logits alone
from ``forward`` and offers :meth:`SegResNetVAESeg.forward_with_vae_loss` for training;
:class:`WithVAELoss` is the training view that a ``SupervisedTrainer`` calls. Both share parameters,
so one plain state dict serves training, inference and export.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import SegResNetVAE
from torch import nn


class SegResNetVAESeg(SegResNetVAE):
    """A :class:`~monai.networks.nets.SegResNetVAE` whose ``forward`` returns only the segmentation.

    Args:
        input_image_size: spatial size ``(X, Y, Z)`` of training inputs; fixes the VAE's fully connected
            layers, so training crops/resizes every input to exactly this size. Each entry must be a
            multiple of ``2 ** len(blocks_down)``. Inference (``forward``) accepts any size that is a
            multiple of ``2 ** (len(blocks_down) - 1)``.
        in_channels, out_channels, init_filters, blocks_down, blocks_up, vae_nz, vae_estimate_std,
        vae_default_std, dropout_prob, norm, act, upsample_mode: as in MONAI's ``SegResNetVAE``.

    Shapes:
        ``forward``: ``(B, in_channels, X, Y, Z)`` -> logits ``(B, out_channels, X, Y, Z)``.
        ``forward_with_vae_loss``: the same input of size ``input_image_size`` -> ``(logits, vae_loss)``
        with ``vae_loss`` a scalar (KL-like regulariser + image reconstruction MSE).
    """

    def __init__(
        self,
        input_image_size: Sequence[int],
        in_channels: int = 1,
        out_channels: int = 2,
        init_filters: int = 8,
        blocks_down: Sequence[int] = (1, 2, 2, 4),
        blocks_up: Sequence[int] = (1, 1, 1),
        vae_nz: int = 256,
        vae_estimate_std: bool = False,
        vae_default_std: float = 0.3,
        dropout_prob: float | None = None,
        norm: tuple | str = ("GROUP", {"num_groups": 8}),
        act: tuple | str = ("RELU", {"inplace": True}),
        upsample_mode: str = "nontrainable",
    ):
        zoom = 2 ** len(blocks_down)
        if any(int(s) % zoom for s in input_image_size):
            raise ValueError(f"input_image_size {list(input_image_size)} must be multiples of {zoom} for {len(blocks_down)} levels")
        super().__init__(
            input_image_size=[int(s) for s in input_image_size],
            vae_estimate_std=vae_estimate_std,
            vae_default_std=vae_default_std,
            vae_nz=vae_nz,
            spatial_dims=len(input_image_size),
            init_filters=init_filters,
            in_channels=in_channels,
            out_channels=out_channels,
            dropout_prob=dropout_prob,
            act=act,
            norm=norm,
            blocks_down=tuple(blocks_down),
            blocks_up=tuple(blocks_up),
            upsample_mode=upsample_mode,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segmentation logits ``(B, out_channels, *spatial)``; no VAE branch."""
        x, down_x = self.encode(x)
        down_x.reverse()
        return self.decode(x, down_x)

    @torch.jit.unused
    def forward_with_vae_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, vae_loss)``; ``x`` must have the spatial size ``input_image_size``."""
        if list(x.shape[2:]) != list(self.input_image_size):
            raise ValueError(f"the VAE branch needs inputs of size {list(self.input_image_size)}, got {list(x.shape[2:])}")
        features, down_x = self.encode(x)
        down_x.reverse()
        seg = self.decode(features, down_x)
        return seg, self._get_vae_loss(x, features)


class WithVAELoss(nn.Module):
    """Training view of a :class:`SegResNetVAESeg`: ``forward`` returns ``(logits, vae_loss)``.

    It holds the same module (no copy), so a ``SupervisedTrainer`` can call it while the checkpoint
    saver and the optimizer use the wrapped network. Pair it with
    :class:`liverseg_monai.losses.vae.SegVAELoss`, which adds the weighted ``vae_loss`` to the
    segmentation loss.
    """

    def __init__(self, net: SegResNetVAESeg):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.forward_with_vae_loss(x)
