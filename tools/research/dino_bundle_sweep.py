"""DINO hyper-parameter sweep through the bundle itself: configs/train.json with overrides (the learning
test's settings as the base), then inference.json + evaluate.json (k-NN, 32-px patches, k = 10) on the
learning test's data and on a larger held-out set; prints one RESULT line per setting:
``bal = [dino, random]`` on the test's data, then on the larger set.

    python -m tools research dino_bundle_sweep OUT_DIR cuda|cpu N_PARALLEL tools/research/dino_bundle_grid_2.json
"""

import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

BASE = {
    "arch": "resnet18",
    "out_dim": 256,
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


def run_one(args):
    name, over, data, out, dev = args
    os.environ["CUDA_VISIBLE_DEVICES"] = "0" if dev == "cuda" else ""
    import torch

    torch.set_num_threads(int(os.environ.get("SWEEP_THREADS", "2")))
    from tools.runner import config_parser, copy_bundle, run_parsed

    root = copy_bundle("pathology_dino_pretraining", Path(out) / name)
    cfg = dict(BASE)
    cfg.update(over)
    t = time.time()
    run_parsed(config_parser(root, ["train.json"], {"dataset_dir": data, "output_dir": str(Path(out) / name / "runs"), **cfg}))
    ttrain = time.time() - t
    ev = {"arch": cfg["arch"], "knn_patch_size": 32, "knn_k": 10}
    res = []
    for tag, d in (("eval", data), ("eval_big", data + "_big")):
        run_parsed(config_parser(root, ["inference.json", "evaluate.json"],
                                 {"dataset_dir": d, "output_dir": str(Path(out) / name / tag), **ev}))
        s = json.loads((Path(out) / name / tag / "summary.json").read_text())
        res += [s["knn_balanced_accuracy"], s["random_init"]["knn_balanced_accuracy"]]
    return name, over, res, ttrain


if __name__ == "__main__":
    out = Path(sys.argv[1])
    dev = sys.argv[2]
    par = int(sys.argv[3])
    grid = json.loads(Path(sys.argv[4]).read_text())
    from tools.recipes import synthesize

    data = str(synthesize({"kind": "histo", "n": 40, "seed": 0, "options": {"size": 96}}, out / "data"))
    synthesize({"kind": "histo", "n": 80, "seed": 1, "options": {"size": 128}}, out / "data_big")
    jobs = [(n, o, data, str(out), dev) for n, o in grid.items()]
    ctx = mp.get_context("spawn")
    with ctx.Pool(par) as pool:
        for r in pool.imap_unordered(run_one, jobs):
            print(
                "RESULT "
                + json.dumps(
                    {"name": r[0], "over": r[1], "bal": [round(v, 3) for v in r[2]], "t": round(r[3], 1)}
                ),
                flush=True,
            )
