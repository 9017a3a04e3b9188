"""The nnU-Net peer (``tools/bench/peer.py``): the claim's data in nnU-Net's raw layout with the claim's
split, labels mapped to the bundle's task, predictions scored by the bundles' metric code on the reference
grid, and the comparison with the bundle's row. nnU-Net itself is not needed (it trains in the bench)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from tools.bench import scenario_kwargs, scenario_names
from tools.bench.claims import CLAIMS, resplit
from tools.bench.peer import (
    PEERS,
    bundle_budget,
    case_id,
    compare,
    score_predictions,
    write_nnunet_dataset,
    write_splits,
)


@pytest.fixture()
def lits(tmp_path):
    from liverseg_monai.data.synth.lits import synth_lits

    data = tmp_path / "data"
    synth_lits(data, seed=1, n=5, size=(24, 24, 8))
    resplit(data, 2, 1, 2)
    return data


def test_dataset_keeps_the_claim_split_and_maps_tumour_into_liver(lits, tmp_path):
    peer = PEERS["nnunet_liver"]
    ds = write_nnunet_dataset(lits, tmp_path / "raw", peer)
    content = json.loads((lits / "dataset.json").read_text())
    assert ds["train"] == [case_id(it["image"]) for it in content["training"]]
    assert ds["val"] == [case_id(it["image"]) for it in content["validation"]]
    assert [t[0] for t in ds["test"]] == [case_id(it["image"]) for it in content["testing"]]
    folder = ds["folder"]
    assert folder.name == "Dataset501_LiversegLiverCT"
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "liver": 1} and meta["numTraining"] == 3
    # images copied unchanged; labels on the same grid, the tumour (2) inside the liver class
    src = content["training"][0]
    image = nib.load(str(folder / "imagesTr" / f"{case_id(src['image'])}_0000.nii.gz"))
    label = nib.load(str(folder / "labelsTr" / f"{case_id(src['image'])}.nii.gz"))
    ref = np.asarray(nib.load(str(lits / src["label"])).dataobj)
    np.testing.assert_array_equal(np.asarray(image.dataobj), np.asarray(nib.load(str(lits / src["image"])).dataobj))
    np.testing.assert_allclose(label.affine, image.affine)
    np.testing.assert_array_equal(np.asarray(label.dataobj), (ref > 0).astype(np.uint8))
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == sorted(f"{t[0]}_0000.nii.gz" for t in ds["test"])
    # nnU-Net's fold 0 is exactly the claim's training / validation split
    splits = json.loads(write_splits(tmp_path, ds["train"], ds["val"]).read_text())
    assert splits == [{"train": ds["train"], "val": ds["val"]}]


def test_predictions_are_scored_on_the_reference_grid_with_the_bundle_metric(lits, tmp_path):
    peer = PEERS["nnunet_liver"]
    ds = write_nnunet_dataset(lits, tmp_path / "raw", peer)
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    for cid, _image, label in ds["test"]:
        ref = nib.load(label)
        liver = (np.asarray(ref.dataobj) > 0).astype(np.uint8)
        if cid == ds["test"][0][0]:
            liver[..., : liver.shape[2] // 2] = 0  # half the liver missed in the first case
        nib.save(nib.Nifti1Image(liver, ref.affine), str(pred_dir / f"{cid}.nii.gz"))
    table = score_predictions(pred_dir, ds["test"], peer)
    first, second = (table[t[0]]["liver_dice"] for t in ds["test"])
    assert second == pytest.approx(1.0) and 0.3 < first < 0.95
    # a prediction on another grid is refused, not scored
    cid, _image, label = ds["test"][1]
    ref = nib.load(label)
    nib.save(nib.Nifti1Image(np.asarray(ref.dataobj).astype(np.uint8), ref.affine * 2), str(pred_dir / f"{cid}.nii.gz"))
    with pytest.raises(ValueError, match="not on the reference grid"):
        score_predictions(pred_dir, ds["test"], peer)


def test_comparison_with_the_bundle_row_and_budget():
    rng = np.random.default_rng(0)
    peer_scores = 0.9 + 0.01 * rng.standard_normal((3, 20))
    bundle_row = {"mean": 0.78, "ci95": [0.75, 0.80]}
    diff = compare(bundle_row, peer_scores)
    assert diff["mean"] == pytest.approx(0.78 - peer_scores.mean(), abs=1e-3)
    assert diff["ci95"][1] < 0 and diff["verdict"] == "reversed" and "normal" in diff["interval"]
    paired = compare(None, peer_scores, bundle_scores=peer_scores + 0.05)
    assert paired["mean"] == pytest.approx(0.05, abs=1e-3) and paired["verdict"] == "shown"
    assert compare(None, peer_scores) is None
    # nnU-Net gets the bundle's training seconds per seed; older claim runs only have the seed's total
    recorded = {"per_seed": {"0": {"seconds": 400.0, "train_seconds": 310.0}, "1": {"seconds": 390.0}}}
    assert bundle_budget(recorded, [0, 1, 2], 300.0) == {0: 310.0, 1: 390.0, 2: 300.0}


def test_peers_are_bench_scenarios_on_ct_claims():
    for name, peer in PEERS.items():
        assert f"peer:{name}" in scenario_names()
        assert scenario_kwargs(f"peer:{name}") == {"name": name}
        claim = CLAIMS[peer.claim]
        assert peer.bundle_arm in claim.arms
        assert set(peer.metrics) <= set(claim.metrics)
        assert claim.data["kind"] in ("lits", "hcc")
    with pytest.raises(ValueError, match="NIfTI"):
        case_id("slide.tiff")


def test_claims_and_benchmarks_pages_show_the_peer_beside_the_bundle(tmp_path):
    from tools.bench.claims import write_claims_markdown
    from tools.bench.report import render_markdown

    machine = {"device": "cpu", "gpu": "none", "cpu": "x", "cpus": 2, "torch_threads": 2, "omp_num_threads": "2",
               "python": "3.11", "torch": "2", "monai": "1.6", "platform": "linux"}
    bundle_row = {"arm": "liver bundle", "metric": "dice", "mean": 0.78, "ci95": [0.75, 0.8], "n_held_out": 20,
                  "seeds": [0, 1, 2]}
    peer = {"rows": [{"arm": "nnU-Net 2d", "metric": "dice", "mean": 0.93, "ci95": [0.92, 0.94], "n_held_out": 20,
                      "seeds": [0, 1, 2], "budget": "nnU-Net v2 2d, 360 s"},
                     {"arm": "liver bundle - nnU-Net 2d", "metric": "dice, difference", "mean": -0.15,
                      "ci95": [-0.18, -0.12], "verdict": "reversed", "n_held_out": 20, "seeds": [0, 1, 2],
                      "interval": "independent arms, normal approximation from both ci95"}],
            "bundle_rows": [bundle_row], "nnunetv2": "2.8.1"}
    empty = write_claims_markdown({"runs": {}}, tmp_path / "empty.md").read_text()
    assert "## nnU-Net v2 beside the CT bundles" in empty and "make bench-peer" in empty
    data = {"runs": {"m": {"machine": machine, "command": "c", "scenarios": {"peer:nnunet_liver": peer}}}}
    text = write_claims_markdown(data, tmp_path / "claims.md").read_text()
    section = text.split("## nnU-Net v2 beside the CT bundles", 1)[1].split("\n## ", 1)[0]
    assert "| liver bundle | dice | 0.78 | [0.75, 0.8] |" in section
    assert "| liver bundle - nnU-Net 2d | dice, difference | -0.15 | [-0.18, -0.12] | reversed | 20 | 3 |" in section
    assert "Budget: nnU-Net v2 2d, 360 s" in section and "normal approximation" in section
    assert "| nnU-Net 2d | dice | 0.93 |" in render_markdown(data)


def test_peer_pairs_with_the_bundle_per_case_scores_of_the_claim_rows():
    from tools.bench.claims import Claim, claim_rows
    from tools.bench.peer import paired_scores

    claim = Claim(bundle="b", claim="c", data={}, split=(1, 1, 3), runs={"r": None}, arms={"A": ("r", "{metric}")},
                  metrics=("dice",), effect=None, seeds=(0, 1))
    tables = {"r": [{"c1": {"dice": 0.5}, "c2": {"dice": 0.7}, "c3": {"dice": 0.9}},
                    {"c1": {"dice": 0.6}, "c2": {"dice": 0.8}, "c3": {"dice": 1.0}}]}
    row = claim_rows("x", claim, tables, "budget", n_boot=50)[0]
    assert row["per_case"] == {"c1": [0.5, 0.6], "c2": [0.7, 0.8], "c3": [0.9, 1.0]}
    np.testing.assert_allclose(paired_scores(row, ["c3", "c1"], 2), [[0.9, 0.5], [1.0, 0.6]])
    assert paired_scores(row, ["c1", "c4"], 2) is None and paired_scores(None, ["c1"], 1) is None
    diff = compare(row, np.full((2, 3), 0.5), paired_scores(row, ["c1", "c2", "c3"], 2))
    assert diff["interval"] == "paired two-way bootstrap" and diff["mean"] == pytest.approx(0.25)


def test_training_seconds_and_iterations_are_read_from_the_trainer_log(tmp_path):
    from tools.bench.peer import _epochs_trained

    fold = tmp_path / "Dataset501_X" / "nnUNetTrainerWallClock__nnUNetPlans__2d" / "fold_0"
    fold.mkdir(parents=True)
    log = fold / "training_log_2026_12_3_19_00_00.txt"
    log.write_text("2026-12-03 19:34:06: wall-clock budget 343 s: stopped after 5 epochs, 47 iterations, 344 s\n")
    assert _epochs_trained(tmp_path) == {"epochs": 5, "iterations": 47, "trained_s": 344}
    log.write_text("2026-12-03 19:34:06: wall-clock budget 343 s: stopped after 5 epochs of 10 iterations, 304 s\n")
    assert _epochs_trained(tmp_path) == {"epochs": 5, "iterations": 50, "trained_s": 304}  # the first rule's line
    log.write_text("no such line\n")
    assert _epochs_trained(tmp_path) == {}
