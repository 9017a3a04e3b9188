"""Ablation of the liver H&E DeepLabV3+: deformable vs standard ASPP, DINO vs random encoder init.

The source paper's claims this reproduces at small scale:

1. deformable convolutions in ASPP help over the standard (vanilla DeepLabV3+) ASPP;
2. an encoder pre-trained with DINO on unlabelled H&E helps most when few tiles are annotated.

Each variant trains the same DeepLabV3+ for the same number of iterations on the same tiles (seeded),
and is scored on the held-out tiles (per-class IoU and Dice from the pooled confusion matrix, mIoU).
Without a dataset, synthetic H&E tiles (:mod:`liverseg_monai.data.synth.histo`) are made. The DINO
backbone is ``models/backbone.pt`` of ``bundles/pathology_dino_pretraining``; without one, the DINO
row is reported as not run and says why.

Command::

    python -m liverseg_monai.engines.ablation_deeplab --out ablation_out \
        [--backbone bundles/pathology_dino_pretraining/models/backbone.pt] [--data DATASET_DIR] \
        [--iterations 300] [--label-fraction 0.25] [--encoder resnet10]

writes ``ablation.csv``, ``ablation.json`` and ``ablation.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from liverseg_monai.io.atomic import atomic_write_text
from liverseg_monai.io.tables import write_table
from liverseg_monai.metrics.segmentation import confusion_matrix, dice_from_confusion, iou_from_confusion

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Variant:
    """One ablation arm: which ASPP, which encoder initialisation, which fraction of training tiles."""

    name: str
    aspp: str = "deformable"  # or "standard"
    init: str = "random"  # or "dino"
    label_fraction: float = 1.0


@dataclass
class AblationRow:
    variant: str
    aspp: str
    init: str
    label_fraction: float
    n_train_tiles: int
    encoder: str
    iterations: int
    status: str = "ok"
    mean_iou: float | None = None
    mean_dice: float | None = None
    per_class_iou: dict = field(default_factory=dict)
    per_class_dice: dict = field(default_factory=dict)
    train_seconds: float | None = None
    note: str = ""


def default_variants(label_fraction: float) -> list[Variant]:
    """The paper's comparisons: ASPP kind with all labels; encoder init with a small labelled fraction."""
    return [
        Variant("deformable_aspp_random_init", "deformable", "random", 1.0),
        Variant("standard_aspp_random_init", "standard", "random", 1.0),
        Variant(f"deformable_aspp_random_init_{label_fraction:g}_labels", "deformable", "random", label_fraction),
        Variant(f"deformable_aspp_dino_init_{label_fraction:g}_labels", "deformable", "dino", label_fraction),
    ]


def _load_split(dataset_dir: Path, key: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from liverseg_monai.data.datalist import load_datalist
    from liverseg_monai.data.readers_pathology import read_label_map, read_rgb
    from liverseg_monai.transforms.tiles import check_tile_label

    images, labels, names = [], [], []
    for item in load_datalist(dataset_dir, key, require=("image", "label")):
        rgb = read_rgb(item["image"])
        lab = check_tile_label(read_label_map(item["label"]), rgb.shape[:2], None, item["label"])
        images.append(rgb)
        labels.append(lab)
        names.append(item["image"])
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"{dataset_dir}: the ablation needs tiles of one size, found {sorted(shapes)}")
    return np.stack(images), np.stack(labels).astype(np.int64), names


def _class_names(dataset_dir: Path, n: int) -> list[str]:
    content = json.loads((dataset_dir / "dataset.json").read_text())
    names = content.get("classes")
    return list(names) if isinstance(names, list) and len(names) >= n else [f"class_{i}" for i in range(n)]


def _normalise(rgb: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=rgb.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=rgb.device).view(1, 3, 1, 1)
    return (rgb / 255.0 - mean) / std


