"""Recipes: how to run each bundle on synthetic data, at smoke-test and demo scale.

``tools/recipes/<bundle>.yaml`` is read by the shared bundle test harness (``tests/bundles/``), by
``make demo`` and by the benchmarks; :mod:`tools.runner` runs its stages. Layout::

    bundle: liver_ct_unet_segmentation
    synth:                      # dataset for the smoke tests: python -m liverseg_monai synth ...
      kind: lits
      n: 5
      seed: 0
      options: {size: [48, 48, 24]}
      prepare: null             # optional {kind: hcc-tace, options: {...}}: convert the synthetic raw
                                # layout with `python -m liverseg_monai prepare` before the runs
    verify_net_in_out:          # arguments of `monai.bundle verify_net_in_out`, or `skip: reason`
      config: inference.json
      args: {n: 1, any: 16}
      overrides: {}
    export:                     # TorchScript export via `monai.bundle ckpt_export`
      config: inference.json
      net_id: network_def
      input_shape: [1, 1, 128, 128]
    stages:                     # run in order with `monai.bundle run`, smoke scale
      - name: train
        config: [train.json]
        output_dir: train       # passed as --output_dir <tmp>/train
        overrides: {"train#trainer#max_epochs": 1}
        expect: ["models/model.pt"]          # relative to bundle_root
      - name: inference
        config: [inference.json]
        output_dir: infer
        check_outputs: {glob: "*_seg.nii.gz", geometry: nifti}
      - name: evaluate
        config: [train.json, evaluate.json]
        output_dir: eval
        expect_outputs: ["summary.json", "per_case.csv"]   # relative to output_dir
    demo:                       # the same keys, demo scale; `report` names what goes in report.md
      synth: {...}
      stages: [...]
      report: {metrics: eval/summary.json, overlays: "infer/*.png"}

Overrides are bundle config ids (``#`` separated) and values; they are passed on the command line
(:func:`tools.runner.run_stage`).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

RECIPE_DIR = Path(__file__).parent


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def load_recipe(bundle: str) -> dict:
    path = RECIPE_DIR / f"{bundle}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no recipe for bundle '{bundle}' (every bundle needs one)")
    return yaml.safe_load(path.read_text())


def synthesize(spec: dict, out: str | os.PathLike) -> Path:
    """Write the synthetic dataset a recipe's ``synth`` section describes; returns the dataset folder.

    With a ``prepare`` entry the generator writes to ``<out>_raw`` and the preparer converts that into
    ``out``; option values starting with ``raw:`` are paths inside the raw folder.
    """
    from liverseg_monai.data.synth import get_synthesizer

    out = Path(out)
    kwargs = dict(spec.get("options") or {})
    if "n" in spec:
        kwargs["n"] = spec["n"]
    prepare = spec.get("prepare")
    raw = out.parent / f"{out.name}_raw" if prepare else out
    get_synthesizer(spec["kind"])(raw, seed=spec.get("seed", 0), **kwargs)
    if prepare:
        from liverseg_monai.data.prepare import get_preparer

        options = {k: (str(raw / v[len("raw:"):]) if isinstance(v, str) and v.startswith("raw:") else v)
                   for k, v in (prepare.get("options") or {}).items()}
        get_preparer(prepare["kind"])(raw, out, seed=spec.get("seed", 0), **options)
    return out
