"""liver_tumor_ct_segresnetvae beyond the shared harness: stage switches, ablation switches, clinical
priors, DICOM in / DICOM-SEG out, and a learning test."""

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from liverseg_monai.data import load_datalist
from liverseg_monai.data.synth.lits import save_nifti, synth_lits
from tools.runner import copy_bundle, run_stage

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "liver_tumor_ct_segresnetvae"
SMALL_INFER = {"spacing": [8.0, 8.0, 10.0], "liver#roi_size": [32, 32, 16], "tumor#roi_size": [32, 32, 16], "init_filters": 8}


def _parse(configs=("inference.json",), **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / c) for c in configs])
    parser["bundle_root"] = str(BUNDLE)
    for k, v in overrides.items():
        parser[k] = v
    return parser


@pytest.mark.parametrize("with_vessels, classes", [(False, 2), (True, 4)])
def test_stage_networks_and_vessel_switch(with_vessels, classes):
    parser = _parse(with_vessels=with_vessels, init_filters=8, **{"liver#roi_size": [32, 32, 16], "tumor#roi_size": [16, 16, 16]})
    liver, tumor = parser.get_parsed_content("liver#network_def"), parser.get_parsed_content("tumor#network_def")
    assert liver(torch.zeros(1, 1, 32, 32, 16)).shape == (1, 2, 32, 32, 16)
    assert tumor(torch.zeros(1, 1, 16, 16, 16)).shape == (1, classes, 16, 16, 16)
    assert sorted(parser.get_parsed_content("label_names")) == list(range(1, classes + 1))
    train = _parse(("inference.json", "train.json", "train_tumor.json"), with_vessels=with_vessels)
    assert train.get_parsed_content("num_classes") == classes
    assert train.get_parsed_content("ckpt_name") == "model_tumor.pt"
    assert _parse(("inference.json", "train.json")).get_parsed_content("ckpt_name") == "model_liver.pt"


def test_ablation_switches():
    on = _parse(("inference.json", "train.json", "train_tumor.json")).get_parsed_content("loss")
    off = _parse(("inference.json", "train.json", "train_tumor.json"), **{"weak_supervision#weight": 0.0}).get_parsed_content("loss")
    assert on.weak_loss.weight == 0.1 and off.weak_loss.weight == 0.0
    # the clinical term waits for a quarter of the epochs, ramps up over the next quarter, sigma >= 0.05
    sched = _parse(("inference.json", "train.json", "train_tumor.json"), max_epochs=40).get_parsed_content("loss").weak_loss
    assert (sched.start_epoch, sched.rampup_epochs, sched.min_std) == (10, 10, 0.05)
    assert _parse(("inference.json", "train.json")).get_parsed_content("loss").weak_loss is None  # stage 1 has no weak term
    assert _parse().get_parsed_content("refine").enabled is True
    assert _parse(**{"active_contour#enabled": False}).get_parsed_content("refine").enabled is False
    evaluate = _parse(("inference.json", "evaluate.json")).get_parsed_content("evaluation#metrics")
    assert evaluate.extra.pred_key == "pred_no_ac" and evaluate.extra.suffix == "_no_ac"


def _tiny_dataset(root: Path, with_table: bool = True) -> Path:
    affine = np.diag([8.0, 8.0, 10.0, 1.0])
    content = {"training": [], "validation": []}
    for i, tumour in enumerate([10, 30, 60, 20]):
        img = np.full((16, 16, 8), -100, np.int16)
        lab = np.zeros((16, 16, 8), np.uint8)
        lab[2:12, 2:12, 1:7] = 1  # 600 liver voxels
        lab.reshape(-1)[np.flatnonzero(lab.reshape(-1))[:tumour * 6]] = 2
        save_nifti(root / f"ct{i}.nii.gz", img, affine, np.int16)
        save_nifti(root / f"seg{i}.nii.gz", lab, affine, np.uint8)
        content["training" if i != 1 else "validation"].append({"image": f"ct{i}.nii.gz", "label": f"seg{i}.nii.gz", "patient_id": f"P{i}"})
    (root / "dataset.json").write_text(json.dumps(content))
    if with_table:
        (root / "clinical.csv").write_text("patient_id,BCLC\nP0,A\nP1,A\nP2,C\nP3,\n")
    return root


