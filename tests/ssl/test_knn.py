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
