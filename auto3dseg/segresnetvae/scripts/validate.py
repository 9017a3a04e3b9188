"""``python scripts/validate.py run --config_file CONFIGS``: validation Dice of the trained ``model.pt`` on its fold."""

from __future__ import annotations

from collections.abc import Sequence

import fire

from liverseg_monai.ecosystem.auto3dseg import validate


def run(config_file: str | Sequence[str], **override) -> float:
    return validate(config_file, **override)


if __name__ == "__main__":
    fire.Fire()
