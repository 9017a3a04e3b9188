"""Checkpoint discovery for resumable training."""

from __future__ import annotations

import glob
import os
import re


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
