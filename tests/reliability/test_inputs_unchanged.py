"""Inputs are never modified: every bundle's inference and evaluation leave the dataset folder exactly
as they found it (each file's bytes and modification time, the list of files and folders, and the
folders' own modification times, which change when anything is created or deleted inside them even
briefly).

Each bundle runs its real ``inference.json`` and ``evaluate.json`` in-process on its recipe's
synthetic data (NIfTI volumes for the CT bundles, PNG tiles for the pathology bundles), the tumour
bundle also on DICOM series folders with DICOM-SEG output (which reads the source series again) and
DeepLab on a whole-slide TIFF, all with randomly initialised weights (``init_random_weights``): this
checks file handling, not accuracy.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from tools.recipes import load_recipe, synthesize
from tools.runner import config_parser, copy_bundle, init_random_weights, run_parsed

# bundle -> (checkpoint file -> network id, extra overrides for the inference runs)
WEIGHTS = {
    "liver_ct_unet_segmentation": {"models/model.pt": "network_def"},
    "liver_tumor_ct_segresnetvae": {"models/model_liver.pt": "liver#network_def", "models/model_tumor.pt": "tumor#network_def"},
    "liver_pathology_deeplab_segmentation": {"models/model.pt": "network_def"},
    "pathology_pathsegdiff_segmentation": {"models/model.pt": "network_def"},
    "liver_steatosis_maskrcnn": {"models/model.pt": "network_def"},
    "pathology_dino_pretraining": {"models/model.pt": "network_def"},
}


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every file's sha256, size and mtime, and every folder's mtime, under ``folder``."""
    state: dict[str, tuple] = {".": ("dir", folder.stat().st_mtime_ns)}
    for path in sorted(folder.rglob("*")):
        key, st = str(path.relative_to(folder)), path.stat()
        if path.is_dir():
            state[key] = ("dir", st.st_mtime_ns)
        else:
            state[key] = (hashlib.sha256(path.read_bytes()).hexdigest(), st.st_size, st.st_mtime_ns)
    return state


def run_config(root: Path, configs: list[str], data: Path, out: Path, overrides: dict) -> None:
    """``monai.bundle run`` in-process: ``initialize``, ``run`` and ``finalize`` of the merged configs."""
    run_parsed(config_parser(root, configs, {"dataset_dir": str(data), "output_dir": str(out), **overrides}))


def _stage(recipe: dict, name: str) -> dict:
    return next(s for s in recipe["stages"] if s["name"] == name)


def _small(spec: dict) -> dict:
    """The recipe's synthetic dataset with fewer cases (each split keeps at least one)."""
    return {**spec, "n": min(int(spec.get("n", 4)), 4 if spec["kind"] != "histo" else 6)}


@pytest.mark.parametrize("bundle", list(WEIGHTS))
def test_inference_and_evaluation_leave_the_inputs_untouched(bundle, tmp_path):
    recipe = load_recipe(bundle)
    data = synthesize(_small(recipe["synth"]), tmp_path / "data")
    root = copy_bundle(bundle, tmp_path / "bundle")
    infer = _stage(recipe, "inference")
    overrides = dict(infer.get("overrides") or {})
    init_random_weights(root, WEIGHTS[bundle], overrides=overrides)

    before = snapshot(data)
    assert len(before) > 3
    run_config(root, infer["config"], data, tmp_path / "infer", overrides)
    evaluate = _stage(recipe, "evaluate")
    run_config(root, evaluate["config"], data, tmp_path / "eval", dict(evaluate.get("overrides") or {}))
    assert any((tmp_path / "infer").iterdir()) and any((tmp_path / "eval").iterdir()), "the runs wrote nothing"
    after = snapshot(data)

    assert after.keys() == before.keys(), (f"files appeared {sorted(after.keys() - before.keys())} "
                                           f"or vanished {sorted(before.keys() - after.keys())} in the dataset folder")
    changed = [k for k in before if before[k] != after[k]]
    assert not changed, f"{bundle} modified its inputs: {changed}"


def test_whole_slide_inference_leaves_the_slide_untouched(tmp_path):
    bundle = "liver_pathology_deeplab_segmentation"
    data = synthesize({"kind": "slide", "n": 1, "seed": 0, "options": {"width": 512, "height": 384, "progress": False}}, tmp_path / "data")
    root = copy_bundle(bundle, tmp_path / "bundle")
    overrides = dict(_stage(load_recipe(bundle), "inference").get("overrides") or {})
    init_random_weights(root, WEIGHTS[bundle], overrides=overrides)
    before = snapshot(data)
    run_config(root, ["inference.json", "inference_slide.json"], data, tmp_path / "infer", overrides)
    assert any((tmp_path / "infer").iterdir())
    assert snapshot(data) == before


class Bright(torch.nn.Module):
    """Logits calling every voxel above the middle of the (already windowed) intensity range
    foreground, so the prediction is never empty and the DICOM-SEG writer always runs."""

    def forward(self, x):
        return torch.cat([0.5 - x, x - 0.5], dim=1) * 50


def test_dicom_series_inference_with_dicom_seg_leaves_the_series_untouched(tmp_path):
    from liverseg_monai.data.synth.hcc import synth_hcc

    data = tmp_path / "hcc"
    synth_hcc(data, seed=2, n=3, size=(24, 24, 8), extra_series=False)
    root = copy_bundle("liver_tumor_ct_segresnetvae", tmp_path / "bundle")
    overrides = {**_stage(load_recipe("liver_tumor_ct_segresnetvae"), "inference")["overrides"], "write_dicom_seg": True,
                 "liver#network_def": Bright(), "tumor#network_def": Bright(), "handlers": [], "initialize": []}
    before = snapshot(data)
    assert any(k.endswith(".dcm") for k in before)
    run_config(root, ["inference.json"], data, tmp_path / "infer", overrides)
    assert list((tmp_path / "infer").glob("*_seg.nii.gz")) and list((tmp_path / "infer").glob("*_seg.dcm"))
    assert snapshot(data) == before
