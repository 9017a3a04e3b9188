"""Quality on held-out synthetic data for every bundle, with the ablations (issue 11, item 5).

Opt-in (``make bench-quality`` / ``--quality``): it trains. Each bundle runs its ``make demo`` recipe
(``tools/recipes/<bundle>.yaml``: synthetic data, short training, inference, evaluation on
held-out cases) and the ablations come from the existing evaluation outputs and ablation engines:

- tumour pipeline, active contour on/off: ``evaluate.json`` scores the prediction before and after
  refinement (``*_no_ac`` columns); weak supervision on/off: stage 2 trained again with
  ``weak_supervision#weight 0`` (same data, budget and liver stage) and evaluated the same way;
- DeepLab, deformable vs standard ASPP and DINO vs random init:
  :func:`tools.ablation_deeplab.run_ablation` (the bundle's own train/evaluate configs, one copy per
  arm) with the DINO demo's ``backbone.pt``;
- steatosis, Mask R-CNN vs clump splitting: its ``evaluate.json`` (``network`` vs ``clump_splitting``);
- DINO: k-NN accuracy of the trained backbone vs the same architecture at random init (its evaluate);
- PathSegDiff: its own scenario, ``pathsegdiff_features`` (:mod:`tools.bench.pathsegdiff`:
  diffusion features vs a random extractor through the bundle's stages, seeds and bootstrap intervals).

Every row states its training budget.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

#: bundle -> (comparison, arm, metric path in the evaluation summary) rows taken from the demo's evaluation
DEMO_ROWS = {
    "liver_ct_unet_segmentation": [("liver", "bundle", "liver_dice")],
    "liver_tumor_ct_segresnetvae": [
        ("liver", "bundle", "liver_dice"),
        ("tumour, weak supervision on", "active contour on", "tumor_dice"),
        ("tumour, weak supervision on", "active contour off", "tumor_dice_no_ac"),
    ],
    "liver_pathology_deeplab_segmentation": [("tissue classes", "bundle", "mean_iou"),
                                             ("tissue classes", "bundle", "mean_dice")],
    "liver_steatosis_maskrcnn": [
        ("droplets", "Mask R-CNN", "network.F1"), ("droplets", "clump splitting", "clump_splitting.F1"),
        ("droplets", "Mask R-CNN", "network.AP50"), ("droplets", "clump splitting", "clump_splitting.AP50"),
        ("touching droplets", "Mask R-CNN", "network_touching.F1"),
        ("touching droplets", "clump splitting", "clump_splitting_touching.F1"),
    ],
    "pathology_dino_pretraining": [
        ("k-NN on frozen features", "DINO", "knn_accuracy"),
        ("k-NN on frozen features", "random init", "random_init.knn_accuracy"),
        ("k-NN on frozen features", "DINO", "knn_balanced_accuracy"),
        ("k-NN on frozen features", "random init", "random_init.knn_balanced_accuracy"),
    ],
    "pathology_pathsegdiff_segmentation": [("tissue classes", "bundle", "mean_iou"),
                                           ("tissue classes", "bundle", "mean_dice")],
}


def _get(summary: dict, path: str):
    value = summary.get("metrics", summary) if "metrics" in summary and "." not in path else summary
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if isinstance(value, dict) and "mean" in value:
        value = value["mean"]
    return float(value) if isinstance(value, int | float) else None


def demo_budget(demo: dict) -> str:
    """The training budget of a recipe's demo: its own ``budget`` line, else the training stages' overrides."""
    if demo.get("budget"):
        return demo["budget"]
    parts = []
    for stage in demo.get("stages", []):
        if any(Path(c).name.startswith("train") for c in stage["config"]):
            keys = {k: v for k, v in (stage.get("overrides") or {}).items()
                    if any(w in k for w in ("epoch", "batch", "learning_rate", "lr", "roi", "patch", "spacing",
                                            "crop", "arch", "encoder", "init_filters", "depth"))}
            parts.append(f"{stage['name']}: " + ", ".join(f"{k}={v}" for k, v in keys.items()))
    synth = demo.get("synth", {})
    data = f"synthetic {synth.get('kind')} n={synth.get('n')} {synth.get('options', {})}"
    return "; ".join(parts) + f"; data {data}; CPU"


def _weak_supervision_off(work: Path, demo: dict) -> list[dict]:
    """Stage 2 of the tumour bundle retrained without the clinical weak-supervision term, then evaluated."""
    from tools.runner import copy_bundle, run_stage

    bundle = "liver_tumor_ct_segresnetvae"
    base = work / bundle
    root = copy_bundle(bundle, base / "bundle_weak_off")
    shutil.copy(base / "bundle" / "models" / "model_liver.pt", root / "models" / "model_liver.pt")
    stages = {s["name"]: s for s in demo["stages"]}
    data = base / "data"
    out = base / "weak_off"
    train = dict(stages["train_tumor"])
    train["overrides"] = {**train["overrides"], "weak_supervision#weight": 0.0}
    run_stage(train, root, data, out, capture=True)
    run_stage(stages["evaluate"], root, data, out, capture=True)
    summary = json.loads((out / stages["evaluate"]["output_dir"] / "summary.json").read_text())
    budget = demo_budget(demo) + "; stage 2 retrained with weak_supervision#weight=0"
    rows = []
    for arm, metric in (("active contour on", "tumor_dice"), ("active contour off", "tumor_dice_no_ac")):
        rows.append({"bundle": bundle, "comparison": "tumour, weak supervision off", "arm": arm, "metric": metric,
                     "value": _get(summary, metric), "n_held_out": summary.get("n_cases"), "budget": budget})
    return rows


def scenario_quality(work: str | Path, bundles: list[str] | None = None, deeplab_iterations: int = 300) -> dict:
    from tools.demo import run_bundle_demo
    from tools.recipes import list_recipes, load_recipe

    work = Path(work) / "quality"
    work.mkdir(parents=True, exist_ok=True)
    rows, errors = [], []
    names = bundles or list_recipes()
    for bundle in names:
        demo = load_recipe(bundle).get("demo") or {}
        try:
            res = run_bundle_demo(bundle, work)
            summary_path = work / bundle / (demo.get("report") or {}).get("metrics", "eval/summary.json")
            summary = json.loads(summary_path.read_text())
        except Exception as err:
            errors.append({"bundle": bundle, "error": f"{type(err).__name__}: {str(err).splitlines()[0]}"})
            continue
        n = summary.get("n_cases", summary.get("n_query_patches"))
        budget = demo_budget(demo)
        for comparison, arm, metric in DEMO_ROWS.get(bundle, []):
            rows.append({"bundle": bundle, "comparison": comparison, "arm": arm, "metric": metric.split(".")[-1],
                         "value": _get(summary, metric), "n_held_out": n, "budget": budget})
        rows[-1]["stage_seconds"] = {k: round(v, 1) for k, v in res["timings"].items()}
        if bundle == "liver_tumor_ct_segresnetvae":
            try:
                rows += _weak_supervision_off(work, demo)
            except Exception as err:
                errors.append({"bundle": bundle, "ablation": "weak supervision",
                               "error": f"{type(err).__name__}: {str(err).splitlines()[0]}"})
    if "liver_pathology_deeplab_segmentation" in names:
        from tools.ablation_deeplab import run_ablation

        backbone = work / "pathology_dino_pretraining" / "bundle" / "models" / "backbone.pt"
        try:
            ablation = run_ablation(work / "ablation_deeplab", backbone=backbone if backbone.is_file() else None,
                                    iterations=deeplab_iterations)
            n_test = json.loads((work / "ablation_deeplab" / "ablation.json").read_text())["n_test_tiles"]
            for r in ablation:
                budget = (f"{r.iterations} iterations x batch 8 on {r.n_train_tiles} synthetic 64-px tiles, "
                          f"{r.encoder} encoder, 64 ASPP/decoder channels (tools/ablation_deeplab.py, the bundle's train.json)"
                          + ("; DINO backbone from the pathology_dino_pretraining demo" if r.init == "dino" else ""))
                rows.append({"bundle": "liver_pathology_deeplab_segmentation", "comparison": "ASPP / encoder init",
                             "arm": r.variant, "metric": "mean_iou", "value": r.mean_iou, "status": r.status, "n_held_out": n_test,
                             "note": r.note, "budget": budget})
        except Exception as err:
            errors.append({"bundle": "liver_pathology_deeplab_segmentation", "ablation": "ablation_deeplab",
                           "error": f"{type(err).__name__}: {str(err).splitlines()[0]}"})
    return {"rows": rows, "errors": errors, "data": "synthetic (python -m liverseg_monai synth), held-out cases"}