def test_clinical_priors_fitted_on_the_training_split(tmp_path, caplog):
    data = _tiny_dataset(tmp_path)
    parser = _parse(("inference.json", "train.json", "train_tumor.json"), dataset_dir=str(data))
    items = {it["patient_id"]: it for it in parser.get_parsed_content("train#dataset#data")}
    assert set(items) == {"P0", "P2", "P3"}  # P1 is validation: not in the fit
    assert items["P0"]["tumor_fraction_prior"] == pytest.approx(0.10)  # group A fitted on P0 alone
    assert items["P2"]["tumor_fraction_prior"] == pytest.approx(0.60)
    assert math.isnan(items["P3"]["tumor_fraction_prior"])  # no BCLC: skips the term
    assert "P3" in caplog.text


def test_no_clinical_table_trains_without_the_term(tmp_path, caplog):
    data = _tiny_dataset(tmp_path, with_table=False)
    items = _parse(("inference.json", "train.json", "train_tumor.json"), dataset_dir=str(data)).get_parsed_content("train#dataset#data")
    assert all(math.isnan(it["tumor_fraction_prior"]) for it in items)
    assert "no clinical table" in caplog.text


def _random_checkpoints(root: Path, overrides: dict) -> None:
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    for k, v in overrides.items():
        parser[k] = v
    torch.manual_seed(0)
    for stage in ("liver", "tumor"):
        net = parser.get_parsed_content(f"{stage}#network_def")
        torch.save(net.state_dict(), root / "models" / f"model_{stage}.pt")


def test_dicom_series_in_nifti_and_dicom_seg_out(tmp_path):
    """A DICOM series folder goes in; the NIfTI label map has the series' geometry and the DICOM-SEG,
    read back with the project's reader, holds the same labels."""
    from liverseg_monai.data.synth.hcc import synth_hcc
    from liverseg_monai.io.dicom import read_seg, read_series_geometry

    raw = tmp_path / "raw"
    synth_hcc(raw, seed=2, n=3, size=(32, 32, 16), orientations=("LPI",), extra_series=False)
    cases = load_datalist(raw, "testing")
    root = copy_bundle("liver_tumor_ct_segresnetvae", tmp_path / "bundle")
    _random_checkpoints(root, SMALL_INFER)
    out = tmp_path / "infer"
    run_stage({"name": "infer", "config": ["inference.json"], "overrides": {**SMALL_INFER, "write_dicom_seg": True}}, root, raw, tmp_path)
    series = cases[0]["image"]
    name = Path(series).name
    seg_nii = out / f"{name}_seg.nii.gz"
    shape, affine = read_series_geometry(series)
    img = nib.load(seg_nii)
    assert img.shape == tuple(shape) and np.allclose(img.affine, affine, atol=1e-4)
    labels = np.asarray(img.dataobj)
    seg_dcm = out / f"{name}_seg.dcm"
    if labels.any():  # random weights: whatever was predicted must come back from the SEG
        back = read_seg(seg_dcm, series, {"Liver": 1, "Mass": 2}, optional=("Liver", "Mass"))
        assert np.array_equal(back, labels)
    assert list(out.glob("*_overlay.png"))