def backbone_encoder_name(path: str | os.PathLike) -> str:
    """The torchvision ResNet a ``backbone.pt`` holds (``resnet18/34/50/101``), from its key names."""
    from liverseg_monai.errors import InputError
    from liverseg_monai.networks.weights import read_backbone_file

    state = read_backbone_file(path)
    blocks = [len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")}) for i in range(1, 5)]
    bottleneck = any(".conv3." in k for k in state)
    table = {(False, (2, 2, 2, 2)): "resnet18", (False, (3, 4, 6, 3)): "resnet34", (True, (3, 4, 6, 3)): "resnet50",
             (True, (3, 4, 23, 3)): "resnet101", (False, (1, 1, 1, 1)): "resnet10"}
    name = table.get((bottleneck, tuple(blocks)))
    if name is None:
        raise InputError(path, f"not a torchvision ResNet-18/34/50/101 backbone (blocks per stage {blocks})")
    return name


def train_and_score(
    variant: Variant,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    encoder: str = "resnet10",
    backbone: str | os.PathLike | None = None,
    iterations: int = 300,
    batch_size: int = 8,
    learning_rate: float = 2e-3,
    channels: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, float]:
    """Train one variant (AdamW, Dice+CE, flips/90-degree rotations/HED jitter) and return the test
    confusion matrix and the training time in seconds."""
    from monai.losses import DiceCELoss

    from liverseg_monai.networks.deeplab import deeplab_v3_plus
    from liverseg_monai.transforms.stain import hed_jitter

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = deeplab_v3_plus(3, num_classes, encoder=encoder, aspp=variant.aspp, aspp_channels=channels, decoder_channels=channels)
    if variant.init == "dino":
        from liverseg_monai.networks.weights import load_encoder_weights

        logger.info("%s: %s", variant.name, load_encoder_weights(net, backbone, prefix="encoder."))
    net = net.to(device)
    images, labels = train
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    y_all = torch.from_numpy(labels)[:, None]
    opt = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=iterations, power=0.9)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    start = time.perf_counter()
    net.train()
    for _ in range(iterations):
        idx = rng.integers(0, len(x_all), batch_size)
        x, y = x_all[idx].clone(), y_all[idx].clone()
        for b in range(len(idx)):  # augmentation: HED stain jitter, flips, 90-degree rotations
            if rng.random() < 0.8:
                jittered = hed_jitter(x[b].numpy() / 255.0, rng.uniform(0.95, 1.05, 3), rng.uniform(-0.02, 0.02, 3))
                x[b] = torch.from_numpy(jittered) * 255.0
            k = int(rng.integers(4))
            x[b], y[b] = torch.rot90(x[b], k, (1, 2)), torch.rot90(y[b], k, (1, 2))
            if rng.random() < 0.5:
                x[b], y[b] = x[b].flip(2), y[b].flip(2)
        opt.zero_grad()
        loss = loss_fn(net(_normalise(x.to(device))), y.to(device))
        loss.backward()
        opt.step()
        sched.step()
    seconds = time.perf_counter() - start
    net.eval()
    test_x = torch.from_numpy(test[0]).permute(0, 3, 1, 2).float()
    preds = []
    with torch.no_grad():
        for i in range(0, len(test_x), 8):
            preds.append(net(_normalise(test_x[i : i + 8].to(device))).argmax(1).cpu().numpy())
    return confusion_matrix(np.concatenate(preds), test[1], num_classes), seconds


