"""liver_pathology_deeplab_segmentation beyond the shared harness: learning, resuming, whole-slide
inference through the bundle, baselines by config, the ablation command."""

from __future__ import annotations

import glob
import json
import re
from pathlib import Path

import pytest
import torch

from tools.recipes import synthesize
from tools.runner import copy_bundle, run_stage

BUNDLE = "liver_pathology_deeplab_segmentation"
# the slim test network: ResNet-10 encoder, 64-channel deformable ASPP and decoder, 64 px patches
NET = {"encoder": "resnet10", "aspp_channels": 64, "decoder_channels": 64, "patch_size": [64, 64]}
HELD_OUT = "$liverseg_monai.data.load_datalist(@dataset_dir, 'testing', require=('image', 'label'))"


def _epochs(log: str) -> list[int]:
    return sorted({int(m) for m in re.findall(r"Epoch\[(\d+)\]", log)})


@pytest.mark.slow
def test_learns_synthetic_tiles_resumes_and_scores_held_out(tmp_path):
    """Train in two legs (the second resumes from the first's checkpoint), then evaluate on the
    testing tiles, which neither training nor model selection saw: mIoU >= 0.70."""
    data = synthesize({"kind": "histo", "n": 60, "seed": 0, "options": {"size": 128}}, tmp_path / "data")
    root = copy_bundle(BUNDLE, tmp_path / "bundle")
    train = {**NET, "max_epochs": 36, "batch_size": 8, "patches_per_tile": 4, "learning_rate": 0.002,
             "num_workers": 0, "val_interval": 6}
    first = run_stage({"name": "train", "config": ["inference.json", "train.json"], "output_dir": "train",
                       "overrides": {**train, "train#trainer#max_epochs": 12}}, root, data, tmp_path)
    assert (root / "models" / "checkpoint_epoch=12.pt").is_file() and (root / "models" / "model.pt").is_file()
    second = run_stage({"name": "train", "config": ["inference.json", "train.json"], "output_dir": "train",
                        "overrides": train}, root, data, tmp_path)
    assert (root / "models" / "checkpoint_epoch=36.pt").is_file()
    assert max(_epochs(first.stdout + first.stderr)) == 12
    assert min(_epochs(second.stdout + second.stderr)) == 13  # resumed, not restarted
    state = torch.load(root / "models" / "model.pt", weights_only=True)
    assert any(k.startswith("aspp.branches.1.offset") for k in state)  # plain state dict of the deformable net

    run_stage({"name": "evaluate", "config": ["inference.json", "evaluate.json"], "output_dir": "eval",
               "overrides": {**NET, "datalist": HELD_OUT}}, root, data, tmp_path)
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    print(f"held-out mIoU {summary['mean_iou']:.3f}; per class " + json.dumps(summary["per_class"]))
    assert summary["n_cases"] == 12
    assert summary["mean_iou"] >= 0.70, summary
    assert set(summary["per_class"]) == {"background", "parenchyma", "portal_tract", "vessel", "bile_duct",
                                         "inflammation", "steatosis"}
    assert len(glob.glob(str(tmp_path / "eval" / "*_overlay.png"))) == 12


def src_downsample(path: Path) -> float:
    """Level-1 downsample of a pyramidal TIFF (level-0 width / level-1 width)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        levels = tif.series[0].levels
        return levels[0].shape[1] / levels[1].shape[1]


def _random_weights(root: Path, overrides: dict) -> None:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    for k, v in overrides.items():
        parser[k] = v
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), root / "models" / "model.pt")


def test_whole_slide_inference_through_the_bundle(tmp_path):
    """inference_slide.json: label TIFF at the chosen level, thumbnail overlay, areas in mm2."""
    import tifffile

    data = synthesize({"kind": "slide", "n": 1, "seed": 0, "options": {"width": 1024, "height": 768, "mpp": 0.5,
                                                                     "progress": False}}, tmp_path / "slides")
    root = copy_bundle(BUNDLE, tmp_path / "bundle")
    net = {"encoder": "resnet10", "aspp_channels": 16, "decoder_channels": 16, "patch_size": [128, 128]}
    _random_weights(root, net)
    run_stage({"name": "slide", "config": ["inference.json", "inference_slide.json"], "output_dir": "wsi",
               "overrides": {**net, "slide#level": 1, "slide#batch_size": 8}}, root, data, tmp_path)
    out = tmp_path / "wsi"
    label = out / "slide_0_label.tiff"
    assert label.is_file() and (out / "slide_0_overlay.png").is_file()
    with tifffile.TiffFile(tmp_path / "slides" / "slide_0.tiff") as src, tifffile.TiffFile(label) as lab:
        level1 = src.series[0].levels[1].shape[:2]
        assert lab.series[0].levels[0].shape[:2] == level1
        values = lab.series[0].levels[0].asarray()
    assert values.max() < 7
    import csv

    rows = list(csv.DictReader((out / "slide_0_areas.csv").open()))
    assert [r["class_name"] for r in rows] == ["background", "parenchyma", "portal_tract", "vessel", "bile_duct",
                                               "inflammation", "steatosis"]
    mpp1 = 0.5 * src_downsample(tmp_path / "slides" / "slide_0.tiff")
    total_mm2 = sum(float(r["area_mm2"]) for r in rows)
    assert total_mm2 == pytest.approx(level1[0] * level1[1] * (mpp1 * 1e-3) ** 2, rel=1e-6)


@pytest.mark.parametrize("baseline", ["baseline_deeplab_aspp.json", "baseline_basicunet.json", "baseline_unet.json"])
def test_baselines_by_config(tmp_path, baseline):
    from monai.bundle import ConfigParser

    from liverseg_monai.networks.blocks.aspp import ASPP
    from liverseg_monai.networks.blocks.deformable_aspp import DeformableASPP

    configs = Path(__file__).resolve().parents[2] / "bundles" / BUNDLE / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "inference.json"), str(configs / baseline)])
    parser["encoder"] = "resnet18"
    net = parser.get_parsed_content("network_def")
    if baseline == "baseline_deeplab_aspp.json":
        assert isinstance(net.aspp, ASPP) and not isinstance(net.aspp, DeformableASPP)
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 64)).shape == (1, 7, 64, 64)
