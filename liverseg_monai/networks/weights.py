"""Encoder weights: save a ResNet backbone as ``backbone.pt`` and load it into any network's encoder.

``backbone.pt`` (written by the DINO pretraining bundle, or any torchvision ResNet state dict a user
has) is a plain ``{name: tensor}`` dict with **torchvision ResNet key names** and no classifier::

    conv1.weight, bn1.weight, bn1.bias, bn1.running_mean, bn1.running_var, bn1.num_batches_tracked,
    layer1.0.conv1.weight, ..., layer4.2.bn3.running_var            (no ``fc.*``)

:func:`load_encoder_weights` puts such a file into the encoder of a segmentation network by key
prefix, for example

- MONAI ``FlexibleUNet(backbone="resnet50")``: ``encoder.conv1.weight``, ``encoder.layer1.0...``;
- torchvision-style DeepLabV3(+): ``backbone.conv1.weight``, ``backbone.layer1.0...``;
- a bare torchvision ``resnet50()``: no prefix (``fc.*`` stays as initialised).

It reports the keys it could not place instead of failing silently, and adapts the first convolution
to the target's number of input channels (1-channel CT from an RGB backbone: the kernel is averaged
over the three colour channels).

Example::

    net = FlexibleUNet(in_channels=1, out_channels=3, backbone="resnet50", spatial_dims=2)
    report = load_encoder_weights(net, "models/backbone.pt")      # prefix found: "encoder."
    print(report)          # loaded 318 tensors into 'encoder.'; adapted: encoder.conv1.weight ...
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from liverseg_monai.errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "EncoderLoadReport",
    "adapt_input_conv",
    "backbone_state_dict",
    "load_encoder_weights",
    "load_pretrained_encoder",
    "read_backbone_file",
    "save_backbone",
]

# source keys that never belong to an encoder: classifier and projection heads
IGNORED_PREFIXES = ("fc.", "head.", "heads.", "classifier.", "projection.")
# wrappers around the state dict in common checkpoint files, looked up in this order
WRAPPER_KEYS = ("teacher", "state_dict", "model", "backbone", "encoder", "network", "student")
# prefixes that wrap the ResNet keys themselves in such files (DDP, DINO's MultiCropWrapper, ...)
SOURCE_PREFIXES = ("module.", "_orig_mod.", "backbone.", "encoder.", "model.")
# key that identifies where a torchvision-style ResNet sits inside a target network
ANCHOR_KEY = "layer1.0.conv1.weight"


@dataclass
class EncoderLoadReport:
    """What :func:`load_encoder_weights` did; like ``torch.nn.modules.module._IncompatibleKeys``.

    Attributes:
        prefix: where in the target the encoder sits (``"encoder."``, ``"backbone."``, ``""``).
        loaded_keys: target keys that received a tensor from the file.
        missing_keys: target keys under ``prefix`` that the file did not provide (left as initialised).
        unexpected_keys: file keys (after dropping ``fc.*``) with no counterpart in the target.
        mismatched_keys: file keys whose shape differs from the target's and could not be adapted,
            as ``"key: file shape -> target shape"``.
        adapted_keys: target keys whose tensor was adapted (first conv to another channel count).
        ignored_keys: file keys dropped on purpose (``fc.*``, heads).
    """

    prefix: str
    loaded_keys: list[str] = field(default_factory=list)
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    mismatched_keys: list[str] = field(default_factory=list)
    adapted_keys: list[str] = field(default_factory=list)
    ignored_keys: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every encoder tensor was loaded and every file tensor was used."""
        return not (self.missing_keys or self.unexpected_keys or self.mismatched_keys)

    def __str__(self) -> str:
        parts = [f"loaded {len(self.loaded_keys)} tensors into '{self.prefix}'"]
        for name in ("missing_keys", "unexpected_keys", "mismatched_keys", "adapted_keys"):
            keys = getattr(self, name)
            if keys:
                shown = ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")
                parts.append(f"{name.replace('_keys', '')}: {shown}")
        return "; ".join(parts)


