"""DINO at the k-NN patch scale: the package's DINO parts in a plain loop on random patches of synthetic
tiles, scored by k-NN on a separate, larger labelled set against random encoders.

Session 4's research tool behind the model card's "views at the patch scale" figures. Differences from
``dino_loop_sweep.py``: views are cut from a random ``patch``-px square of a tile (default 48 px -> 32-px
global and 16-px local views, the scale of the 32-px patches the k-NN classifies), the photometric
jitter is configurable (``hed``, ``col`` probabilities and strengths), and the k-NN is scored on 600
tiles of 96 px (seed 1; 3,240 bank and 1,080 query patches) instead of 80.

    python -m tools research dino_patch_sweep '{"steps": 800, "hed": 0, "col": 0, "out_dim": 1024}'
    RANDOM=1 python -m tools research dino_patch_sweep      # the random encoders, seeds 0-2
    ROOT=/tmp/dino_patch bash -c 'while read -r c; do python -m tools research dino_patch_sweep "$c"; done \
        < tools/research/dino_patch_grid.txt'

Prints every ``steps / evals`` steps: loss, teacher entropy, teacher-student KL, and the teacher
backbone's k-NN balanced accuracy, accuracy and per-class recall (0 background, 1 parenchyma, 2 portal
tract, 3 vessel, 5 inflammation).

Why a plain loop and not the bundle's trainer (``configs/train.json``): the views are cut from a
random ``patch``-px square of a tile before the multi-crop and the photometric jitter strengths are free
parameters; neither is a key of the bundle's ``MultiCropd`` preprocessing, so the bundle cannot express
this setting. The bundle-level sweep with the bundle's own trainer is ``dino_bundle_sweep.py``.
"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from liverseg_monai.data.datalist import load_datalist
from liverseg_monai.ssl.augment import MultiCrop
from liverseg_monai.ssl.data import pretraining_items, read_rgb
from liverseg_monai.ssl.dino import (
    DINOHead,
    DINOLoss,
    MultiCropWrapper,
    clip_gradients,
    cosine_schedule,
    ema_update,
    make_teacher,
    param_groups,
    resnet_backbone,
)
from liverseg_monai.ssl.knn import knn_evaluation
from tools.recipes import synthesize

cfg = dict(
    arch="resnet18", out_dim=256, bn=True, hid=512, bot=128, lr=5e-4, wd=0.04, steps=800, bs=32, warm=0.1,
    n=40, size=96, patch=48, gs=32, ls=16, nl=2, gscale=(0.4, 1.0), lscale=(0.05, 0.4),
    hed=0.8, col=0.8, hed_sigma=0.05, hed_bias=0.05, bri=0.2, con=0.2, sat=0.1,
    mom=0.99, tt=0.04, st=0.1, cm=0.9, clip=3.0, seed=0, evals=4,
)
cfg.update(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {})
torch.manual_seed(cfg["seed"])
rng = np.random.default_rng(cfg["seed"])
root = Path(os.environ.get("ROOT", "/tmp/dino_patch"))
data, labelled = root / f"data_{cfg['n']}_{cfg['size']}", root / "labelled_600_96"
if not (data / "dataset.json").exists():
    synthesize({"kind": "histo", "n": cfg["n"], "seed": 0, "options": {"size": cfg["size"]}}, data)
if not (labelled / "dataset.json").exists():
    synthesize({"kind": "histo", "n": 600, "seed": 1, "options": {"size": 96}}, labelled)
bank_items = load_datalist(labelled, "training", require=("image", "label"))
query_items = load_datalist(labelled, "validation", require=("image", "label"))


def evaluate(backbone):
    s, _ = knn_evaluation(backbone, bank_items, query_items, patch=32, k=10)
    return round(s["knn_balanced_accuracy"], 3), round(s["knn_accuracy"], 3), {k: round(v, 2) for k, v in s["recall"].items()}


if os.environ.get("RANDOM"):
    for seed in range(3):
        torch.manual_seed(seed)
        print("random seed", seed, evaluate(resnet_backbone(cfg["arch"])), flush=True)
    sys.exit()

tiles = [torch.as_tensor(read_rgb(it["image"])).permute(2, 0, 1).float() / 255 for it in pretraining_items(data, ["training"])]
views = MultiCrop(global_size=cfg["gs"], local_size=cfg["ls"], n_local=cfg["nl"], global_scale=cfg["gscale"],
                  local_scale=cfg["lscale"], hed_prob=cfg["hed"], colour_prob=cfg["col"], hed_sigma=cfg["hed_sigma"],
                  hed_bias=cfg["hed_bias"], brightness=cfg["bri"], contrast=cfg["con"], saturation=cfg["sat"])
views.set_random_state(cfg["seed"])
backbone = resnet_backbone(cfg["arch"])
student = MultiCropWrapper(backbone, DINOHead(backbone.embed_dim, cfg["out_dim"], cfg["hid"], cfg["bot"], use_bn=cfg["bn"]))
teacher = make_teacher(student)
loss_fn = DINOLoss(cfg["out_dim"], teacher_temp=cfg["tt"], warmup_teacher_temp=cfg["tt"], student_temp=cfg["st"],
                   center_momentum=cfg["cm"])
opt = torch.optim.AdamW(param_groups(student), lr=cfg["lr"])


def patch(tile):
    p = cfg["patch"]
    if not p:
        return tile
    y, x = rng.integers(0, tile.shape[1] - p + 1), rng.integers(0, tile.shape[2] - p + 1)
    return tile[:, y : y + p, x : x + p]


t0, total = time.time(), cfg["steps"]
entropies, losses = [], []
for step in range(total):
    batch = [views(patch(tiles[i])) for i in rng.integers(0, len(tiles), cfg["bs"])]
    crops = [torch.stack([v[j] for v in batch]) for j in range(len(batch[0]))]
    for i, group in enumerate(opt.param_groups):
        group["lr"] = cosine_schedule(step, total, cfg["lr"], 1e-6, warmup_steps=int(cfg["warm"] * total))
        if i == 0:
            group["weight_decay"] = cfg["wd"]
    with torch.no_grad():
        t_out = teacher(crops[:2])
    loss = loss_fn(student(crops), t_out, step)
    opt.zero_grad()
    loss.backward()
    clip_gradients(student, cfg["clip"])
    opt.step()
    ema_update(teacher, student, cosine_schedule(step, total, cfg["mom"], 1.0))
    entropies.append(loss_fn.last_stats["teacher_entropy"])
    losses.append(float(loss.detach()))
    if (step + 1) % max(total // cfg["evals"], 1) == 0:
        bacc, acc, recall = evaluate(teacher.backbone)
        print(f"step {step + 1} loss {np.mean(losses[-20:]):.3f} ent {np.mean(entropies[-20:]):.3f} "
              f"kl {loss_fn.last_stats['teacher_student_kl']:.3f} t {time.time() - t0:.0f}s "
              f"knn_teacher bacc {bacc:.3f} acc {acc:.3f} {recall}", flush=True)
print(json.dumps({k: cfg[k] for k in cfg}), flush=True)
