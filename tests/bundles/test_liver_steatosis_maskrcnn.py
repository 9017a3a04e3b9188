"""Learning test: the Mask R-CNN bundle learns synthetic steatosis droplets and beats clump splitting.

Trains the bundle (ResNet-18 FPN, narrow heads, 128-px tiles) through ``monai.bundle run`` for about
360 SGD iterations on synthetic tiles, then runs evaluate.json on the held-out validation tiles. The
network must reach AP50 >= 0.80 on all droplets and beat the classical clump-splitting baseline on
droplets that touch another droplet.
"""

import json
import time

import pytest

from liverseg_monai.recipes import copy_bundle, run_stage, synthesize

BUNDLE = "liver_steatosis_maskrcnn"
NETWORK = {"depth": 18, "fpn_channels": 64, "representation_size": 256, "mask_head_channels": [64, 64],
           "proposals_per_image": 200, "tile_size": 128, "tile_overlap": 32}


@pytest.mark.slow
def test_learns_droplets_and_beats_clump_splitting(tmp_path):
    start = time.time()
    data = synthesize({"kind": "steatosis", "n": 80, "seed": 11, "options": {"size": 128, "density": 2.0}},
                      tmp_path / "data")
    root = copy_bundle(BUNDLE, tmp_path / BUNDLE)
    train = {
        **NETWORK, "max_epochs": 30, "heads_epochs": 1, "val_interval": 30, "ckpt_interval": 30,
        "train_tile_size": 128, "batch_size": 4, "num_workers": 0, "learning_rate": 0.02,
        "warmup_iters": 50, "lr_step_iters": 290, "rpn_batch_size_per_image": 64, "box_batch_size_per_image": 64,
    }
    run_stage({"name": "train", "config": ["inference.json", "train.json"], "output_dir": "train", "overrides": train},
              root, data, tmp_path)
    assert (root / "models" / "model.pt").is_file()
    run_stage({"name": "evaluate", "config": ["inference.json", "evaluate.json"], "output_dir": "eval",
               "overrides": NETWORK}, root, data, tmp_path)
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    net, base = summary["network"], summary["clump_splitting"]
    net_t, base_t = summary["network_touching"], summary["clump_splitting_touching"]
    report = (f"network AP50 {net['AP50']:.3f} (touching {net_t['AP50']:.3f}), clump splitting AP50 "
              f"{base['AP50']:.3f} (touching {base_t['AP50']:.3f}), {time.time() - start:.0f} s")
    print(report)
    assert net["AP50"] >= 0.80, report
    assert net_t["AP50"] > base_t["AP50"], report
    assert net["F1"] > 0.75, report
