"""Synthetic, format-faithful datasets: ``python -m liverseg_monai synth KIND --out D --seed S [--n N]``.

Each generator is deterministic for a seed, writes its files under ``D`` and a ``D/dataset.json`` in
the data contract of :mod:`liverseg_monai.data.datalist`. Generators register themselves here by
module path so importing this package stays cheap.
"""

from __future__ import annotations

import importlib

# kind -> "module:function"; each function takes (out, seed, n, **options) and returns the dataset.json path
SYNTHESIZERS: dict[str, str] = {
    "lits": "liverseg_monai.data.synth.lits:synth_lits",
    "hcc": "liverseg_monai.data.synth.hcc:synth_hcc",
    "histo": "liverseg_monai.data.synth.histo:synth_histo",
    "slide": "liverseg_monai.data.synth.slide:synth_slide",
    "steatosis": "liverseg_monai.data.synth.steatosis:synth_steatosis",
}


def get_synthesizer(kind: str):
    if kind not in SYNTHESIZERS:
        raise KeyError(f"unknown synthetic dataset '{kind}'; choose one of {', '.join(sorted(SYNTHESIZERS))}")
    module, func = SYNTHESIZERS[kind].split(":")
    return getattr(importlib.import_module(module), func)


def split_names(n: int, fractions=(0.6, 0.2, 0.2)) -> list[str]:
    """Assign ``n`` cases to training/validation/testing, every part non-empty when ``n >= 3``."""
    n_val = max(1, round(n * fractions[1])) if n >= 3 else 0
    n_test = max(1, round(n * fractions[2])) if n >= 3 else 0
    n_train = n - n_val - n_test
    return ["training"] * n_train + ["validation"] * n_val + ["testing"] * n_test
