"""PathSegDiff feature ablation through the bundle's own stages: the same head on latent-diffusion
features and on a randomly initialised extractor, equal labels, several seeds, bootstrap intervals.

For each seed, one copy of the bundle runs the demo recipe's ``train_autoencoder``, ``train_diffusion``,
``train`` and ``evaluate`` stages (``--seed S``); a second copy gets the seed's untrained autoencoder
and diffusion weights (``autoencoder.pt`` / ``diffusion.pt`` written from the config at that seed) and
runs the same ``train`` and ``evaluate`` stages. Both heads see the same labelled tiles (the demo's 24
training and 8 validation tiles) and are scored on the same ``n_test`` held-out tiles by the bundle's
``evaluate.json``. Per-tile mean IoU feeds :func:`liverseg_monai.metrics.bootstrap.bootstrap_ci`
(seeds and tiles resampled) and the paired difference :func:`paired_difference_ci`.

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


def feature_ablation(
    work: str | Path,
    seeds: Sequence[int] = (0, 1, 2),
    n_train: int = 24,
    n_val: int = 8,
    n_test: int = 100,
    size: int = 128,
    data_seed: int = 2,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the ablation; returns ``{"rows": [...], "per_seed": {...}, "budget": {...}}`` (see the module doc)."""
    from tools.runner import copy_bundle, run_stage

    work = Path(work)
    start = time.time()
    data = make_dataset(work / "data", n_train, n_val, n_test, size, data_seed)
    stages = _stages()
    scores: dict[str, list[np.ndarray]] = {"diffusion": [], "random_encoder": []}
    per_seed: dict[str, dict] = {}
    cases: list[str] | None = None
    for seed in seeds:
        t_seed = time.time()
        for arm in ("diffusion", "random_encoder"):
            arm_dir = work / f"seed{seed}" / arm
            root = copy_bundle(BUNDLE, arm_dir / "bundle")
            if arm == "diffusion":
                names = ("train_autoencoder", "train_diffusion", "train", "evaluate")
            else:
                model_keys = {k: v for k, v in stages["train"]["overrides"].items() if "#" not in k}
                write_initial_weights(root, model_keys, seed)
                names = ("train", "evaluate")
            for name in names:
                stage = seeded_stage(stages[name], seed)
                log(f"[pathsegdiff ablation] seed {seed} {arm}: {name}")
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
    rows = []
    for arm, table in scores.items():
        mean, ci = bootstrap_ci(np.stack(table))
        rows.append({"bundle": BUNDLE, "comparison": "head features", "arm": arm, "metric": "mean_iou (per tile)",
                     "mean": round(mean, 4), "ci95": [round(ci[0], 4), round(ci[1], 4)], "n_held_out": len(cases or []),
                     "seeds": list(seeds), "budget": budget})
    diff, ci = paired_difference_ci(np.stack(scores["diffusion"]), np.stack(scores["random_encoder"]))
    rows.append({"bundle": BUNDLE, "comparison": "head features", "arm": "diffusion - random_encoder",
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
