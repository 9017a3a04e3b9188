"""Learning test of the DINO pretraining bundle: a short CPU pretraining on synthetic H&E tiles gives
frozen features whose k-NN tissue classification beats a randomly initialised encoder, and the teacher
has not collapsed.

Runs the bundle's own configs (train.json, then inference.json + evaluate.json) through
``monai.bundle run`` with a ResNet-18 and small crops so it fits a few CPU minutes.
"""

from __future__ import annotations

import glob
import json
import math

import numpy as np
import pytest
import torch

from liverseg_monai.recipes import copy_bundle, run_stage, synthesize

BUNDLE = "pathology_dino_pretraining"
OUT_DIM = 256
TRAIN_OVERRIDES = {
    "arch": "resnet18",
    "out_dim": OUT_DIM,
    "head_hidden_dim": 512,
    "head_bottleneck_dim": 128,
    "head_use_bn": True,
    "global_crop_size": 64,
    "local_crop_size": 32,
    "n_local_crops": 2,
    "batch_size": 16,
    "patches_per_image": 4,
    "max_epochs": 10,
    "warmup_epochs": 1,
    "base_lr": 0.008,
    "weight_decay_end": 0.1,
    "momentum_teacher": 0.95,
    "num_workers": 0,
    "amp": False,
}


@pytest.mark.slow
@pytest.mark.xfail(
    run=False,
    reason="known failure (issue 5 open): at a CI-sized budget (ResNet-18, hundreds of steps) DINO features do not "
    "clearly beat a random encoder at k-NN on synthetic tiles (0.402 vs 0.442 balanced accuracy here; at most about "
    "+0.07 over 64 settings swept in scripts/research, see the model card); "
    "run it with `pytest --runxfail -m slow tests/bundles/test_pathology_dino_pretraining.py`",
)
def test_dino_learns_tissue_features_without_collapse(tmp_path):
    from liverseg_monai.ssl.data import pretraining_items, read_rgb
    from liverseg_monai.ssl.dino import DINOHead, MultiCropWrapper, resnet_backbone
    from liverseg_monai.ssl.knn import grid_patches, normalise_rgb

    data = synthesize({"kind": "histo", "n": 40, "seed": 0, "options": {"size": 96}}, tmp_path / "data")
    root = copy_bundle(BUNDLE, tmp_path / BUNDLE)
    train = run_stage({"name": "train", "config": ["train.json"], "output_dir": "train",
                       "overrides": TRAIN_OVERRIDES}, root, data, tmp_path)
    assert (root / "models" / "backbone.pt").is_file()
    # collapse monitors reach the engine's metrics (printed by StatsHandler every epoch)
    log = train.stdout + train.stderr
    assert "teacher_entropy" in log and "teacher_student_kl" in log

    run_stage({"name": "evaluate", "config": ["inference.json", "evaluate.json"], "output_dir": "eval",
               "overrides": {"arch": "resnet18", "knn_patch_size": 32, "knn_k": 10}}, root, data, tmp_path)
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    dino, rand = summary["knn_balanced_accuracy"], summary["random_init"]["knn_balanced_accuracy"]
    print(f"k-NN balanced accuracy: DINO {dino:.3f}, random init {rand:.3f}; accuracy "
          f"{summary['knn_accuracy']:.3f} vs {summary['random_init']['knn_accuracy']:.3f}")
    assert dino >= rand + 0.08, summary
    assert summary["knn_accuracy"] >= summary["random_init"]["knn_accuracy"], summary

    # the teacher has not collapsed: on validation tiles its centred, sharpened output is neither one-hot
    # nor uniform, and its logits vary between tiles in every direction on average
    ckpt = sorted(glob.glob(str(root / "models" / "checkpoint_epoch=*.pt")))[-1]
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    backbone = resnet_backbone("resnet18")
    teacher = MultiCropWrapper(backbone, DINOHead(backbone.embed_dim, OUT_DIM, 512, 128, use_bn=True))
    teacher.load_state_dict(state["teacher"])
    teacher.eval()
    crops = np.concatenate([grid_patches(read_rgb(it["image"]), None, 64, 32)[0]
                            for it in pretraining_items(data, "validation")])
    with torch.no_grad():
        logits = teacher(normalise_rgb(crops))
    probs = torch.softmax((logits - state["loss"]["center"]) / 0.04, dim=-1)
    entropy = float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean())
    print(f"teacher entropy {entropy:.3f} (uniform {math.log(OUT_DIM):.3f}); mean per-dim std {float(logits.std(0).mean()):.4f}")
    assert 0.3 < entropy < math.log(OUT_DIM) - 0.5
    assert float(logits.std(0).mean()) > 0.01
