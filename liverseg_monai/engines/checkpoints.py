"""Checkpoint discovery for resumable training, and the record of what a training was run with.

``models/train_config.json`` sits next to the weights: training writes the effective values (bundle
defaults with the user's overrides merged) of the config keys that define the trained network and its
preprocessing; an inference config reads them back, so a folder trained with
``--encoder resnet10 --aspp_channels 32`` runs inference, ``ckpt_export`` and MONAI Label with the plain
command. In a training config (one key listing the recorded values, one handler)::

    "train_config": {"encoder": "@encoder", "aspp_channels": "@aspp_channels"},
    "train": {"handlers": [..., {"_target_": "liverseg_monai.engines.checkpoints.TrainConfigWriter",
                                 "path": "$@ckpt_dir + '/train_config.json'", "values": "@train_config"}]}

and in the inference config (the recorded value, else the bundle's default; a command-line override
still wins, because it replaces the key)::

    "trained_with": "$liverseg_monai.engines.checkpoints.read_train_config(@bundle_root + '/models')",
    "encoder": "$@trained_with.get('encoder', 'resnet50')",

Nothing is written into ``configs/``: a bundle folder without the record (the repository's, a fresh
download) behaves as before.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TRAIN_CONFIG = "train_config.json"


def latest_checkpoint(ckpt_dir: str | os.PathLike, pattern: str = "checkpoint_epoch=*.pt") -> str:
    """Path of the newest ``checkpoint_epoch=N.pt`` in ``ckpt_dir`` (highest N), or ``""`` when none.

    Bundle configs disable their resume ``CheckpointLoader`` with ``"_disabled_": "$not @resume_ckpt"``.
    """
    found = glob.glob(os.path.join(str(ckpt_dir), pattern))

    def epoch(path: str) -> int:
        m = re.search(r"=(\d+)", os.path.basename(path))
        return int(m.group(1)) if m else -1

    return max(found, key=epoch) if found else ""


def require_checkpoint(path: str | os.PathLike, alternative: str | os.PathLike | None = None) -> str:
    """Return ``path`` if it exists, else raise a clear error: inference with untrained weights would
    produce a silently wrong answer. ``alternative`` (e.g. a user-given weights file) also satisfies it."""
    from liverseg_monai.errors import InputError

    if os.path.isfile(path):
        return str(path)
    if alternative and os.path.isfile(alternative):
        return str(alternative)
    raise InputError(path, "no trained weights: train the bundle first (configs/train.json) or place a checkpoint there")


def write_train_config(path: str | os.PathLike, values: Mapping[str, Any]) -> Path:
    """Write ``values`` (config id -> effective value) as the JSON record ``path``, atomically, on rank 0 only.

    ``path`` may be a folder (``models/``): the record is then ``<folder>/train_config.json``. Values must
    be JSON data (numbers, strings, lists, dicts, ``null``); anything else raises a ``TypeError`` naming the
    key, before a file is touched.
    """
    from liverseg_monai.engines.distributed import is_main_process
    from liverseg_monai.io.atomic import atomic_write_text

    path = Path(path)
    if path.suffix != ".json":
        path = path / TRAIN_CONFIG
    record = {}
    for key, value in values.items():
        try:
            record[str(key)] = json.loads(json.dumps(value))
        except (TypeError, ValueError) as err:
            raise TypeError(f"{path}: config key '{key}' has a value that is not JSON data ({type(value).__name__})") from err
    if is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


def read_train_config(path: str | os.PathLike) -> dict[str, Any]:
    """The values a training recorded with :func:`write_train_config`; ``{}`` when there is no record.

    ``path`` is the record or the folder holding it (``models/``). A record that is not a JSON object
    raises :class:`~liverseg_monai.errors.InputError` naming the file: inference must not silently fall
    back to the defaults when the weights were trained with other values.
    """
    from liverseg_monai.errors import InputError

    path = Path(path)
    if path.suffix != ".json":
        path = path / TRAIN_CONFIG
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"unreadable training record ({err}); delete it only if the weights next to it "
                               "were trained with the bundle's defaults") from err
    if not isinstance(record, dict):
        raise InputError(path, f"training record must be a JSON object of config values, got {type(record).__name__}")
    return record


class TrainConfigWriter:
    """Trainer handler: :func:`write_train_config` when the trainer starts (rank 0 only).

    Listed in a training config's ``train#handlers``; every run (and every resume) rewrites the record,
    so it always names the values the weights next to it were trained with.

    Args:
        path: the record (``models/train_config.json``) or its folder.
        values: config id -> effective value, e.g. ``{"encoder": "@encoder"}`` in the config.
    """

    def __init__(self, path: str | os.PathLike, values: Mapping[str, Any]):
        self.path = path
        self.values = dict(values)

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine=None) -> None:
        write_train_config(self.path, self.values)
