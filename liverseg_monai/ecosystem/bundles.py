"""Bundle plumbing shared by the MONAI Label, Auto3DSeg and DICOM integrations."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from liverseg_monai.io.atomic import atomic_path


def init_random_weights(bundle_root: str | os.PathLike, weights: Mapping[str, str] | None = None,
                        config: str | Sequence[str] = "configs/inference.json", seed: int = 0,
                        overrides: Mapping[str, object] | None = None) -> list[Path]:
    """Save randomly initialised networks of a bundle as plain state dicts (plumbing checks only).

    Args:
        bundle_root: the bundle folder.
        weights: checkpoint path (relative to ``bundle_root``) -> config id of the network definition,
            default ``{"models/model.pt": "network_def"}``.
        config: config file(s) relative to ``bundle_root`` that define the networks.
        seed: torch seed, so the same call writes the same weights.
        overrides: config overrides (``id -> value``) applied before instantiating.

    Returns:
        the written checkpoint paths.
    """
    root = Path(bundle_root)
    parser = ConfigParser()
    parser.read_config([str(root / c) for c in ([config] if isinstance(config, str) else config)])
    parser["bundle_root"] = str(root)
    for key, value in (overrides or {}).items():
        parser[key] = value
    written = []
    for rel, net_id in (weights or {"models/model.pt": "network_def"}).items():
        torch.manual_seed(seed)
        net = parser.get_parsed_content(net_id, instantiate=True)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(net.state_dict(), tmp)
        written.append(path)
    return written


def run_bundle(bundle_root: str | os.PathLike, configs: Sequence[str], python: str = sys.executable,
               timeout_s: float = 600.0, **overrides: object) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run`` on ``configs`` (relative to ``bundle_root``) with ``--key value`` overrides.

    Raises:
        RuntimeError: the run failed; the message holds the tail of its output.
    """
    root = Path(bundle_root)
    files = [str(root / c) for c in configs]
    cmd = [python, "-m", "monai.bundle", "run", "--config_file", files[0] if len(files) == 1 else str(files),
           "--bundle_root", str(root)]
    if (root / "configs" / "logging.conf").is_file():
        cmd += ["--logging_file", str(root / "configs" / "logging.conf")]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"bundle run failed ({proc.returncode}): {' '.join(cmd)}\n{(proc.stdout + proc.stderr)[-4000:]}")
    return proc


def set_config_values(bundle_root: str | os.PathLike, config: str, values: Mapping[str, object]) -> Path:
    """Rewrite ``config`` (relative to ``bundle_root``) of a bundle *copy* with ``id -> value`` set.

    For tools that run a bundle without taking overrides (MONAI Label reads ``configs/inference.json``
    as it is): for example smoke-scale sizes in a throw-away copy. Ids use ``#`` between levels.
    """
    path = Path(bundle_root) / config
    parser = ConfigParser()
    parser.read_config(str(path))
    for key, value in values.items():
        parser[key] = value
    with atomic_path(path) as tmp:
        ConfigParser.export_config_file(parser.get(), str(tmp), fmt="json", indent=4)
    return path


def save_network_weights(bundle_root: str | os.PathLike, out: str = "models/model.pt",
                         config: str = "configs/inference.json", network_id: str = "network",
                         load: Mapping[str, str] | None = None) -> Path:
    """Save the state dict of a bundle's ``network`` after loading sub-network checkpoints into it.

    MONAI Label loads one ``models/model.pt`` into the bundle's ``network``; a bundle whose network is
    composed of several checkpointed parts (the two-stage tumour bundle: ``liver#network_def`` from
    ``models/model_liver.pt``, ``tumor#network_def`` from ``models/model_tumor.pt``) is served by
    saving the composed network's state dict once.

    Args:
        load: checkpoint path (relative to ``bundle_root``) -> config id of the part it holds.
    """
    root = Path(bundle_root)
    parser = ConfigParser()
    parser.read_config(str(root / config))
    parser["bundle_root"] = str(root)
    parser["device"] = "$torch.device('cpu')"
    network = parser.get_parsed_content(network_id)
    for rel, part_id in (load or {}).items():
        part = parser.get_parsed_content(part_id)
        part.load_state_dict(torch.load(root / rel, map_location="cpu", weights_only=True))
    path = root / out
    with atomic_path(path) as tmp:
        torch.save(network.state_dict(), tmp)
    return path
