"""Ablation of the liver H&E DeepLabV3+: deformable vs standard ASPP, DINO vs random encoder init.

The source paper's claims this reproduces at small scale:

1. deformable convolutions in ASPP help over the standard (vanilla DeepLabV3+) ASPP;
2. an encoder pre-trained with DINO on unlabelled H&E helps most when few tiles are annotated.

Each variant is the bundle itself (``bundles/liver_pathology_deeplab_segmentation``): one copy per
arm, trained by its ``inference.json`` + ``train.json`` (MONAI ``SupervisedTrainer``: AdamW,
Dice+CE, HED stain jitter, flips, 90-degree rotations, polynomial learning rate) and scored by its
``inference.json`` + ``evaluate.json`` (``SegmentationReport``: per-class IoU and Dice from the pooled
confusion matrix, mIoU) on the held-out ``validation`` tiles, all through :mod:`tools.runner` with
overrides. The arms differ only by config: ``baseline_deeplab_aspp.json`` merged for the standard
ASPP, ``pretrained_weights`` for the DINO encoder, and a datalist holding the first
``label_fraction`` of the training tiles (a seeded permutation). Every arm sees the same number of
iterations of batch 8 (one 64-px patch per tile: ``patches_per_tile`` 1), the same seed and the
same held-out tiles; it validates once, at its last epoch, so ``models/model.pt`` is the final
weights and no checkpoint is chosen on the held-out tiles.

Without a dataset, synthetic H&E tiles (:mod:`liverseg_monai.data.synth.histo`) are made. The DINO
backbone is ``models/backbone.pt`` of ``bundles/pathology_dino_pretraining``; without one, the DINO
row is reported as not run and says why.

Command::

    python -m tools ablation-deeplab --out ablation_out \
        [--backbone bundles/pathology_dino_pretraining/models/backbone.pt] [--data DATASET_DIR] \
        [--iterations 300] [--label-fraction 0.25] [--encoder resnet10]

writes ``ablation.csv``, ``ablation.json`` and ``ablation.md`` in ``--out`` (and each arm's bundle
copy, training log and evaluation under ``--out/<variant>``). ``train_seconds`` is the wall time of
the arm's training run (process start, data caching and the final validation included).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from liverseg_monai.io.atomic import atomic_write_text
from liverseg_monai.io.tables import write_table
from tools.runner import copy_bundle, run_bundle

logger = logging.getLogger(__name__)

BUNDLE = "liver_pathology_deeplab_segmentation"
BATCH_SIZE = 8
#: config merged on top of the bundle's for each ASPP kind
ASPP_CONFIGS = {"deformable": [], "standard": ["baseline_deeplab_aspp.json"]}


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


def _split_items(dataset_dir: Path, key: str) -> list[dict]:
    from liverseg_monai.data.datalist import load_datalist

    return load_datalist(dataset_dir, key, require=("image", "label"))


def _class_names(dataset_dir: Path) -> list[str] | None:
    names = json.loads((dataset_dir / "dataset.json").read_text()).get("classes")
    return list(names) if isinstance(names, list) and names else None


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


def epochs_for(iterations: int, n_train: int, batch_size: int = BATCH_SIZE) -> int:
    """Epochs of ``ceil(n_train / batch_size)`` iterations that make about ``iterations`` iterations."""
    return max(1, round(iterations / math.ceil(n_train / batch_size)))


def subset_dataset(src: Path, dest: Path, training: Sequence[int]) -> Path:
    """``dest/dataset.json`` with the ``training`` items at the given indices and every ``validation`` item of
    ``src/dataset.json``; the files are symbolic links to ``src``'s (the bundle reads paths inside its dataset)."""
    content = json.loads((src / "dataset.json").read_text())
    dest.mkdir(parents=True, exist_ok=True)
    subset = {"training": [content["training"][i] for i in training], "validation": content["validation"]}
    if content.get("classes"):
        subset["classes"] = content["classes"]
    for item in subset["training"] + subset["validation"]:
        for key in ("image", "label"):
            link = dest / item[key]
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to((src / item[key]).resolve())
    atomic_write_text(dest / "dataset.json", json.dumps(subset, indent=2))
    return dest


