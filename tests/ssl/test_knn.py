"""k-NN evaluation pieces: majority labels, grid patches, weighted voting, scores."""

from __future__ import annotations

import numpy as np
import torch

from liverseg_monai.ssl.knn import classification_scores, grid_patches, knn_predict, majority_label


def test_majority_label_and_ignore():
    lab = np.array([[0, 0, 1], [1, 1, 2]])
    assert majority_label(lab) == 1
    assert majority_label(np.zeros((2, 2), int), ignore=[0]) == -1
    assert majority_label(np.array([[0, 0, 0, 2]]), ignore=[0]) == 2


def test_grid_patches_labels_and_corners():
    img = np.zeros((8, 12, 3), np.uint8)
    lab = np.zeros((8, 12), np.int64)
    lab[:, 4:8] = 3
    crops, labels, corners = grid_patches(img, lab, 4)
    assert crops.shape == (6, 4, 4, 3)
    assert labels.tolist() == [0, 3, 0, 0, 3, 0]
    assert corners[:3] == [(0, 0), (0, 4), (0, 8)]


def test_knn_weighted_vote():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    queries = torch.tensor([[1.0, 0.05], [0.1, 1.0]])
    assert knn_predict(bank, labels, queries, k=2, temperature=0.07).tolist() == [0, 1]
    # with k = 3, the two close class-0 neighbours outvote the far class-1 one for the first query
    assert knn_predict(bank, labels, queries, k=3).tolist()[0] == 0


def test_scores():
    s = classification_scores(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 3)
    assert s["accuracy"] == 0.75
    assert s["recall_0"] == 1.0 and abs(s["recall_1"] - 2 / 3) < 1e-9 and "recall_2" not in s
    assert abs(s["balanced_accuracy"] - (1 + 2 / 3) / 2) < 1e-9


def test_evaluation_reports_the_mean_of_several_random_encoders(tmp_path):
    import json

    from liverseg_monai.data.synth.histo import synth_histo
    from liverseg_monai.ssl.dino import resnet_backbone
    from liverseg_monai.ssl.knn import KNNEvaluation

    data = synth_histo(tmp_path / "tiles", seed=0, n=10, size=64).parent
    torch.manual_seed(5)
    summary = KNNEvaluation(data, tmp_path / "eval", patch=32, k=3, baseline_arch="resnet18",
                            baseline_seeds=(0, 1))(resnet_backbone("resnet18"))
    per_seed = summary["random_init"]["per_seed"]
    assert [r["seed"] for r in per_seed] == [0, 1]
    for key in ("knn_accuracy", "knn_balanced_accuracy"):
        mean = (per_seed[0][key] + per_seed[1][key]) / 2
        assert abs(summary["random_init"][key] - mean) < 1e-9
        assert abs(summary[f"{key}_gain_over_random_init"] - (summary[key] - mean)) < 1e-9
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["random_init"]["per_seed"][1]["seed"] == 1
    assert (tmp_path / "eval" / "per_case.csv").read_text().count("\n") == summary["n_query_patches"] + 1
