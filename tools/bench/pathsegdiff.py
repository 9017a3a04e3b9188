"""PathSegDiff feature ablation through the bundle's own stages: the same head on latent-diffusion
features, on the features of a DINO-pretrained encoder and on a randomly initialised extractor, equal
labels, several seeds, bootstrap intervals (issue 17 point 3: "PathSegDiff head on LDM features vs on
DINO features vs on a random encoder").

For each seed, one copy of the bundle runs the demo recipe's ``train_autoencoder``, ``train_diffusion``,
``train`` and ``evaluate`` stages (``--seed S``). A second copy gets the seed's untrained autoencoder
and diffusion weights (``autoencoder.pt`` / ``diffusion.pt`` written from the config at that seed) and
runs the same ``train`` and ``evaluate`` stages. For the third arm the DINO bundle
(``pathology_dino_pretraining``, its demo recipe, ResNet-18 like the bundle's tiny ``ssl_arch``)
pretrains on the same unlabelled tiles for as many image crops as the autoencoder and diffusion stages
saw together; a third copy of the PathSegDiff bundle replaces its ``extractor`` by
:class:`liverseg_monai.networks.pathsegdiff.SSLFeatureExtractor` on that backbone (``layer1`` and
``layer2``: strides 4 and 8, the resolutions of the diffusion features) and runs the same ``train`` and
``evaluate`` stages. Every head sees the same labelled tiles (the demo's 24 training and 8 validation
tiles) and is scored on the same ``n_test`` held-out tiles by the bundle's ``evaluate.json``. Per-tile
mean IoU feeds :func:`liverseg_monai.metrics.bootstrap.bootstrap_ci` (seeds and tiles resampled) and
the paired differences :func:`paired_difference_ci`.

``python -m tools bench --out bench --only pathsegdiff_features`` runs it.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from liverseg_monai.metrics.bootstrap import bootstrap_ci, paired_difference_ci, verdict
from tools.bench.claims import HELD_OUT_DATALIST

BUNDLE = "pathology_pathsegdiff_segmentation"


def _stages() -> dict[str, dict]:
    from tools.recipes import load_recipe

    return {s["name"]: s for s in load_recipe(BUNDLE)["demo"]["stages"]}


def make_dataset(out: Path, n_train: int, n_val: int, n_test: int, size: int, seed: int) -> Path:
    """Synthetic H&E tiles with a datalist of ``n_train`` training, ``n_val`` validation, ``n_test`` testing tiles."""
    from liverseg_monai.data.datalist import write_datalist
    from liverseg_monai.data.synth.histo import synth_histo

    synth_histo(out, seed=seed, n=n_train + n_val + n_test, size=size)
    items = json.loads((out / "dataset.json").read_text())
    tiles = sorted(items["training"] + items["validation"] + items["testing"], key=lambda it: it["image"])
    tiles = [{"image": it["image"], "label": it["label"]} for it in tiles]
    content = {"training": [{**it, "fold": i % 5} for i, it in enumerate(tiles[:n_train])],
               "validation": tiles[n_train : n_train + n_val], "testing": tiles[n_train + n_val :],
               "classes": items["classes"]}
    write_datalist(out, content)
    return out


def write_initial_weights(root: Path, overrides: dict, seed: int) -> None:
    """``models/autoencoder.pt`` and ``models/diffusion.pt`` of the untrained extractor at ``seed``."""
    from monai.bundle import ConfigParser
    from monai.utils import set_determinism

    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    for key, value in overrides.items():
        parser[key] = value
    set_determinism(seed=seed)
    extractor = parser.get_parsed_content("extractor")
    (root / "models").mkdir(exist_ok=True)
    torch.save(extractor.autoencoder.state_dict(), root / "models" / "autoencoder.pt")
    torch.save(extractor.diffusion.state_dict(), root / "models" / "diffusion.pt")


def seeded_stage(stage: dict, seed: int) -> dict:
    """A demo stage at ``seed``; the ``evaluate`` stage scores the held-out testing tiles, not the validation
    tiles that chose the checkpoint."""
    overrides = {**stage["overrides"], "seed": seed}
    if stage["name"] == "evaluate":
        overrides["datalist"] = HELD_OUT_DATALIST
    return {**stage, "overrides": overrides}


def per_tile_iou(eval_dir: Path) -> dict[str, float]:
    with open(eval_dir / "per_case.csv", newline="") as f:
        return {row["case"]: float(row["mean_iou"]) if row["mean_iou"] not in ("", "nan") else np.nan
                for row in csv.DictReader(f)}


#: the DINO-feature arm's extractor (a config override of ``extractor``): layer1 and layer2 of the DINO
#: ResNet (strides 4 and 8), the resolutions of the tiny recipe's diffusion features (strides 2 and 4) or
#: coarser, so the DINO arm is not given finer features than the diffusion arm
SSL_EXTRACTOR = {"_target_": "liverseg_monai.networks.pathsegdiff.SSLFeatureExtractor", "backbone": "@ssl_backbone",
                 "layers": ["layer1", "layer2"]}
ARMS = ("diffusion", "dino_encoder", "random_encoder")


def dino_pretrain_stage(seed: int, n_unlabelled: int) -> dict:
    """The DINO bundle's demo ``train`` stage on the ablation's unlabelled tiles (training + validation).

    Its epochs give DINO as many image crops as the autoencoder and diffusion stages saw together
    (``epochs * tiles * ssl#patches_per_tile`` each; DINO cuts ``patches_per_image`` per tile and epoch):
    equal unlabelled data and comparable steps, not a real pretraining.
    """
    from tools.recipes import load_recipe

    ours = _stages()
    crops = sum(ours[name]["overrides"][f"{key}#max_epochs"] * n_unlabelled * ours[name]["overrides"]["ssl#patches_per_tile"]
                for name, key in (("train_autoencoder", "autoencoder"), ("train_diffusion", "diffusion")))
    stage = {s["name"]: s for s in load_recipe("pathology_dino_pretraining")["demo"]["stages"]}["train"]
    per_epoch = n_unlabelled * stage["overrides"]["patches_per_image"]
    overrides = {**stage["overrides"], "datalist_keys": ["training", "validation"],
                 "max_epochs": max(1, round(crops / per_epoch)), "seed": seed}
    return {**stage, "name": "dino_pretrain", "output_dir": "pretrain", "overrides": overrides}


def dino_arm_stage(stage: dict, backbone: Path) -> dict:
    """A PathSegDiff ``train`` or ``evaluate`` stage on the DINO backbone's features instead of the diffusion
    model's: ``extractor`` replaced; training loads ``backbone`` into it (the trained ``model.pt`` then holds
    it, so evaluation needs only the extractor's shape)."""
    overrides = {**stage["overrides"], "extractor": SSL_EXTRACTOR}
    if stage["name"] == "train":
        overrides["ssl_backbone_file"] = str(backbone)
        overrides["initialize"] = ["$monai.utils.set_determinism(seed=@seed)",
                                   "$liverseg_monai.networks.weights.load_pretrained_encoder(@network_def, "
                                   "@ssl_backbone_file, prefix='extractor.features.')"]
    return {**stage, "overrides": overrides}


def feature_ablation(
    work: str | Path,
    seeds: Sequence[int] = (0, 1, 2),
    n_train: int = 24,
    n_val: int = 8,
    n_test: int = 100,
    size: int = 128,
    data_seed: int = 2,
    arms: Sequence[str] = ARMS,
    stage_overrides: dict | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the ablation; returns ``{"rows": [...], "per_seed": {...}, "budget": {...}}`` (see the module doc).

    ``arms``: a subset of :data:`ARMS` (``diffusion`` always runs: the differences are taken against it).
    ``stage_overrides``: stage name -> overrides added to every arm's stage of that name (tests shrink the
    budget with it; the benchmark passes none).
    """
    from tools.runner import copy_bundle, run_stage

    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise ValueError(f"unknown arms {unknown}; choose among {list(ARMS)}")
    arms = ["diffusion"] + [arm for arm in ARMS if arm in arms and arm != "diffusion"]
    extra = stage_overrides or {}

    def with_extra(stage: dict) -> dict:
        return {**stage, "overrides": {**stage["overrides"], **extra.get(stage["name"], {})}}

    work = Path(work)
    start = time.time()
    data = make_dataset(work / "data", n_train, n_val, n_test, size, data_seed)
    stages = _stages()
    scores: dict[str, list[np.ndarray]] = {arm: [] for arm in arms}
    per_seed: dict[str, dict] = {}
    cases: list[str] | None = None
    dino_epochs = None
    for seed in seeds:
        t_seed = time.time()
        for arm in arms:
            arm_dir = work / f"seed{seed}" / arm
            root = copy_bundle(BUNDLE, arm_dir / "bundle")
            if arm == "diffusion":
                run = [seeded_stage(stages[n], seed) for n in ("train_autoencoder", "train_diffusion", "train", "evaluate")]
            elif arm == "random_encoder":
                model_keys = {k: v for k, v in stages["train"]["overrides"].items() if "#" not in k}
                write_initial_weights(root, model_keys, seed)
                run = [seeded_stage(stages[n], seed) for n in ("train", "evaluate")]
            else:
                pretrain = with_extra(dino_pretrain_stage(seed, n_train + n_val))
                dino_epochs = pretrain["overrides"]["max_epochs"]
                dino_root = copy_bundle("pathology_dino_pretraining", arm_dir / "dino_bundle")
                log(f"[pathsegdiff ablation] seed {seed} {arm}: DINO pretraining ({dino_epochs} epochs)")
                run_stage(pretrain, dino_root, data, arm_dir)
                backbone = dino_root / "models" / "backbone.pt"
                if not backbone.is_file():
                    raise FileNotFoundError(f"{backbone}: the DINO stage did not write its backbone")
                run = [dino_arm_stage(seeded_stage(stages[n], seed), backbone) for n in ("train", "evaluate")]
            for stage in map(with_extra, run):
                log(f"[pathsegdiff ablation] seed {seed} {arm}: {stage['name']}")
                run_stage(stage, root, data, arm_dir)
            tiles = per_tile_iou(arm_dir / "eval")
            cases = cases or sorted(tiles)
            scores[arm].append(np.array([tiles[c] for c in cases]))
            summary = json.loads((arm_dir / "eval" / "summary.json").read_text())
            per_seed.setdefault(str(seed), {})[arm] = {k: summary.get(k) for k in ("mean_iou", "mean_dice", "pixel_accuracy")}
        per_seed[str(seed)]["seconds"] = round(time.time() - t_seed, 1)
    demo = stages["train"]["overrides"]
    budget = (f"demo recipe per seed: autoencoder {stages['train_autoencoder']['overrides']['autoencoder#max_epochs']} and "
              f"diffusion {stages['train_diffusion']['overrides']['diffusion#max_epochs']} epochs on {n_train + n_val} "
              f"unlabelled {size}-px tiles ({demo['patch_size'][0]}-px crops), head {demo['max_epochs']} epochs on "
              f"{n_train} labelled tiles; tiny networks (recipe overrides)")
    if dino_epochs is not None:
        budget += (f"; DINO arm: the DINO bundle's demo recipe (ResNet-18) for {dino_epochs} epochs on the same "
                   f"unlabelled tiles (as many crops as the two diffusion stages), the head on its layer1 + layer2")
    rows = []
    for arm, table in scores.items():
        mean, ci = bootstrap_ci(np.stack(table))
        rows.append({"bundle": BUNDLE, "comparison": "head features", "arm": arm, "metric": "mean_iou (per tile)",
                     "mean": round(mean, 4), "ci95": [round(ci[0], 4), round(ci[1], 4)], "n_held_out": len(cases or []),
                     "seeds": list(seeds), "budget": budget})
    for other in arms[1:]:
        diff, ci = paired_difference_ci(np.stack(scores["diffusion"]), np.stack(scores[other]))
        rows.append({"bundle": BUNDLE, "comparison": "head features", "arm": f"diffusion - {other}",
                     "metric": "mean_iou (per tile), paired difference", "mean": round(diff, 4),
                     "ci95": [round(ci[0], 4), round(ci[1], 4)], "verdict": verdict(ci), "n_held_out": len(cases or []),
                     "seeds": list(seeds), "budget": budget})
    result = {"rows": rows, "per_seed": per_seed, "budget": budget, "seconds": round(time.time() - start, 1),
              "threads": torch.get_num_threads()}
    (work / "ablation.json").write_text(json.dumps(result, indent=1))
    return result


def scenario_pathsegdiff_features(work: Path, **kwargs) -> dict:
    """The bench scenario ``pathsegdiff_features`` (keyword arguments of :func:`feature_ablation`)."""
    return feature_ablation(Path(work) / "pathsegdiff_features", log=lambda msg: print(msg, flush=True), **kwargs)
