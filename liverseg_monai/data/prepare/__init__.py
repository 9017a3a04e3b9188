"""Turn official dataset layouts into a dataset folder with ``dataset.json``:
``python -m liverseg_monai prepare KIND --src DIR --out D [--seed S] [--option value ...]``.
"""

from __future__ import annotations

import importlib

# kind -> "module:function"; each function takes (src, out, seed, **options) and returns the dataset.json path
PREPARERS: dict[str, str] = {
    "lits": "liverseg_monai.data.prepare.lits:prepare_lits",
    "hcc-tace": "liverseg_monai.data.prepare.hcc_tace:prepare_hcc_tace",
    "bcss": "liverseg_monai.data.prepare.bcss:prepare_bcss",
    "glas": "liverseg_monai.data.prepare.glas:prepare_glas",
}


def get_preparer(kind: str):
    if kind not in PREPARERS:
        raise KeyError(f"unknown dataset layout '{kind}'; choose one of {', '.join(sorted(PREPARERS))}")
    module, func = PREPARERS[kind].split(":")
    return getattr(importlib.import_module(module), func)