def run_ablation(
    out: str | os.PathLike,
    backbone: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    iterations: int = 300,
    label_fraction: float = 0.25,
    encoder: str = "resnet10",
    n_tiles: int = 60,
    tile_size: int = 64,
    seed: int = 0,
    variants: Sequence[Variant] | None = None,
    channels: int = 64,
    device: str | torch.device = "cpu",
) -> list[AblationRow]:
    """Run the ablation and write ``ablation.csv``, ``ablation.json`` and ``ablation.md`` to ``out``.

    Args:
        out: output folder.
        backbone: DINO ``backbone.pt`` (torchvision ResNet keys); its architecture replaces ``encoder``
            for every variant so the arms stay comparable. ``None``: DINO rows are reported as not run.
        data: dataset folder (``training`` and ``validation`` items with labels, tiles of one size);
            ``None`` synthesises ``n_tiles`` H&E tiles of ``tile_size`` pixels into ``out/data``.
        iterations: training iterations per variant (batch 8).
        label_fraction: fraction of the training tiles the few-annotation arms see.
        encoder: ResNet encoder when no backbone is given.
        seed: seed of data, sampling and initialisation (the same for every arm).
        variants: arms to run (default :func:`default_variants`).
        channels: ASPP and decoder channels.

    Returns:
        one :class:`AblationRow` per variant.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if data is None:
        from liverseg_monai.data.synth.histo import synth_histo

        data = out / "data"
        synth_histo(data, seed=seed, n=n_tiles, size=tile_size)
    data = Path(data)
    train_x, train_y, _ = _load_split(data, "training")
    test_x, test_y, _ = _load_split(data, "validation")
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    names = _class_names(data, num_classes)
    num_classes = len(names)
    if backbone:
        encoder = backbone_encoder_name(backbone)
    rows: list[AblationRow] = []
    for variant in variants or default_variants(label_fraction):
        n_train = max(1, int(round(len(train_x) * variant.label_fraction)))
        subset = np.random.default_rng(seed).permutation(len(train_x))[:n_train]
        row = AblationRow(variant.name, variant.aspp, variant.init, variant.label_fraction, n_train, encoder, iterations)
        if variant.init == "dino" and not backbone:
            row.status = "not run"
            row.note = ("no DINO backbone given: train bundles/pathology_dino_pretraining (configs/train.json writes "
                        "models/backbone.pt) and pass --backbone PATH")
            rows.append(row)
            continue
        cm, seconds = train_and_score(variant, (train_x[subset], train_y[subset]), (test_x, test_y), num_classes,
                                      encoder, backbone, iterations, seed=seed, channels=channels,
                                      device=device)
        iou, dice = iou_from_confusion(cm), dice_from_confusion(cm)
        row.mean_iou = round(float(np.nanmean(iou)), 4)
        row.mean_dice = round(float(np.nanmean(dice)), 4)
        row.per_class_iou = {n: (None if np.isnan(v) else round(float(v), 4)) for n, v in zip(names, iou)}
        row.per_class_dice = {n: (None if np.isnan(v) else round(float(v), 4)) for n, v in zip(names, dice)}
        row.train_seconds = round(seconds, 1)
        if variant.init == "dino":
            row.note = f"encoder from {backbone}"
        rows.append(row)
        logger.info("%s: mIoU %s", variant.name, row.mean_iou)
    _write_reports(out, rows, names, data, len(test_x))
    return rows


def _write_reports(out: Path, rows: list[AblationRow], names: list[str], data: Path, n_test: int) -> None:
    columns = ["variant", "aspp", "init", "label_fraction", "n_train_tiles", "encoder", "iterations", "status",
               "mean_iou", "mean_dice", *[f"iou_{n}" for n in names], "train_seconds", "note"]
    write_table(out / "ablation.csv", columns=columns, rows=[
        [r.variant, r.aspp, r.init, r.label_fraction, r.n_train_tiles, r.encoder, r.iterations, r.status,
         r.mean_iou, r.mean_dice, *[r.per_class_iou.get(n) for n in names], r.train_seconds, r.note] for r in rows])
    atomic_write_text(out / "ablation.json", json.dumps({"data": str(data), "n_test_tiles": n_test, "class_names": names,
                                                         "rows": [asdict(r) for r in rows]}, indent=2))
    lines = [f"# DeepLabV3+ ablation on {data} ({n_test} held-out tiles)", "",
             "| variant | ASPP | init | labelled fraction | train tiles | mIoU | mean Dice | parenchyma IoU | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        par = r.per_class_iou.get("parenchyma") if r.per_class_iou else None
        lines.append(f"| {r.variant} | {r.aspp} | {r.init} | {r.label_fraction:g} | {r.n_train_tiles} | "
                     f"{r.mean_iou if r.mean_iou is not None else r.status} | {r.mean_dice if r.mean_dice is not None else ''} | "
                     f"{par if par is not None else ''} | {r.note} |")
    atomic_write_text(out / "ablation.md", "\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder for ablation.csv/json/md")
    parser.add_argument("--backbone", default=None, help="DINO backbone.pt (bundles/pathology_dino_pretraining/models)")
    parser.add_argument("--data", default=None, help="dataset folder; default: synthetic H&E tiles")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--label-fraction", type=float, default=0.25)
    parser.add_argument("--encoder", default="resnet10")
    parser.add_argument("--n-tiles", type=int, default=60)
    parser.add_argument("--tile-size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from liverseg_monai.errors import LiversegError

    try:
        run_ablation(args.out, args.backbone, args.data, args.iterations, args.label_fraction, args.encoder,
                     args.n_tiles, args.tile_size, args.seed, channels=args.channels, device=args.device)
    except LiversegError as err:
        print(f"error: {err}")
        return 2
    print((Path(args.out) / "ablation.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
