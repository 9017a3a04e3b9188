"""The DeepLab ablation runs the bundle's own train/evaluate configs through the runner, one copy per arm."""

from __future__ import annotations

import json

import numpy as np

from tools import ablation_deeplab
from tools.__main__ import main


def test_ablation_command_reports_every_arm(tmp_path):
    assert main(["ablation-deeplab", "--out", str(tmp_path), "--iterations", "2", "--n-tiles", "10",
                 "--tile-size", "64", "--channels", "8"]) == 0
    rows = json.loads((tmp_path / "ablation.json").read_text())["rows"]
    assert [r["aspp"] for r in rows] == ["deformable", "standard", "deformable", "deformable"]
    assert all(0 <= r["mean_iou"] <= 1 for r in rows[:3])
    assert rows[3]["status"] == "not run" and "backbone" in rows[3]["note"]
    assert rows[2]["n_train_tiles"] < rows[0]["n_train_tiles"]
    assert "| deformable_aspp_dino_init" in (tmp_path / "ablation.md").read_text()
    assert np.isfinite(rows[0]["mean_dice"])
    # each arm is a bundle copy trained by train.json (which records its architecture) and scored by evaluate.json
    arm = tmp_path / rows[1]["variant"]
    assert json.loads((arm / "bundle" / "models" / "train_config.json").read_text())["aspp_channels"] == 8
    assert (arm / "eval" / "per_case.csv").is_file() and (arm / "eval" / "confusion_matrix.csv").is_file()
    n_train = json.loads((arm / "data" / "dataset.json").read_text())["training"]
    assert len(n_train) == rows[1]["n_train_tiles"]


def test_arms_differ_only_by_config(tmp_path, monkeypatch):
    """Standard ASPP merges baseline_deeplab_aspp.json; the DINO arm passes the backbone as pretrained_weights."""
    from liverseg_monai.data.synth.histo import synth_histo

    calls = []

    def fake_run(root, configs, dataset_dir, output_dir, overrides):
        calls.append((list(configs), dict(overrides)))
        if "evaluate.json" in configs:
            output_dir.mkdir(parents=True)
            summary = {"mean_iou": 0.5, "mean_dice": 0.6, "class_names": ["a", "b"],
                       "per_class": {"a": {"iou": 0.4, "dice": 0.5}, "b": {"iou": 0.6, "dice": None}}}
            (output_dir / "summary.json").write_text(json.dumps(summary))

    monkeypatch.setattr(ablation_deeplab, "run_bundle", fake_run)
    monkeypatch.setattr(ablation_deeplab, "backbone_encoder_name", lambda path: "resnet18")
    data = synth_histo(tmp_path / "data", seed=0, n=20, size=32).parent
    rows = ablation_deeplab.run_ablation(tmp_path / "out", backbone=tmp_path / "backbone.pt", data=data, iterations=40)
    trains = [(configs, o) for configs, o in calls if "train.json" in configs]
    assert [c[-1] for c, _ in trains] == ["train.json", "baseline_deeplab_aspp.json", "train.json", "train.json"]
    assert all(o["encoder"] == "resnet18" and o["patches_per_tile"] == 1 and o["batch_size"] == 8 for _, o in trains)
    assert [o.get("pretrained_weights") for _, o in trains] == [None, None, None, str(tmp_path / "backbone.pt")]
    # whole epochs that make about the asked iterations; validation only at the last one
    assert all(o["val_interval"] == o["max_epochs"] for _, o in trains)
    n_full, n_few = rows[0].n_train_tiles, rows[2].n_train_tiles
    assert rows[0].iterations == trains[0][1]["max_epochs"] * -(-n_full // 8)
    assert rows[3].iterations == trains[3][1]["max_epochs"] * -(-n_few // 8)
    assert rows[3].per_class_iou == {"a": 0.4, "b": 0.6} and rows[3].per_class_dice["b"] is None
    assert "encoder from" in rows[3].note


def test_epochs_make_about_the_iterations():
    assert ablation_deeplab.epochs_for(300, 36) == 60  # 5 iterations per epoch
    assert ablation_deeplab.epochs_for(300, 9) == 150  # 2 per epoch
    assert ablation_deeplab.epochs_for(1, 100) == 1