def backbone_state_dict(module: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """The encoder-only state dict of ``module`` with torchvision ResNet key names (no ``fc.*``).

    Args:
        module: a ResNet (``fc`` replaced by ``nn.Identity`` or not) or a network holding one.
        prefix: the ResNet's key prefix inside ``module`` (``"backbone."``), stripped from the names.
    """
    out = {}
    for key, value in module.state_dict().items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name.startswith(IGNORED_PREFIXES):
            continue
        out[name] = value.detach().cpu().clone()
    return out


def save_backbone(module: nn.Module, path: str | os.PathLike, prefix: str = "") -> Path:
    """Write :func:`backbone_state_dict` of ``module`` to ``path`` atomically (``torch.save``)."""
    from liverseg_monai.io.atomic import atomic_path

    state = backbone_state_dict(module, prefix)
    if not state:
        raise ValueError(f"no tensors under prefix '{prefix}' in {type(module).__name__}")
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    """Find the ``{name: tensor}`` dict inside a checkpoint file's content."""
    for _ in range(3):
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    raise InputError(path, "holds no state dict of tensors (expected {name: tensor}, optionally under "
                           f"one of the keys {', '.join(WRAPPER_KEYS)})")


def _strip_source_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes shared by the ResNet keys (``module.``, ``backbone.``, ...)."""
    changed = True
    while changed:
        changed = False
        for p in SOURCE_PREFIXES:
            inside = [k for k in state if k.startswith(p)]
            wraps_resnet = any(k[len(p):] in (ANCHOR_KEY, "conv1.weight") for k in inside)
            if inside and (len(inside) == len(state) or wraps_resnet):
                # keep only the wrapped part: siblings like "head.*" of a DINO wrapper are not encoder keys
                state = {k[len(p):]: v for k, v in state.items() if k.startswith(p)}
                changed = True
    return state


def read_backbone_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a backbone / ResNet state dict with ``torch.load(weights_only=True)``; keys unwrapped.

    Accepts a plain state dict (``backbone.pt``, torchvision ``resnet50-*.pth``), a DDP or DINO-wrapped
    one (``module.``, ``backbone.`` prefixes) and checkpoints holding it under ``teacher``, ``state_dict``,
    ``model``, ... The returned keys still include ``fc.*`` if the file has them.

    Raises:
        InputError: the file is missing, unreadable, not a torch file, or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "backbone weights file does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the unpickler raises many types (IndexError, UnpicklingError, ...) on bad bytes
        problem = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(path, f"not a readable torch weights file ({problem[:200]})") from None
    return _strip_source_prefixes(_unwrap(obj, path))


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a first-convolution kernel ``[out, c, kh, kw]`` to ``in_channels`` input channels.

    One channel: the mean over the ``c`` input channels (a grey image then sees the average colour
    filter). More channels: the kernel tiled over the channels and scaled by ``c / in_channels`` so the
    response to a constant image keeps its magnitude.
    """
    c = weight.shape[1]
    if in_channels == c:
        return weight
    if in_channels == 1:
        return weight.mean(dim=1, keepdim=True)
    reps = -(-in_channels // c)
    return weight.repeat(1, reps, 1, 1)[:, :in_channels] * (c / in_channels)


def _find_prefix(target_keys: list[str], source: dict[str, torch.Tensor]) -> str | None:
    """The target prefix under which most source keys have a counterpart (anchored on ResNet keys)."""
    candidates = {k[: -len(ANCHOR_KEY)] for k in target_keys if k.endswith(ANCHOR_KEY)}
    candidates |= {k[: -len("conv1.weight")] for k in target_keys if k.endswith("conv1.weight") and "layer" not in k}
    target = set(target_keys)
    best, best_hits = None, 0
    for p in sorted(candidates, key=len):
        hits = sum(1 for k in source if p + k in target)
        if hits > best_hits:
            best, best_hits = p, hits
    return best


def load_encoder_weights(
    model: nn.Module,
    path: str | os.PathLike,
    prefix: str | None = "auto",
    strict: bool = False,
) -> EncoderLoadReport:
    """Load a ResNet ``backbone.pt`` (torchvision key names) into the encoder of ``model``.

    Args:
        model: the target network; its encoder holds torchvision ResNet key names under ``prefix``.
        path: the weights file (see :func:`read_backbone_file` for the accepted layouts).
        prefix: the encoder's key prefix in ``model`` (``"encoder."`` for MONAI FlexibleUNet,
            ``"backbone."`` for torchvision DeepLab, ``""`` for a bare ResNet), or ``"auto"`` / ``None``
            to pick the prefix under which most file keys match.
        strict: raise :class:`InputError` unless every encoder key was loaded and every file key used.

    Returns:
        an :class:`EncoderLoadReport`; missing, unexpected and mismatched keys are also logged.

    Raises:
        InputError: unreadable file, no file key matching the model, or (``strict``) an incomplete load.
    """
    path = Path(path)
    source = read_backbone_file(path)
    ignored = sorted(k for k in source if k.startswith(IGNORED_PREFIXES))
    source = {k: v for k, v in source.items() if not k.startswith(IGNORED_PREFIXES)}
    target_state = model.state_dict()
    target_keys = list(target_state)

    if prefix in (None, "auto"):
        prefix = _find_prefix(target_keys, source)
        if prefix is None:
            raise InputError(path, f"no key matches the encoder of {type(model).__name__} (file keys such as "
                                   f"{', '.join(list(source)[:3])}; expected torchvision ResNet names like "
                                   f"conv1.weight, {ANCHOR_KEY})")

    report = EncoderLoadReport(prefix=prefix, ignored_keys=ignored)
    new_state: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        tkey = prefix + key
        if tkey not in target_state:
            report.unexpected_keys.append(key)
            continue
        want = target_state[tkey]
        if value.shape != want.shape:
            if value.ndim == 4 and want.ndim == 4 and value.shape[0] == want.shape[0] and value.shape[2:] == want.shape[2:]:
                value = adapt_input_conv(value, want.shape[1])
                report.adapted_keys.append(tkey)
            else:
                report.mismatched_keys.append(f"{key}: {tuple(value.shape)} -> {tuple(want.shape)}")
                continue
        new_state[tkey] = value.to(dtype=want.dtype)
        report.loaded_keys.append(tkey)
    report.missing_keys = [k for k in target_keys if k.startswith(prefix) and k not in new_state
                           and not k[len(prefix):].startswith(IGNORED_PREFIXES)]

    if not new_state:
        raise InputError(path, f"no key matches {type(model).__name__} under prefix '{prefix}' "
                               f"(file keys such as {', '.join(list(source)[:3])})")
    if strict and not report.complete:
        raise InputError(path, f"does not match the encoder of {type(model).__name__} exactly: {report}")

    model.load_state_dict(new_state, strict=False)
    for name in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        if getattr(report, name):
            logger.warning("%s: %s %s", path, name.replace("_", " "), getattr(report, name))
    logger.info("%s: %s", path, report)
    return report


def load_pretrained_encoder(
    model: nn.Module, path: str | os.PathLike | None, prefix: str | None = "auto"
) -> EncoderLoadReport | None:
    """:func:`load_encoder_weights` when a weights file is given; nothing for ``None`` or ``""``.

    The form a training config uses, where ``pretrained_weights`` is empty unless the user passes a
    backbone (``--pretrained_weights models/backbone.pt``).

    Args:
        model: the target network.
        path: the ``backbone.pt`` file, or ``None`` / ``""`` to keep the network's initialisation.
        prefix: the encoder's key prefix in ``model`` (see :func:`load_encoder_weights`).

    Returns:
        the :class:`EncoderLoadReport`, or ``None`` when nothing was loaded.
    """
    if not path:
        return None
    return load_encoder_weights(model, path, prefix=prefix)


def load_module_weights(module: nn.Module, path: str | os.PathLike, stage: str = "training") -> nn.Module:
    """Load a plain state dict (``weights_only``) into ``module``; problems raise :class:`InputError` naming the file.

    ``stage`` names what writes the file, for the message when it is missing (``train.json``,
    ``train_autoencoder.json``, ...).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(path, f"missing: run the {stage} stage first") from None
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is an input problem
        raise InputError(path, f"not a readable PyTorch state dict ({err.__class__.__name__}: {err})") from None
    if not isinstance(state, dict):
        raise InputError(path, f"holds a {type(state).__name__}, expected a state dict")
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise InputError(path, f"does not fit the network of this config ({str(err).splitlines()[0]})") from None
    return module
