"""Recipes: how to run each bundle on synthetic data, at smoke-test and demo scale.

``liverseg_monai/recipes/<bundle>.yaml`` is read by the shared bundle test harness
(``tests/bundles/``) and by ``make demo``. Layout::

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

Overrides are bundle config ids (``#`` separated) and values; they are passed on the command line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

RECIPE_DIR = Path(__file__).parent
REPO_ROOT = Path(__file__).resolve().parents[2]


def bundles_dir() -> Path:
    """The repository's ``bundles/`` folder (``LIVERSEG_BUNDLES`` overrides it)."""
    return Path(os.environ.get("LIVERSEG_BUNDLES", REPO_ROOT / "bundles"))


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


def copy_bundle(bundle: str, dest: str | os.PathLike) -> Path:
    """Copy ``bundles/<bundle>`` to ``dest`` without weights or run outputs, so runs never touch the repo."""
    src = bundles_dir() / bundle
    dest = Path(dest)
    ignore = shutil.ignore_patterns("*.pt", "*.ts", "*.onnx", "runs", "eval", "mlruns", "__pycache__")
    shutil.copytree(src, dest, ignore=ignore, dirs_exist_ok=True)
    (dest / "models").mkdir(exist_ok=True)
    return dest


def _cli_value(value) -> str:
    if isinstance(value, str):
        return value
    return repr(value)


def bundle_command(
    bundle_root: str | os.PathLike,
    configs: list[str] | str,
    dataset_dir: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    overrides: dict | None = None,
    verb: str = "run",
) -> list[str]:
    """The ``python -m monai.bundle <verb>`` command line for a bundle and its overrides."""
    bundle_root = Path(bundle_root)
    configs = [configs] if isinstance(configs, str) else list(configs)
    files = [str(bundle_root / "configs" / c) for c in configs]
    cmd = [sys.executable, "-m", "monai.bundle", verb]
    cmd += ["--config_file", files[0] if len(files) == 1 else json.dumps(files)]
    if verb == "run":
        cmd += ["--meta_file", str(bundle_root / "configs" / "metadata.json")]
        if (bundle_root / "configs" / "logging.conf").exists():
            cmd += ["--logging_file", str(bundle_root / "configs" / "logging.conf")]
    cmd += ["--bundle_root", str(bundle_root)]
    if dataset_dir is not None:
        cmd += ["--dataset_dir", str(dataset_dir)]
    if output_dir is not None:
        cmd += ["--output_dir", str(output_dir)]
    for key, value in (overrides or {}).items():
        cmd += [f"--{key}", _cli_value(value)]
    return cmd


def run_stage(
    stage: dict,
    bundle_root: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    work_dir: str | os.PathLike,
    extra_overrides: dict | None = None,
    env: dict | None = None,
    capture: bool = True,
    timeout: float | None = None,
) -> subprocess.CompletedProcess:
    """Run one recipe stage with ``monai.bundle run``; raises ``RuntimeError`` with the log on failure."""
    work_dir = Path(work_dir)
    output_dir = work_dir / stage.get("output_dir", stage["name"])
    overrides = {**(stage.get("overrides") or {}), **(extra_overrides or {})}
    cmd = bundle_command(bundle_root, stage["config"], dataset_dir, output_dir, overrides, verb=stage.get("verb", "run"))
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    proc = subprocess.run(cmd, capture_output=capture, text=True, env=full_env, timeout=timeout)
    if proc.returncode != 0:
        log = (proc.stdout or "")[-4000:] + "\n" + (proc.stderr or "")[-8000:] if capture else ""
        raise RuntimeError(f"stage '{stage['name']}' failed (exit {proc.returncode}):\n{' '.join(cmd)}\n{log}")
    return proc
