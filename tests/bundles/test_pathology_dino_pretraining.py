"""Learning test of the DINO pretraining bundle: a short CPU pretraining on synthetic H&E tiles gives
frozen features whose k-NN tissue classification beats randomly initialised encoders, and the teacher
has not collapsed.

Runs the bundle's own configs (train.json, then inference.json + evaluate.json) through
``monai.bundle run``: a ResNet-18 on random 48-px patches of 240 tiles, cut into 32-px global and
16-px local views (the scale of the 32-px patches the k-NN classifies), about 300 steps of batch 32 (two
CPU minutes). Stain and colour jitter are off at this budget: with them the teacher drifts towards the
uniform output and the features gain less over random encoders (model card, "What was measured
here"). The k-NN is scored on a separate labelled set (600 tiles, seed 1: 3,240 bank and 1,080 query
patches) against three random encoders.
"""

from __future__ import annotations

import glob
import json
import math

import numpy as np
import pytest
import torch

from tools.recipes import synthesize
from tools.runner import copy_bundle, run_stage

BUNDLE = "pathology_dino_pretraining"
OUT_DIM = 1024
N_TRAIN_TILES = 240  # the training split of 400 tiles
STEPS_PER_EPOCH, EPOCHS, BATCH = 50, 6, 32
TRAIN_OVERRIDES = {
    "arch": "resnet18",
    "out_dim": OUT_DIM,
    "head_hidden_dim": 512,
    "head_bottleneck_dim": 128,
    "head_use_bn": True,
    "patch_size": 48,
    "patches_per_image": STEPS_PER_EPOCH * BATCH // N_TRAIN_TILES + 1,
    "global_crop_size": 32,
    "local_crop_size": 16,
    "n_local_crops": 2,
    "global_crop_scale": [0.6, 1.0],
    "local_crop_scale": [0.1, 0.4],
    "stain_jitter_prob": 0.0,
    "colour_jitter_prob": 0.0,
    "batch_size": BATCH,
    "max_epochs": EPOCHS,
    "warmup_epochs": 1,
    "base_lr": 0.004,
    "weight_decay_end": 0.04,
    "momentum_teacher": 0.99,
    "num_workers": 0,
    "amp": False,
}


@pytest.mark.slow
def test_dino_learns_tissue_features_without_collapse(tmp_path):
    from liverseg_monai.ssl.data import pretraining_items, read_rgb
    from liverseg_monai.ssl.dino import DINOHead, MultiCropWrapper, resnet_backbone
    from liverseg_monai.ssl.knn import grid_patches, normalise_rgb

    data = synthesize({"kind": "histo", "n": 400, "seed": 0, "options": {"size": 96}}, tmp_path / "data")
    labelled = synthesize({"kind": "histo", "n": 600, "seed": 1, "options": {"size": 96}}, tmp_path / "labelled")
    root = copy_bundle(BUNDLE, tmp_path / BUNDLE)
    train = run_stage({"name": "train", "config": ["train.json"], "output_dir": "train",
                       "overrides": TRAIN_OVERRIDES}, root, data, tmp_path)
    assert (root / "models" / "backbone.pt").is_file()
    # model.pt, the model-zoo artefact: the student's encoder, loading strictly into network_def
    student = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    resnet_backbone("resnet18").load_state_dict(student, strict=True)
    teacher_enc = torch.load(root / "models" / "backbone.pt", map_location="cpu", weights_only=True)
    assert not torch.equal(student["layer4.1.conv2.weight"], teacher_enc["layer4.1.conv2.weight"])
    # collapse monitors reach the engine's metrics (printed by StatsHandler every epoch)
    log = train.stdout + train.stderr
    assert "teacher_entropy" in log and "teacher_student_kl" in log

    run_stage({"name": "evaluate", "config": ["inference.json", "evaluate.json"], "output_dir": "eval",
               # the teacher's encoder (backbone.pt, what the other bundles use); the default, model.pt, is the
               # student's, measured lower (balanced accuracy +0.062 over random encoders against +0.11)
               "overrides": {"arch": "resnet18", "knn_patch_size": 32, "knn_k": 10,
                             "backbone_path": str(root / "models" / "backbone.pt")}}, root, labelled, tmp_path)
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    rand = summary["random_init"]
    assert summary["n_query_patches"] > 1000 and len(rand["per_seed"]) == 3
    print(f"k-NN accuracy: DINO {summary['knn_accuracy']:.3f}, random init {rand['knn_accuracy']:.3f} (per seed "
          f"{[round(r['knn_accuracy'], 3) for r in rand['per_seed']]}); balanced accuracy "
          f"{summary['knn_balanced_accuracy']:.3f} vs {rand['knn_balanced_accuracy']:.3f}")
    # clearly better: above every random encoder in accuracy, and above their mean in balanced accuracy
    # by more than half the spread between random seeds (0.07). The trained gain itself varies with the
    # order of floating-point sums (threads, CPU): +0.11 to +0.19 over seeds and thread counts on the
    # machine of the model card's table, +0.072 on the 2026-12-03 CI machine with the same code and data;
    # an encoder that has not learnt (random, collapsed) scores about 0
    best_random = max(r["knn_accuracy"] for r in rand["per_seed"])
    assert summary["knn_accuracy"] > best_random, summary
    assert summary["knn_accuracy_gain_over_random_init"] >= 0.03, summary
    assert summary["knn_balanced_accuracy_gain_over_random_init"] >= 0.05, summary

    # the teacher has not collapsed: on validation tiles its centred, sharpened output is neither one-hot
    # nor uniform, and its logits vary between tiles in every direction on average
    ckpt = sorted(glob.glob(str(root / "models" / "checkpoint_epoch=*.pt")))[-1]
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    backbone = resnet_backbone("resnet18")
    teacher = MultiCropWrapper(backbone, DINOHead(backbone.embed_dim, OUT_DIM, 512, 128, use_bn=True))
    teacher.load_state_dict(state["teacher"])
    teacher.eval()
    crops = np.concatenate([grid_patches(read_rgb(it["image"]), None, 32)[0]
                            for it in pretraining_items(labelled, "validation")])
    with torch.no_grad():
        logits = teacher(normalise_rgb(crops))
    probs = torch.softmax((logits - state["loss"]["center"]) / 0.04, dim=-1)
    entropy = float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean())
    print(f"teacher entropy {entropy:.3f} (uniform {math.log(OUT_DIM):.3f}); mean per-dim std {float(logits.std(0).mean()):.4f}")
    assert 0.3 < entropy < math.log(OUT_DIM) - 0.5
    assert float(logits.std(0).mean()) > 0.01
