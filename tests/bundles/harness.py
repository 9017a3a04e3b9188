"""The shared bundle test harness: every folder in bundles/ is checked the same way.

For each bundle, its recipe (``tools/recipes/<bundle>.yaml``) says which synthetic data to
make and which overrides keep the runs tiny. The checks:

- ``configs/metadata.json`` validates with ``monai.bundle verify_metadata`` against the schema in
  ``../shared/schemas`` (the schema URL in the metadata otherwise);
- ``monai.bundle verify_net_in_out`` passes where the network returns a single tensor;
- the network exports to TorchScript with ``monai.bundle ckpt_export`` and, reloaded in a fresh
  process, gives the eager network's output;
- train (one short epoch), inference and evaluation run through ``monai.bundle run``; inference writes
  one output per testing case with the input's geometry.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from liverseg_monai.data.datalist import load_datalist
from tools.recipes import load_recipe, synthesize
from tools.runner import bundle_command, copy_bundle, run_stage

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SCHEMA = REPO.parent / "shared" / "schemas" / "meta_schema_20240725.json"


def bundle_names() -> list[str]:
    return sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs").is_dir())


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kw)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def check_metadata(bundle: str, tmp_path: Path) -> None:
    meta = REPO / "bundles" / bundle / "configs" / "metadata.json"
    if SCHEMA.is_file():
        schema = SCHEMA
    else:  # no local copy: let MONAI fetch the URL named in the metadata
        schema = tmp_path / "schema.json"
    cmd = [sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", str(meta), "--filepath", str(schema)]
    proc = run(cmd)
    assert "metadata is verified with no error" in (proc.stdout + proc.stderr), proc.stdout + proc.stderr


def check_net_in_out(bundle: str, tmp_path: Path) -> None:
    spec = load_recipe(bundle).get("verify_net_in_out") or {}
    if spec.get("skip"):
        import pytest

        pytest.skip(f"{bundle}: {spec['skip']}")
    root = copy_bundle(bundle, tmp_path / bundle)
    cmd = bundle_command(root, spec.get("config", "inference.json"), tmp_path, tmp_path / "out",
                         spec.get("overrides"), verb="verify_net_in_out")
    cmd.insert(4, spec.get("net_id", "network_def"))
    cmd += ["--meta_file", str(root / "configs" / "metadata.json")]
    for k, v in (spec.get("args") or {}).items():
        cmd += [f"--{k}", str(v)]
    proc = run(cmd)
    assert "data shape of network is verified with no error" in (proc.stdout + proc.stderr), proc.stdout + proc.stderr


_RELOAD = """
import sys, torch
import liverseg_monai.networks  # registers custom ops (torchvision's deformable conv) before loading
net = torch.jit.load(sys.argv[1], map_location="cpu")
x = torch.load(sys.argv[2])
with torch.no_grad():
    y = net(x)
