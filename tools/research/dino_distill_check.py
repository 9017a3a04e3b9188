"""DINO diagnosis: can the student fit a *fixed* teacher when both see the *same* view?

A sanity check below the DINO loop: the teacher is frozen at the student's initialisation (no EMA),
teacher and student get the identical global crop, and only the student learns (DINOLoss with its
centring and sharpening, AdamW or SGD). With one fixed batch of 16 crops the student fits the teacher
(KL -> ~0); with fresh crops every step (the same tiles, the same augmentation) it has to generalise
the teacher's centred, sharpened output, which is what DINO's loss asks of it at every step.

    python -m tools research dino_distill_check '{"lr": 5e-4, "fixed": true}'
    python -m tools research dino_distill_check '{"lr": 5e-4, "fixed": false}'

Data: 40 synthetic 96-px H&E tiles (seed 0, the DINO learning test's), written under ``DIAG_ROOT``
(default /tmp/diag) if absent. Prints loss, teacher entropy and teacher-student KL every 20 steps.

Why a plain loop and not the bundle's trainer (``configs/train.json``): the check removes what the
DINO iteration is made of — the EMA teacher is frozen and teacher and student see the same crop — so
there is no DINO training step to configure; it isolates the loss.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from liverseg_monai.ssl.augment import MultiCrop
from liverseg_monai.ssl.data import pretraining_items, read_rgb
from liverseg_monai.ssl.dino import (
    DINOHead,
    DINOLoss,
    MultiCropWrapper,
    make_teacher,
    param_groups,
    resnet_backbone,
)
from tools.recipes import synthesize

cfg = {"lr": 5e-4, "fixed": False, "steps": 100, "opt": "adamw", "batch": 16, "seed": 0}
cfg.update(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {})
torch.manual_seed(cfg["seed"])
rng = np.random.default_rng(cfg["seed"])
data = Path(os.environ.get("DIAG_ROOT", "/tmp/diag")) / "data_40_96"
if not (data / "dataset.json").exists():
    synthesize({"kind": "histo", "n": 40, "seed": 0, "options": {"size": 96}}, data)
tiles = [torch.as_tensor(read_rgb(it["image"])).permute(2, 0, 1).float() / 255 for it in pretraining_items(data, ["training"])]
crops = MultiCrop(global_size=64, local_size=32, n_local=2)
crops.set_random_state(cfg["seed"])

student = MultiCropWrapper(resnet_backbone("resnet18"), DINOHead(512, 256, 512, 128, use_bn=True))
teacher = make_teacher(student)  # frozen: never updated below
loss_fn = DINOLoss(256, center_momentum=0.9)
groups = param_groups(student)
opt = (torch.optim.AdamW(groups, lr=cfg["lr"]) if cfg["opt"] == "adamw"
       else torch.optim.SGD(groups, lr=cfg["lr"], momentum=0.9))


def batch() -> torch.Tensor:
    return torch.stack([crops(tiles[i])[0] for i in rng.choice(len(tiles), cfg["batch"])])


fixed = batch()
for step in range(cfg["steps"]):
    x = fixed if cfg["fixed"] else batch()
    student.train()
    with torch.no_grad():
        t_out = teacher([x, x])
    loss = loss_fn(student([x, x]), t_out, 1)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 20 == 0 or step == cfg["steps"] - 1:
        stats = {k: round(v, 3) for k, v in loss_fn.last_stats.items() if k != "teacher_temp"}
        print(step, round(float(loss), 3), stats, flush=True)
