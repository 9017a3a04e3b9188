"""Loading exported TorchScript models that use torchvision operators.

A DeepLabV3+ with deformable ASPP calls ``torchvision::deform_conv2d``; ``torch.jit.load`` fails with
"Unknown builtin op" unless torchvision has registered its operators first. Use
:func:`load_torchscript` instead of ``torch.jit.load``.
"""

from __future__ import annotations

import os

import torch
import torchvision  # noqa: F401  (registers torchvision::deform_conv2d before torch.jit.load)

from liverseg_monai.errors import InputError


def load_torchscript(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """Load a TorchScript file (``monai.bundle ckpt_export`` output) after importing torchvision.

    Raises:
        InputError: naming ``path`` when it is missing or is not a TorchScript archive.
    """
    if not os.path.isfile(path):
        raise InputError(path, "TorchScript model file does not exist")
    try:
        return torch.jit.load(str(path), map_location=map_location)
    except (RuntimeError, ValueError) as err:
        raise InputError(path, f"not a loadable TorchScript model ({str(err).splitlines()[0]})") from None
