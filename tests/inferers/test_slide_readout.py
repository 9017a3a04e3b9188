"""The slide read-out report written next to the CSV: values equal the CSV's, written all-or-none."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from liverseg_monai.data.synth.slide import synth_slide
from liverseg_monai.inferers.instances import infer_slide_instances
from liverseg_monai.inferers.slide import run_slide_inference
from liverseg_monai.io.slide import write_pyramid
from tests.inferers.test_instances import _scene, component_net

MPP = 0.5


@pytest.fixture(scope="module")
def he_slide(tmp_path_factory) -> Path:
    out = synth_slide(tmp_path_factory.mktemp("slide"), seed=0, n=1, width=384, height=320, mpp=MPP,
                      tile_size=128, progress=False)
    return out.parent / json.loads(out.read_text())["testing"][0]["image"]  # out: the dataset.json


def _bundle_with_checkpoint(root: Path, network: torch.nn.Module) -> Path:
    """A folder laid out as a bundle (metadata + models/model.pt), as inference_slide.json passes it."""
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "metadata.json").write_text(json.dumps({"name": "Tiny test net", "version": "9.8.7"}))
    (root / "models").mkdir()
    torch.save(network.state_dict(), root / "models" / "model.pt")
    return root / "models" / "model.pt"


def _tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Conv2d(3, 3, 1)


def test_tissue_class_report_equals_the_csv_and_the_label_slide(he_slide: Path, tmp_path: Path) -> None:
    net = _tiny_net()
    ckpt = _bundle_with_checkpoint(tmp_path / "tiny_bundle", net)
    out = tmp_path / "out"
    run_slide_inference(net, [{"image": str(he_slide)}], out, patch_size=128, checkpoint=ckpt, tissue_threshold=0.0,
                        class_names=["background", "parenchyma", "portal_tract"], progress=False)
    stem = he_slide.name.split(".")[0]
    report = json.loads((out / f"{stem}_report.json").read_text())
    rows = list(csv.DictReader((out / f"{stem}_areas.csv").open()))
    labels = tifffile.imread(out / f"{stem}_label.tiff")
    counts = np.bincount(labels.ravel(), minlength=3)
    assert report["source"] == str(he_slide) and report["mpp"] == pytest.approx(MPP)
    assert report["model"] == {"bundle": "tiny_bundle", "name": "Tiny test net", "version": "9.8.7"}
    assert [c["class_name"] for c in report["classes"]] == [r["class_name"] for r in rows]
    for c, r in zip(report["classes"], rows, strict=True):
        assert c["pixels"] == int(r["pixels"]) == counts[c["class_index"]]
        assert c["area_mm2"] == pytest.approx(float(r["area_mm2"]))
        assert c["area_mm2"] == pytest.approx(c["pixels"] * MPP**2 / 1e6)
    assert report["tissue_area_mm2"] == pytest.approx(counts[1:].sum() * MPP**2 / 1e6)


def test_tissue_class_report_failure_leaves_no_output(he_slide: Path, tmp_path: Path, monkeypatch) -> None:
    import liverseg_monai.inferers.slide as slide_mod

    def broken(*args, **kwargs):
        raise RuntimeError("report failed")

    monkeypatch.setattr(slide_mod, "tissue_class_report", broken)
    with pytest.raises(RuntimeError, match="report failed"):
        run_slide_inference(_tiny_net(), [he_slide], tmp_path / "out", patch_size=128, progress=False)
    assert [p.name for p in (tmp_path / "out").iterdir()] == []


@pytest.fixture(scope="module")
def droplet_slide(tmp_path_factory) -> Path:
    img, _ = _scene((300, 340), seed=2)
    rgb = (img.numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
    path = tmp_path_factory.mktemp("droplets") / "fatty.tif"
    write_pyramid(path, rgb, mpp=MPP, tile_size=128, compression="zlib")
    return path


def test_steatosis_report_equals_the_csv(droplet_slide: Path, tmp_path: Path) -> None:
    model = {"bundle": "liver_steatosis_maskrcnn", "name": "Steatosis", "version": "0.2.0"}
    summary = infer_slide_instances(droplet_slide, component_net, tmp_path, tile=128, overlap=40, model=model)
    report = json.loads((tmp_path / "fatty_report.json").read_text())
    rows = list(csv.DictReader((tmp_path / "fatty_droplets.csv").open()))
    droplet_px = sum(int(r["area_px"]) for r in rows)
    assert report["droplet_count"] == len(rows) == summary["n_droplets"] > 0
    assert report["droplet_area_mm2"] == pytest.approx(droplet_px * MPP**2 / 1e6)
    assert report["droplet_area_mm2"] == pytest.approx(sum(float(r["area_um2"]) for r in rows) / 1e6)
    assert report["tissue_area_mm2"] == pytest.approx(summary["tissue_area_um2"] / 1e6)
    assert report["steatosis_percent_of_tissue"] == pytest.approx(
        100 * report["droplet_area_mm2"] / report["tissue_area_mm2"])
    assert report["model"] == model and report["mpp"] == MPP and report["source"] == str(droplet_slide)


def test_steatosis_report_failure_leaves_no_output(droplet_slide: Path, tmp_path: Path, monkeypatch) -> None:
    import liverseg_monai.io.readout as readout

    def broken(*args, **kwargs):
        raise RuntimeError("report failed")

    monkeypatch.setattr(readout, "steatosis_report", broken)
    with pytest.raises(RuntimeError, match="report failed"):
        infer_slide_instances(droplet_slide, component_net, tmp_path / "out", tile=128, overlap=40)
    assert [p.name for p in (tmp_path / "out").iterdir()] == []
