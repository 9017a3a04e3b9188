"""``python scripts/train.py run --config_file CONFIGS [--KEY VALUE ...]``: Auto3DSeg's training entry point."""

from __future__ import annotations

from collections.abc import Sequence

import fire

from liverseg_monai.ecosystem.auto3dseg import train


def run(config_file: str | Sequence[str], **override) -> None:
    train(config_file, **override)


if __name__ == "__main__":
    fire.Fire()
