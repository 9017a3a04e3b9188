"""A trained bundle folder runs inference with the plain command: training recorded its overrides.

Each bundle trained at its recipe's smoke size (DeepLab: ``encoder: resnet10``, 32-channel ASPP and
decoder, 64-px patches; PathSegDiff: its three stages with the tiny autoencoder, UNet and head and the
liver histology class names; liver CT U-Net: 64 x 64 slices; the liver/tumour cascade: both stages at
32 x 32 x 16 with 8 filters, the tumour stage writing the record) writes ``models/train_config.json``;
``inference.json`` without any override then builds the same network, loads ``models/model.pt`` and
writes the same label maps as with the overrides repeated.
"""

from __future__ import annotations

import gzip
import json

import pytest

from tools.recipes import load_recipe, synthesize
from tools.runner import copy_bundle, run_stage

CASES = {
    "liver_pathology_deeplab_segmentation": {
        "stages": ("train",),
        "outputs": "*_label.png",
        "record": {"encoder": "resnet10", "output_stride": 16, "aspp_channels": 32, "decoder_channels": 32,
                   "patch_size": [64, 64]},
    },
    "liver_ct_unet_segmentation": {
        "stages": ("train",),
        "outputs": "*_seg.nii.gz",
        "record": {"num_classes": 2, "context_slices": 0, "spatial_size": [64, 64], "hu_window": [-200, 250]},
    },
    "liver_tumor_ct_segresnetvae": {
        # the tumour stage writes models/model.pt (both stages' networks): its record must name everything
        "stages": ("train_liver", "train_tumor"),
        "last_stage_writes": True,
        "outputs": "*_seg.nii.gz",
        "record": {"spacing": [8.0, 8.0, 10.0], "with_vessels": False, "init_filters": 8,
                   "liver_roi_size": [32, 32, 16], "liver_hu_window": [-200, 300],
                   "tumor_roi_size": [32, 32, 16], "tumor_hu_window": [-100, 250], "tumor_margin_mm": 10.0},
    },
    "pathology_pathsegdiff_segmentation": {
        "stages": ("train_autoencoder", "train_diffusion", "train"),
        "outputs": "*_seg.png",
        "record": {"class_names": ["background", "parenchyma", "portal_tract", "vessel", "bile_duct", "inflammation",
                                   "steatosis"],
                   "patch_size": [32, 32], "latent_channels": 4, "norm_num_groups": 8,
                   "autoencoder_channels": [8, 16], "unet_channels": [16, 32], "num_head_channels": 16,
                   "context_dim": 32, "ssl_arch": "resnet18", "timestep": 50, "feature_levels": None,
                   "head_channels": [16]},
    },
}


@pytest.mark.parametrize("bundle", sorted(CASES))
def test_inference_uses_the_values_training_was_run_with(bundle, tmp_path):
    case = CASES[bundle]
    recipe = load_recipe(bundle)
    stages = {s["name"]: s for s in recipe["stages"]}
    data = synthesize(recipe["synth"], tmp_path / "data")
    root = copy_bundle(bundle, tmp_path / bundle)
    configs_before = {p.name: p.read_bytes() for p in (root / "configs").iterdir()}

    for i, name in enumerate(case["stages"]):
        if case.get("last_stage_writes") and i == len(case["stages"]) - 1:
            (root / "models" / "train_config.json").unlink()
        run_stage(stages[name], root, data, tmp_path)
    record = json.loads((root / "models" / "train_config.json").read_text())
    assert record == case["record"]
    assert {p.name: p.read_bytes() for p in (root / "configs").iterdir()} == configs_before, "training changed configs/"

    with_overrides = dict(stages["inference"], output_dir="infer_overrides")
    plain = {"name": "inference", "config": ["inference.json"], "output_dir": "infer_plain"}
    run_stage(with_overrides, root, data, tmp_path)
    run_stage(plain, root, data, tmp_path)
    pattern = case["outputs"]
    expected = sorted(p.relative_to(tmp_path / "infer_overrides") for p in (tmp_path / "infer_overrides").rglob(pattern))
    got = sorted(p.relative_to(tmp_path / "infer_plain") for p in (tmp_path / "infer_plain").rglob(pattern))
    assert expected and got == expected
    for rel in expected:
        assert _payload(tmp_path / "infer_plain" / rel) == _payload(tmp_path / "infer_overrides" / rel), rel


def _payload(path):
    """The file's bytes; a ``.gz`` file's uncompressed bytes (its gzip header holds the write time)."""
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data