torch.save(y, sys.argv[3])
"""


def check_export(bundle: str, tmp_path: Path) -> None:
    import torch
    from monai.bundle import ConfigParser

    spec = load_recipe(bundle).get("export") or {}
    if spec.get("skip"):
        import pytest

        pytest.skip(f"{bundle}: {spec['skip']}")
    root = copy_bundle(bundle, tmp_path / bundle)
    config = root / "configs" / spec.get("config", "inference.json")
    parser = ConfigParser()
    parser.read_config(str(config))
    parser["bundle_root"] = str(root)
    for k, v in (spec.get("overrides") or {}).items():
        parser[k] = v
    torch.manual_seed(0)
    net = parser.get_parsed_content(spec.get("net_id", "network_def"))
    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)
    ts = tmp_path / "model.ts"
    cmd = bundle_command(root, spec.get("config", "inference.json"), tmp_path, tmp_path / "out",
                         spec.get("overrides"), verb="ckpt_export")
    cmd.insert(4, spec.get("net_id", "network_def"))
    cmd += ["--filepath", str(ts), "--ckpt_file", str(ckpt), "--meta_file", str(root / "configs" / "metadata.json")]
    if spec.get("use_trace"):
        cmd += ["--use_trace", "True", "--input_shape", repr(list(spec["input_shape"]))]
    run(cmd)
    assert ts.is_file()

    x = torch.randn(*spec["input_shape"])
    torch.save(x, tmp_path / "x.pt")
    net.eval()
    with torch.no_grad():
        expected = net(x)
    run([sys.executable, "-c", _RELOAD, str(ts), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")])
    got = torch.load(tmp_path / "y.pt")
    if isinstance(expected, tuple | list):
        expected, got = expected[0], got[0]
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def _input_geometry(path: str):
    """(shape, affine) of an input image in the world frame (a NIfTI file or a DICOM series folder)."""
    import nibabel as nib

    if os.path.isdir(path):
        from liverseg_monai.io.dicom import read_series_geometry

        return read_series_geometry(path)
    img = nib.load(path)
    return img.shape[:3], img.affine


def check_outputs(spec: dict, dataset_dir: Path, out_dir: Path) -> list[str]:
    """One output per testing case; for ``geometry: nifti`` the input's exact shape and affine."""
    cases = load_datalist(dataset_dir, "testing")
    outputs = sorted(glob.glob(str(out_dir / "**" / spec["glob"]), recursive=True))
    assert len(outputs) == len(cases), f"expected {len(cases)} outputs in {out_dir}, found {outputs}"
    if spec.get("geometry") == "nifti":
        import nibabel as nib

        for case in cases:
            stem = os.path.basename(case["image"].rstrip("/")).split(".")[0]
            match = [o for o in outputs if os.path.basename(o).startswith(stem)]
            assert match, f"no output for {case['image']} among {outputs}"
            shape, affine = _input_geometry(case["image"])
            out = nib.load(match[0])
            assert out.shape[:3] == tuple(shape), f"{match[0]}: shape {out.shape} != input {shape}"
            np.testing.assert_allclose(out.affine, affine, atol=1e-4, err_msg=f"{match[0]}: affine differs from input")
    return outputs


def check_mlflow_run(output_dir: Path) -> None:
    """The run logged to MLflow's SQLite store under ``output_dir`` (MONAI's default tracking settings)."""
    import mlflow

    db = output_dir / "mlruns.db"
    assert db.is_file(), f"--tracking mlflow wrote no {db}"
    before = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        mlflow.set_tracking_uri(f"sqlite:///{db}")
        runs = mlflow.search_runs(search_all_experiments=True)
    finally:  # set_tracking_uri exports MLFLOW_TRACKING_URI; later tracked subprocesses must not inherit it
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before
    assert len(runs) >= 1 and (runs["status"] == "FINISHED").all(), runs
    assert any(c.startswith("metrics.") for c in runs.columns), f"no metrics logged: {list(runs.columns)}"


def run_stages(bundle: str, tmp_path: Path, scale: str = "smoke", track: bool = True) -> dict:
    """Synthesize data and run the recipe's stages in order; returns the paths used."""
    recipe = load_recipe(bundle)
    section = recipe if scale == "smoke" else recipe[scale]
    data = synthesize(section["synth"], tmp_path / "data")
    root = copy_bundle(bundle, tmp_path / bundle)
    for stage in section["stages"]:
        # training runs also prove `--tracking mlflow` (a local SQLite store under the stage's output_dir)
        tracking = {"tracking": "mlflow"} if stage["name"].startswith("train") and track else {}
        run_stage(stage, root, data, tmp_path, extra_overrides=tracking)
        if tracking:
            check_mlflow_run(tmp_path / stage.get("output_dir", stage["name"]))
        for rel in stage.get("expect", []):
            assert (root / rel).exists(), f"stage {stage['name']} did not write {rel}"
        out_dir = tmp_path / stage.get("output_dir", stage["name"])
        for rel in stage.get("expect_outputs", []):
            found = glob.glob(str(out_dir / rel))
            assert found, f"stage {stage['name']} did not write {rel} under {out_dir}"
            for f in found:
                if f.endswith(".json"):
                    json.loads(Path(f).read_text())
        if stage.get("check_outputs"):
            check_outputs(stage["check_outputs"], data, out_dir)
    return {"data": data, "bundle_root": root, "work": tmp_path}
