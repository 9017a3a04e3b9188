"""DINO diagnosis at learning-test scale: the package's DINO parts (MultiCrop, DINOHead, DINOLoss, EMA,
schedules) in a plain loop, printing loss, teacher entropy, teacher-student KL and the teacher's k-NN
balanced accuracy (32-px patches of 80 synthetic 128-px tiles, seed 1) against a random encoder.

Research tool behind the DINO model card's sweep figures; the bundle itself trains with MONAI's
SupervisedTrainer (configs/train.json). Runs on CUDA when available.

    python -m tools research dino_loop_sweep '{"epochs": 30, "lr": 0.0005, "tt": 0.02, "cm": 0.99}'
    DIAG_ROOT=/tmp/diag bash tools/research/dino_loop_sweep.sh tools/research/dino_loop_grid_1.txt

Why a plain loop and not the bundle's trainer (``configs/train.json``: ``ssl.dino.DINOIteration`` in a
MONAI ``SupervisedTrainer``): this loop is the record behind the card's plain-loop figures, and its
step is not the bundle's — SGD as one option, a constant weight decay, a one-epoch warm-up and the
head's last layer frozen in the first epoch whatever the setting, the teacher's k-NN scored between
epochs. Run through the bundle, the same grid would measure another setting; the bundle-level sweep
with the bundle's own trainer is ``dino_bundle_sweep.py``.
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
    arch="resnet18",
    out_dim=256,
    bn=True,
    lr=5e-4,
    opt="adamw",
    wd=0.04,
    epochs=10,
    bs=16,
    nl=2,
    gs=64,
    ls=32,
    mom=0.95,
    tt=0.04,
    cm=0.9,
    n=40,
    size=96,
    ppi=4,
    gscale=(0.4, 1.0),
    lscale=(0.05, 0.4),
    hed=0.8,
    col=0.8,
    clip=3.0,
    seed=0,
    cent="ema",
)
cfg.update(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {})
dev = "cuda" if torch.cuda.is_available() else "cpu"
torch.manual_seed(cfg["seed"])
np.random.seed(cfg["seed"])
root = Path(os.environ.get("DIAG_ROOT", "/tmp/diag"))
data = root / f"data_{cfg['n']}_{cfg['size']}"
if not (data / "dataset.json").exists():
    synthesize({"kind": "histo", "n": cfg["n"], "seed": 0, "options": {"size": cfg["size"]}}, data)
big = root / "data_big"
if not (big / "dataset.json").exists():
    synthesize({"kind": "histo", "n": 80, "seed": 1, "options": {"size": 128}}, big)
imgs = [
    torch.as_tensor(read_rgb(it["image"])).permute(2, 0, 1).float() / 255
    for it in pretraining_items(data, ["training"])
]
mc = MultiCrop(
    global_size=cfg["gs"],
    local_size=cfg["ls"],
    n_local=cfg["nl"],
    global_scale=cfg["gscale"],
    local_scale=cfg["lscale"],
    hed_prob=cfg["hed"],
    colour_prob=cfg["col"],
)
mc.set_random_state(cfg["seed"])
student = MultiCropWrapper(
    resnet_backbone(cfg["arch"]),
    DINOHead(resnet_backbone(cfg["arch"]).embed_dim, cfg["out_dim"], 512, 128, use_bn=cfg["bn"]),
)
student = student.to(dev)
teacher = make_teacher(student)
loss_fn = DINOLoss(
    cfg["out_dim"], teacher_temp=cfg["tt"], warmup_teacher_temp=cfg["tt"], center_momentum=cfg["cm"],
    centering=cfg["cent"],
).to(dev)
if cfg["opt"] == "sgd":
    opt = torch.optim.SGD(param_groups(student), lr=cfg["lr"], momentum=0.9)
else:
    opt = torch.optim.AdamW(param_groups(student), lr=cfg["lr"])
samples = imgs * cfg["ppi"]
spe = len(samples) // cfg["bs"]
total = spe * cfg["epochs"]
step = 0


def evaluate(net):
    tr = load_datalist(big, "training", require=("image", "label"))
    va = load_datalist(big, "validation", require=("image", "label"))
    s, _ = knn_evaluation(net, tr, va, patch=32, k=10, device=dev)
    return s["knn_balanced_accuracy"]


t0 = time.time()
print("random", round(evaluate(resnet_backbone(cfg["arch"]).to(dev)), 3), flush=True)
for ep in range(cfg["epochs"]):
    perm = np.random.permutation(len(samples))
    ents = []
    losses = []
    for b in range(spe):
        views = [mc(samples[i]) for i in perm[b * cfg["bs"] : (b + 1) * cfg["bs"]]]
        crops = [torch.stack([v[j] for v in views]).to(dev) for j in range(len(views[0]))]
        lr = cosine_schedule(step, total, cfg["lr"], 1e-6, warmup_steps=spe)
        mom = cosine_schedule(step, total, cfg["mom"], 1.0)
        for i, g in enumerate(opt.param_groups):
            g["lr"] = lr
            if i == 0:
                g["weight_decay"] = cfg["wd"]
        student.train()
        with torch.no_grad():
            t_out = teacher(crops[:2])
        s_out = student(crops)
        loss = loss_fn(s_out, t_out, ep)
        opt.zero_grad()
        loss.backward()
        if cfg["clip"]:
            clip_gradients(student, cfg["clip"])
        if ep == 0:
            for n_, p in student.named_parameters():
                if "last_layer" in n_:
                    p.grad = None
        opt.step()
        ema_update(teacher, student, mom)
        step += 1
        ents.append(loss_fn.last_stats["teacher_entropy"])
        losses.append(float(loss))
    line = f"ep {ep + 1} loss {np.mean(losses):.3f} ent {np.mean(ents):.3f} kl {loss_fn.last_stats['teacher_student_kl']:.3f} t {time.time() - t0:.0f}s"
    if (ep + 1) % max(cfg["epochs"] // 5, 1) == 0:
        line += f" knn_teacher {evaluate(teacher.backbone):.3f}"
    print(line, flush=True)