def train_and_score(
    variant: Variant,
    work: Path,
    dataset_dir: Path,
    training: Sequence[int],
    class_names: list[str] | None,
    encoder: str = "resnet10",
    backbone: str | os.PathLike | None = None,
    iterations: int = 300,
    learning_rate: float = 2e-3,
    channels: int = 64,
    patch_size: int = 64,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[dict, float, int]:
    """Train one variant with the bundle's ``train.json`` and score it with its ``evaluate.json``.

    Returns:
        the evaluation ``summary.json``, the training run's wall time in seconds and the number of
        training iterations it made.
    """
    if work.exists():  # a previous run's checkpoints would be resumed by train.json
        shutil.rmtree(work)
    data = subset_dataset(dataset_dir, work / "data", training)
    root = copy_bundle(BUNDLE, work / "bundle")
    common = {"device": f"$torch.device('{device}')", **({"class_names": class_names} if class_names else {})}
    epochs = epochs_for(iterations, len(training))
    train = {**common, "encoder": encoder, "aspp_channels": channels, "decoder_channels": channels,
             "patch_size": [patch_size, patch_size], "patches_per_tile": 1, "batch_size": BATCH_SIZE,
             "learning_rate": learning_rate, "max_epochs": epochs, "val_interval": epochs, "num_workers": 0,
             "seed": seed, **({"pretrained_weights": str(backbone)} if variant.init == "dino" else {})}
    extra = ASPP_CONFIGS[variant.aspp]
    start = time.perf_counter()
    run_bundle(root, ["inference.json", "train.json", *extra], data, work / "train", train)
    seconds = time.perf_counter() - start
    # the architecture comes back from models/train_config.json (written by the training run)
    run_bundle(root, ["inference.json", "evaluate.json", *extra], data, work / "eval", common)
    summary = json.loads((work / "eval" / "summary.json").read_text())
    return summary, seconds, epochs * math.ceil(len(training) / BATCH_SIZE)


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
    device: str = "cpu",
) -> list[AblationRow]:
    """Run the ablation and write ``ablation.csv``, ``ablation.json`` and ``ablation.md`` to ``out``.

    Args:
        out: output folder.
        backbone: DINO ``backbone.pt`` (torchvision ResNet keys); its architecture replaces ``encoder``
            for every variant so the arms stay comparable. ``None``: DINO rows are reported as not run.
        data: dataset folder (``training`` and ``validation`` items with labels, tiles of one size);
            ``None`` synthesises ``n_tiles`` H&E tiles of ``tile_size`` pixels into ``out/data``.
        tile_size: also the training patch size (one patch per tile and iteration).
        iterations: training iterations of batch 8 per variant, rounded to whole epochs of the arm's
            training tiles (the row's ``iterations`` is the number made).
        label_fraction: fraction of the training tiles the few-annotation arms see.
        encoder: ResNet encoder when no backbone is given.
        seed: seed of data, sampling and initialisation (the same for every arm).
        variants: arms to run (default :func:`default_variants`).
        channels: ASPP and decoder channels.
        device: ``cpu`` or ``cuda`` (the bundle's ``device``).

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
    train_items = _split_items(data, "training")
    test_items = _split_items(data, "validation")
    class_names = _class_names(data)
    if backbone:
        encoder = backbone_encoder_name(backbone)
    rows: list[AblationRow] = []
    names: list[str] = class_names or []
    for variant in variants or default_variants(label_fraction):
        n_train = max(1, int(round(len(train_items) * variant.label_fraction)))
        subset = np.random.default_rng(seed).permutation(len(train_items))[:n_train]
        row = AblationRow(variant.name, variant.aspp, variant.init, variant.label_fraction, n_train, encoder, iterations)
        if variant.init == "dino" and not backbone:
            row.status = "not run"
            row.note = ("no DINO backbone given: train bundles/pathology_dino_pretraining (configs/train.json writes "
                        "models/backbone.pt) and pass --backbone PATH")
            rows.append(row)
            continue
        summary, seconds, row.iterations = train_and_score(
            variant, out / variant.name, data, subset.tolist(), class_names, encoder, backbone,
            iterations, channels=channels, patch_size=tile_size, seed=seed, device=str(device))
        names = summary["class_names"]
        row.mean_iou = None if summary["mean_iou"] is None else round(float(summary["mean_iou"]), 4)
        row.mean_dice = None if summary["mean_dice"] is None else round(float(summary["mean_dice"]), 4)
        row.per_class_iou = {n: (None if v["iou"] is None else round(float(v["iou"]), 4)) for n, v in summary["per_class"].items()}
        row.per_class_dice = {n: (None if v["dice"] is None else round(float(v["dice"]), 4)) for n, v in summary["per_class"].items()}
        row.train_seconds = round(seconds, 1)
        if variant.init == "dino":
            row.note = f"encoder from {backbone}"
        rows.append(row)
        logger.info("%s: mIoU %s", variant.name, row.mean_iou)
    _write_reports(out, rows, names, data, len(test_items))
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


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``python -m tools ablation-deeplab`` options."""
    parser.add_argument("--out", required=True, help="output folder for ablation.csv/json/md")
    parser.add_argument("--backbone", default=None, help="DINO backbone.pt (bundles/pathology_dino_pretraining/models)")
    parser.add_argument("--data", default=None, help="dataset folder; default: synthetic H&E tiles")
    parser.add_argument("--iterations", type=int, default=300, help="training iterations of batch 8 per arm")
    parser.add_argument("--label-fraction", type=float, default=0.25)
    parser.add_argument("--encoder", default="resnet10")
    parser.add_argument("--n-tiles", type=int, default=60)
    parser.add_argument("--tile-size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    return parser


def run_from_args(args: argparse.Namespace) -> None:
    """Run the ablation from parsed :func:`add_arguments` options and print ``ablation.md``."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_ablation(args.out, args.backbone, args.data, args.iterations, args.label_fraction, args.encoder,
                 args.n_tiles, args.tile_size, args.seed, channels=args.channels, device=args.device)
    print((Path(args.out) / "ablation.md").read_text())