@pytest.mark.slow
def test_learns_liver_and_tumour_on_held_out_phantoms(tmp_path):
    """A few CPU minutes on synthetic phantoms (RAS and LPS volumes): held-out liver Dice >= 0.90 and
    tumour Dice >= 0.60; outputs keep the input geometry; evaluation reports the active-contour ablation."""
    data = tmp_path / "data"
    synth_lits(data, seed=3, n=16, size=(64, 64, 32), tumor_radius_mm=(20.0, 30.0), n_tumors=(1, 2))
    root = copy_bundle("liver_tumor_ct_segresnetvae", tmp_path / "bundle")
    spacing = [6.25, 6.25, 7.5]
    common = {"spacing": spacing, "init_filters": 8, "batch_size": 2, "num_workers": 0, "learning_rate": 0.002}
    sizes = {"liver#roi_size": [48, 48, 32], "tumor#roi_size": [32, 32, 32]}
    run_stage({"name": "train_liver", "config": ["inference.json", "train.json"], "overrides": {
        **common, **sizes, "max_epochs": 30, "val_interval": 30}}, root, data, tmp_path)
    run_stage({"name": "train_tumor", "config": ["inference.json", "train.json", "train_tumor.json"], "overrides": {
        **common, **sizes, "max_epochs": 60, "val_interval": 60}}, root, data, tmp_path)
    assert (root / "models" / "model.pt").is_file()  # the composed network, written when the tumour stage ends
    infer = {"spacing": spacing, "init_filters": 8, "liver#roi_size": [48, 48, 32], "tumor#roi_size": [32, 32, 32]}
    run_stage({"name": "infer", "config": ["inference.json"], "overrides": infer}, root, data, tmp_path)
    held_out = "$liverseg_monai.data.load_datalist(@dataset_dir, 'testing', require=('image', 'label'))"
    run_stage({"name": "eval", "config": ["inference.json", "evaluate.json"], "overrides": {**infer, "datalist": held_out}},
              root, data, tmp_path)
    metrics = json.loads((tmp_path / "eval" / "summary.json").read_text())["metrics"]
    liver, tumour = metrics["liver_dice"]["mean"], metrics["tumor_dice"]["mean"]
    print(f"held-out liver Dice {liver:.4f}, tumour Dice {tumour:.4f} "
          f"(without active contour {metrics['tumor_dice_no_ac']['mean']:.4f}), "
          f"burden error {metrics['tumor_burden_abs_error']['mean']:.2f} %")
    assert liver >= 0.90, metrics["liver_dice"]
    assert tumour >= 0.60, metrics["tumor_dice"]
    assert {"tumor_hd95", "tumor_recall", "tumor_accuracy", "tumor_iou", "tumor_burden_pct", "ref_tumor_burden_pct"} <= set(metrics)
    orientations = set()
    for case in load_datalist(data, "testing"):
        img = nib.load(case["image"])
        out = nib.load(tmp_path / "infer" / f"{Path(case['image']).name.split('.')[0]}_seg.nii.gz")
        assert out.shape == img.shape and np.allclose(out.affine, img.affine, atol=1e-4)
        orientations.add(nib.aff2axcodes(img.affine))
    assert len(orientations) == 2  # RAS and LPS inputs


def test_network_def_is_both_stages_and_exports(tmp_path):
    """`network_def` is the composed cascade (both stage networks in its state dict); `ckpt_export`
    scripts it, and the TorchScript file, reloaded, gives the eager output on a CT-like volume."""
    import subprocess

    from tools.runner import bundle_command

    parser = _parse(**SMALL_INFER)
    net = parser.get_parsed_content("network_def")
    assert net.liver_stage.net is parser.get_parsed_content("liver#network_def")
    assert net.tumor_stage.net is parser.get_parsed_content("tumor#network_def")
    keys = set(net.state_dict())
    assert any(k.startswith("liver_stage.net.") for k in keys) and any(k.startswith("tumor_stage.net.") for k in keys)
    torch.manual_seed(0)
    for p in net.parameters():  # a liver stage that predicts liver in soft tissue, so stage 2 runs
        p.data.normal_(0, 0.05)
    root = copy_bundle("liver_tumor_ct_segresnetvae", tmp_path / "bundle")
    torch.save(net.state_dict(), root / "models" / "model.pt")
    ts = tmp_path / "model.ts"
    cmd = bundle_command(root, "inference.json", tmp_path, tmp_path / "out", SMALL_INFER, verb="ckpt_export")
    cmd.insert(4, "network_def")
    cmd += ["--filepath", str(ts), "--ckpt_file", str(root / "models" / "model.pt"),
            "--meta_file", str(root / "configs" / "metadata.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    x = torch.full((1, 1, 40, 36, 20), -1000.0)
    x[:, :, 8:30, 6:28, 4:16] = 60.0
    x[:, :, 15:20, 14:19, 8:12] = 0.0
    net.eval()
    with torch.no_grad():
        expected = net(x)
        got = torch.jit.load(str(ts))(x)
    torch.testing.assert_close(got, expected)


def test_nifti_through_preprocessing_with_monailabel_entries(tmp_path):
    """MONAI Label adds string entries such as `image_path` to the data; NIfTI input must still load
    and resample (MONAI's Spacingd calls `.update` on every `image_*` entry of a NIfTI image)."""
    img = np.full((20, 20, 10), -100, np.int16)
    save_nifti(tmp_path / "ct.nii.gz", img, np.diag([2.0, 2.0, 5.0, 1.0]), np.int16)
    pre = _parse(**SMALL_INFER).get_parsed_content("preprocessing")
    out = pre({"image": str(tmp_path / "ct.nii.gz"), "image_path": str(tmp_path / "ct.nii.gz")})
    assert out["image_path"] == str(tmp_path / "ct.nii.gz")
    assert np.allclose(out["image"].pixdim, [8.0, 8.0, 10.0])
