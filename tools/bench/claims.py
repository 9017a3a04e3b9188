"""The papers' claims tested through the bundles (issue 17, points 2-3): seeds, held-out cases, intervals.

A claim compares two arms of one bundle on held-out synthetic data built from the real features
(``realism="full"`` generators). Its protocol, the same for every claim:

1. One dataset per claim, generated once from a fixed data seed, re-split into ``n_train`` training,
   ``n_val`` validation (checkpoint selection) and ``n_test`` **held-out** cases (``testing``, with
   labels); the held-out cases are never seen by training or model selection.
2. For each training seed, every *run* of the claim copies the bundle (:func:`tools.runner.copy_bundle`)
   and runs its recipe stages (``tools/recipes/<bundle>.yaml``, ``demo`` section: the stated budget)
   with the claim's overrides and ``seed``; the ``evaluate`` stage scores the held-out split (its
   ``datalist`` is pointed at ``testing``) and writes ``per_case.csv``. A run may start from another
   run's trained models (``after``), so stages both arms share are trained once per seed.
3. An *arm* is a column of a run's ``per_case.csv`` (one evaluation can score two arms: Mask R-CNN and
   clump splitting, or the prediction before and after the active contour). Per arm and metric the
   ``[seeds, cases]`` table gives the mean and the two-way bootstrap ci95
   (:func:`liverseg_monai.metrics.bootstrap.bootstrap_ci`); the claim's effect is the paired difference
   (same seed, same case) with its ci95 and a verdict (``shown``, ``not shown``, ``reversed``).

``python -m tools bench --out bench --only claim:NAME`` (or ``make bench-quality ONLY=claim:NAME``)
runs one claim; the rows go to ``bench/results.json`` under the machine's key and
:func:`write_claims_markdown` rewrites ``docs/claims.md`` from every recorded claim, listing the claims
that have not been run as such. ``preset="cpu"`` is the 2-core budget (a claim within about 20 minutes);
``preset="gpu"`` adds :attr:`Claim.gpu` (longer training, larger inputs) and is recorded under the GPU's
machine key, so its rows sit apart from the CPU rows.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from liverseg_monai.metrics.bootstrap import bootstrap_ci, paired_difference_ci, verdict

HELD_OUT_DATALIST = "$liverseg_monai.data.load_datalist(@dataset_dir, 'testing', require=('image', 'label'))"


@dataclass
class Run:
    """One trained variant of the bundle per seed.

    Attributes:
        overrides: stage name -> overrides added to the recipe stage's own (``"*"``: every stage).
        after: the run whose bundle copy (trained models included) this run starts from; its
            ``stages`` are then only the ones that differ (for example stage 2 alone).
        stages: recipe stage names to run, default the claim's.
    """

    overrides: Mapping[str, Mapping] = field(default_factory=dict)
    after: str | None = None
    stages: Sequence[str] | None = None


#: an override value replaced by the path of the claim's pretrained weights (:class:`Pretrain`)
PRETRAINED = "<pretrained weights>"


@dataclass
class Pretrain:
    """A self-supervised stage of another bundle, run once per claim data and bench command, whose weights
    file the claim's runs take through the :data:`PRETRAINED` override value.

    Attributes:
        bundle: the bundle that pretrains (its recipe's ``demo`` stage ``stage``).
        weights: the file it writes, relative to its bundle copy.
        overrides: added to the recipe stage's overrides.
        seed: its training seed (one pretraining is shared by every training seed of the claim).
    """

    bundle: str
    stage: str = "train"
    weights: str = "models/backbone.pt"
    overrides: Mapping = field(default_factory=dict)
    seed: int = 0


@dataclass
class Claim:
    """A paper's claim as a comparison of two arms of one bundle (see the module docstring)."""

    bundle: str
    claim: str  # the paper's statement, in a sentence
    data: Mapping  # ``synthesize`` spec: kind, seed, options, prepare
    split: tuple[int, int, int]  # n_train, n_val, n_test (held out)
    runs: Mapping[str, Run]
    arms: Mapping[str, tuple[str, str]]  # arm -> (run, per_case.csv column template with ``{metric}``)
    metrics: Sequence[str]
    effect: tuple[str, str] | None  # (arm, baseline arm): the claim is "arm - baseline > 0"; None: arms only
    stages: Sequence[str] = ("train", "evaluate")
    seeds: Sequence[int] = (0, 1, 2)
    lower_is_better: Sequence[str] = ()  # metrics that are errors: their effect is baseline - arm
    gpu: Mapping[str, Mapping] = field(default_factory=dict)  # stage -> extra overrides of the GPU preset
    tried: str = ""  # what was tried where the effect is not shown (written to docs/claims.md)
    diagnostics: Sequence[str] = ()  # more per-case columns (arm templates) averaged per arm, to explain a result
    pretrain: Pretrain | None = None  # a self-supervised stage some runs start from (``PRETRAINED``)


_CPU_ONLY = ("Only the CPU preset (the demo recipe's budget) was run, with the bundle's default hyper-parameters; "
             "nothing was tuned after seeing a result; the GPU preset waits for a lent GPU. ")
_TUMOUR_DIAGNOSIS = ("Diagnosis: at this budget the tumour stage finds little of the lesions (see the diagnostics of "
                     "the two-stage claim: predicted vs reference tumour volume, recall), so the tumour comparisons "
                     "are between models that barely work.")
_HCC_DATA = {"kind": "hcc", "seed": 17, "options": {"size": [64, 64, 32], "extra_series": False, "realism": "full"},
             "prepare": {"kind": "hcc-tace"}}
_TUMOUR_GPU = {"*": {"spacing": [1.5, 1.5, 2.0], "liver#roi_size": [96, 96, 64], "tumor#roi_size": [64, 64, 64],
                     "init_filters": 16},
               "train_liver": {"max_epochs": 200}, "train_tumor": {"max_epochs": 200}}
#: what the three tumour claims share: data, split, stages, what was tried, the GPU preset
_TUMOUR_PROTOCOL = {"data": _HCC_DATA, "split": (16, 4, 20), "stages": ("train_liver", "train_tumor", "evaluate"),
                    "tried": _CPU_ONLY + _TUMOUR_DIAGNOSIS, "gpu": _TUMOUR_GPU}
#: the tumour pipeline as the bundle ships it, scored on the held-out cases (three claims share this run)
_CASCADE = Run(overrides={"evaluate": {"datalist": HELD_OUT_DATALIST}})

_HISTO_DATA = {"kind": "histo", "seed": 17, "options": {"size": 128, "realism": "full"}}
_HISTO_SPLIT = (48, 12, 100)
#: DINO on the claim's unlabelled training and validation tiles (never the held-out ones), ResNet-18 as in the
#: DINO demo, for 40 epochs: about the demo's 525 optimisation steps (its 400 tiles x 7 patches, 6 epochs,
#: batch 32) on these 60 tiles x 7 patches
_DINO_PRETRAIN = Pretrain(bundle="pathology_dino_pretraining", overrides={"datalist_keys": ["training", "validation"],
                                                                          "max_epochs": 40})


def _dino_claim(fraction: float) -> Claim:
    """DINO vs random encoder initialisation of the DeepLab bundle with ``fraction`` of the labelled tiles.

    Both arms: ResNet-18 encoder (the DINO backbone's architecture), the first ``fraction`` of the
    training tiles (tiles are drawn independently and consecutive ones rotate through the staining
    sites, so the first ``n`` are a sample of every site), and about as many optimisation steps as the
    full-label recipe: the ``n`` tiles are listed ``round(48 / n)`` times in the training datalist and
    trained for the recipe's 24 epochs (compute is held equal, only the initialisation and the labels
    differ; repeating the list rather than running ``48 / n`` times as many epochs keeps the per-epoch
    cost of loader start-up and validation that of the recipe: with 230 epochs of 5 tiles a run took
    over 35 minutes on 2 cores, almost all of it starting epochs); checkpoint chosen on the validation
    tiles, scored on the held-out ones.
    """
    n = max(1, round(_HISTO_SPLIT[0] * fraction))
    repeats = max(1, round(_HISTO_SPLIT[0] / n))
    subset = (f"$liverseg_monai.data.load_datalist(@dataset_dir, 'training', fold=@fold, require=('image', 'label'))"
              f"[:{n}] * {repeats}")
    train = {"train#dataset#data": subset, "max_epochs": 24}
    held_out = {"datalist": HELD_OUT_DATALIST}
    return Claim(
        bundle="liver_pathology_deeplab_segmentation",
        claim=f"an encoder pretrained with DINO on unlabelled liver H&E beats random initialisation when "
              f"{fraction:.0%} of the labelled tiles ({n} of {_HISTO_SPLIT[0]}) are used",
        data=_HISTO_DATA, split=_HISTO_SPLIT, pretrain=_DINO_PRETRAIN,
        runs={"random": Run(overrides={"*": {"encoder": "resnet18"}, "train": train, "evaluate": held_out}),
              "dino": Run(overrides={"*": {"encoder": "resnet18"}, "train": {**train, "pretrained_weights": PRETRAINED},
                                     "evaluate": held_out})},
        arms={"DINO init": ("dino", "{metric}"), "random init": ("random", "{metric}")},
        metrics=("mean_iou", "mean_dice"),
        effect=("DINO init", "random init"),
        gpu={"*": {"encoder": "resnet50", "aspp_channels": 256, "decoder_channels": 256, "patch_size": [128, 128]}},
        tried=_CPU_ONLY + "Diagnosis: the DINO backbone comes from 40 epochs of DINO on the claim's 60 unlabelled "
              "tiles (about the DINO demo's 525 steps, ResNet-18), orders of magnitude shorter than a real "
              "pretraining; at such budgets the DINO bundle's own k-NN evaluation does not beat a random encoder "
              "either (its model card), so this compares a barely pretrained encoder with a random one.",
    )


#: the claims of issue 17 point 3 that run through this protocol (the PathSegDiff feature claim is the
#: scenario ``pathsegdiff_features``)
CLAIMS: dict[str, Claim] = {
    "maskrcnn_vs_clump_splitting": Claim(
        bundle="liver_steatosis_maskrcnn",
        claim="Mask R-CNN separates overlapping fat droplets better than the clump-splitting segmentation its "
              "labels were bootstrapped from (arXiv:1911.07088)",
        data={"kind": "steatosis", "seed": 17, "options": {"size": 128, "density": 2.0, "realism": "full"}},
        split=(40, 8, 100),
        runs={"maskrcnn": Run(overrides={"evaluate": {"datalist": HELD_OUT_DATALIST}})},
        arms={"Mask R-CNN": ("maskrcnn", "network_{metric}"),
              "clump splitting": ("maskrcnn", "clump_splitting_{metric}")},
        metrics=("AP50", "F1", "jaccard", "touching_AP50", "touching_F1", "area_pct_error"),
        effect=("Mask R-CNN", "clump splitting"),
        lower_is_better=("area_pct_error",),
        tried=_CPU_ONLY + "Touching droplets are where the network is no better than clump splitting at this budget "
              "(28 epochs, ResNet-18 FPN).",
        gpu={"train": {"max_epochs": 120, "depth": 50, "fpn_channels": 256, "representation_size": 1024,
                       "mask_head_channels": [256, 256, 256, 256]},
             "evaluate": {"depth": 50, "fpn_channels": 256, "representation_size": 1024,
                          "mask_head_channels": [256, 256, 256, 256]}},
    ),
    "liver_ct_quality": Claim(
        bundle="liver_ct_unet_segmentation",
        claim="the 2D U-Net segments the liver of unseen portal-venous CT volumes (quality floor, no comparison)",
        data={"kind": "lits", "seed": 17, "options": {"size": [96, 96, 40], "realism": "full"}},
        split=(12, 4, 20),
        runs={"unet": Run(overrides={"evaluate": {"datalist": HELD_OUT_DATALIST}})},
        arms={"liver bundle": ("unet", "liver_{metric}")},
        metrics=("dice",),
        effect=None,
        gpu={"*": {"spatial_size": [256, 256]}, "train": {"max_epochs": 200}},
    ),
    "tumour_active_contour": Claim(
        bundle="liver_tumor_ct_segresnetvae",
        claim="morphological active-contour refinement improves the tumour segmentation of the local "
              "SegResNetVAE (HCC-TACE-Seg paper)",
        **_TUMOUR_PROTOCOL,
        runs={"cascade": _CASCADE},
        arms={"active contour on": ("cascade", "tumor_{metric}"), "active contour off": ("cascade", "tumor_{metric}_no_ac")},
        # case Dice, then lesion-wise Dice by reference-lesion diameter (liverseg_monai.metrics.lesions, LiTS bins)
        metrics=("dice", "lesion_dice_lt10mm", "lesion_dice_10to20mm", "lesion_dice_ge20mm"),
        diagnostics=("volume_ml", "ref_volume_ml", "precision", "recall", "lesions_lt10mm", "lesions_10to20mm",
                     "lesions_ge20mm"),
        effect=("active contour on", "active contour off"),
    ),
    "tumour_weak_supervision": Claim(
        bundle="liver_tumor_ct_segresnetvae",
        claim="weak supervision from the population-level tumour-severity indicator improves the local "
              "tumour model (HCC-TACE-Seg paper)",
        **_TUMOUR_PROTOCOL,
        runs={"on": _CASCADE,
              "off": Run(after="on", stages=("train_tumor", "evaluate"),
                         overrides={"train_tumor": {"weak_supervision#weight": 0.0},
                                    "evaluate": {"datalist": HELD_OUT_DATALIST}})},
        arms={"weak supervision on": ("on", "tumor_{metric}"), "weak supervision off": ("off", "tumor_{metric}")},
        metrics=("dice",),
        diagnostics=("volume_ml", "ref_volume_ml", "precision", "recall"),
        effect=("weak supervision on", "weak supervision off"),
    ),
    "two_stage_vs_one_network": Claim(
        bundle="liver_tumor_ct_segresnetvae",
        claim="the global liver stage followed by the local tumour stage segments tumours better than one "
              "multi-class network on the same volumes (the HCC-TACE-Seg paper's central argument)",
        **_TUMOUR_PROTOCOL,
        runs={"cascade": _CASCADE,
              # the liver stage's network and trainer with three classes, for both stages' epochs together
              "one_network": Run(stages=("train_liver", "evaluate"),
                                 overrides={"*": {"+configs": ["baseline_one_network.json"]},
                                            "train_liver": {"max_epochs": 40},
                                            "evaluate": {"datalist": HELD_OUT_DATALIST}})},
        arms={"two-stage": ("cascade", "{metric}_no_ac"), "one network": ("one_network", "{metric}_no_ac")},
        metrics=("tumor_dice", "liver_dice"),
        diagnostics=("tumor_volume_ml", "tumor_ref_volume_ml", "tumor_precision", "tumor_recall"),
        effect=("two-stage", "one network"),
    ),
    "deeplab_deformable_aspp": Claim(
        bundle="liver_pathology_deeplab_segmentation",
        claim="deformable convolutions inside ASPP improve DeepLabV3+ on liver H&E tissue classes",
        data=_HISTO_DATA,
        split=_HISTO_SPLIT,
        runs={"deformable": Run(overrides={"evaluate": {"datalist": HELD_OUT_DATALIST}}),
              "standard": Run(overrides={"*": {"+configs": ["baseline_deeplab_aspp.json"]},
                                         "evaluate": {"datalist": HELD_OUT_DATALIST}})},
        arms={"deformable ASPP": ("deformable", "{metric}"), "standard ASPP": ("standard", "{metric}")},
        metrics=("mean_iou", "mean_dice"),
        effect=("deformable ASPP", "standard ASPP"),
        tried=_CPU_ONLY + "At this budget (ResNet-10, 64 channels, 24 epochs) both arms stay far below the mIoU floor, "
              "so the comparison is between under-trained networks.",
        gpu={"*": {"encoder": "resnet50", "aspp_channels": 256, "decoder_channels": 256, "patch_size": [128, 128]},
             "train": {"max_epochs": 200}},
    ),
    "dino_init_10pct_labels": _dino_claim(0.10),
    "dino_init_25pct_labels": _dino_claim(0.25),
    "dino_init_100pct_labels": _dino_claim(1.0),
}


# ---------------------------------------------------------------------------------------------- data


def resplit(dataset_dir: str | Path, n_train: int, n_val: int, n_test: int) -> dict:
    """Re-split a generated dataset's labelled cases into training / validation / testing (held out).

    Every item of every section is pooled (one per image; an item without a label takes the label of
    another section's item of the same image), sorted by image and split in that order; training items
    keep five folds. Raises ``ValueError`` when there are fewer labelled cases than asked for.
    """
    from liverseg_monai.data.datalist import write_datalist

    root = Path(dataset_dir)
    content = json.loads((root / "dataset.json").read_text())
    pooled: dict[str, dict] = {}
    for section in ("training", "validation", "testing"):
        for item in content.get(section, []):
            item = {"image": item} if isinstance(item, str) else dict(item)
            item.pop("fold", None)
            known = pooled.setdefault(item["image"], {})
            known.update({k: v for k, v in item.items() if v is not None and k not in known})
    items = sorted((it for it in pooled.values() if it.get("label")), key=lambda it: it["image"])
    need = n_train + n_val + n_test
    if len(items) < need:
        raise ValueError(f"{root / 'dataset.json'}: {len(items)} labelled cases, the split needs {need}")
    content["training"] = [{**it, "fold": i % 5} for i, it in enumerate(items[:n_train])]
    content["validation"] = items[n_train : n_train + n_val]
    content["testing"] = items[n_train + n_val : need]
    write_datalist(root, content)
    return content


def claim_data(claim: Claim, work: str | Path) -> Path:
    """The claim's dataset under ``work/data/<key of data spec and split>`` (claims on the same data share it)."""
    data_key = hashlib.sha1(json.dumps([claim.data, list(claim.split)], sort_keys=True).encode()).hexdigest()[:10]
    return make_claim_data(claim, Path(work) / "data" / data_key)


def make_claim_data(claim: Claim, out: Path) -> Path:
    """Generate the claim's dataset once (``n = sum(split)`` cases) and re-split it (:func:`resplit`)."""
    from tools.recipes import synthesize

    done = out / ".complete"
    if done.is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.parent / f"{out.name}_raw", ignore_errors=True)
    synthesize({**claim.data, "n": sum(claim.split)}, out)
    resplit(out, *claim.split)
    done.write_text("ok\n")
    return out


# ------------------------------------------------------------------------------------------ running


def _stage(recipe_stages: Mapping[str, dict], name: str, run: Run, extra: Mapping[str, Mapping], seed: int,
           pretrained: Path | None = None) -> dict:
    stage = dict(recipe_stages[name])
    overrides = dict(stage.get("overrides") or {})
    for source in (run.overrides.get("*", {}), run.overrides.get(name, {}), extra.get("*", {}), extra.get(name, {})):
        overrides.update(source)
    for key, value in overrides.items():
        if value == PRETRAINED:
            if pretrained is None:
                raise ValueError(f"stage {name}: {key} asks for pretrained weights but the claim has no pretrain")
            overrides[key] = str(pretrained)
    configs = list(stage["config"]) if isinstance(stage["config"], list | tuple) else [stage["config"]]
    configs += list(overrides.pop("+configs", []))
    return {**stage, "config": configs, "overrides": {**overrides, "seed": seed}}


#: ``run_bench`` sets this once per bench command: runs with the same key trained earlier in the same
#: command (two claims sharing a run, such as the tumour pipeline with weak supervision and its active
#: contour) are reused; a later command always trains again, so code changes are never hidden by a cache
SESSION_ENV = "LIVERSEG_BENCH_SESSION"


def pretrain_weights(claim: Claim, data: Path, data_key: str, runs_dir: Path, session: str,
                     log: Callable[[str], None] = print) -> Path:
    """Run the claim's :class:`Pretrain` stage on the claim data (once per bench command) and return its weights."""
    from tools.recipes import load_recipe
    from tools.runner import copy_bundle, run_stage

    pre = claim.pretrain
    spec = [pre.bundle, data_key, pre.stage, dict(pre.overrides), pre.seed]
    run_dir = runs_dir / f"{pre.bundle}-{hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]}"
    weights = run_dir / "bundle" / pre.weights
    done = run_dir / ".complete"
    if session and done.is_file() and done.read_text() == session and weights.is_file():
        log(f"[pretrain {pre.bundle}] trained earlier in this bench run, reused")
        return weights
    shutil.rmtree(run_dir, ignore_errors=True)
    root = copy_bundle(pre.bundle, run_dir / "bundle")
    stage = {s["name"]: s for s in load_recipe(pre.bundle)["demo"]["stages"]}[pre.stage]
    stage = {**stage, "overrides": {**(stage.get("overrides") or {}), **pre.overrides, "seed": pre.seed}}
    log(f"[pretrain {pre.bundle}] {pre.stage}")
    run_stage(stage, root, data, run_dir)
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: the {pre.bundle} stage {pre.stage} did not write its weights")
    done.write_text(session)
    return weights


def run_key(claim: Claim, run_name: str, data_key: str, extra: Mapping) -> str:
    """What makes a run's trained models and evaluation: bundle, data, stages, overrides, the run it starts from."""
    run = claim.runs[run_name]
    parent = run_key(claim, run.after, data_key, extra) if run.after else None
    spec = [claim.bundle, data_key, list(run.stages or claim.stages), run.overrides, dict(extra), parent]
    return hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]


def read_per_case(path: Path) -> dict[str, dict[str, float]]:
    """``per_case.csv`` as ``{case: {column: value}}`` (empty or non-numeric cells become NaN)."""
    def number(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            return float("nan")

    with open(path, newline="") as f:
        return {row["case"]: {k: number(v) for k, v in row.items() if k != "case"} for row in csv.DictReader(f)}


def claim_rows(claim_name: str, claim: Claim, tables: Mapping[str, Sequence[Mapping[str, Mapping[str, float]]]],
               budget: str, n_boot: int = 2000) -> list[dict]:
    """Rows of ``bench/results.json`` from the per-case tables: ``tables[run][seed_index][case][column]``."""
    first = next(iter(tables.values()))
    cases = sorted(first[0])
    seeds = list(claim.seeds)[: len(first)]
    rows = []
    for metric in claim.metrics:
        scores = {}
        for arm, (run, template) in claim.arms.items():
            column = template.format(metric=metric)
            if not any(column in case for per_seed in tables[run] for case in per_seed.values()):
                raise KeyError(f"claim {claim_name}: column {column!r} missing from run {run!r}'s per_case.csv")
            scores[arm] = np.array([[per_seed[c].get(column, np.nan) for c in cases] for per_seed in tables[run]])
        if all(np.all(np.isnan(v)) for v in scores.values()):  # e.g. a lesion-size bin no held-out case has
            rows.append({"claim": claim_name, "bundle": claim.bundle, "comparison": claim_name, "arm": " / ".join(scores),
                         "metric": metric, "mean": None, "value": None, "ci95": None, "n_held_out": len(cases),
                         "seeds": seeds, "budget": budget, "verdict": "undefined: no held-out case has a value"})
            continue
        for arm in claim.arms:
            with warnings.catch_warnings():  # a case without touching droplets has no touching score (NaN)
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, ci = bootstrap_ci(scores[arm], n_boot=n_boot)
            rows.append({"claim": claim_name, "bundle": claim.bundle, "comparison": claim_name, "arm": arm,
                         "metric": metric, "mean": round(mean, 4), "value": round(mean, 4),
                         "ci95": [round(ci[0], 4), round(ci[1], 4)], "n_held_out": len(cases), "seeds": seeds,
                         "budget": budget,
                         # per held-out case, one value per seed: what a peer is paired with (tools.bench.peer)
                         "per_case": {c: [None if np.isnan(v) else round(float(v), 4) for v in scores[arm][:, j]]
                                      for j, c in enumerate(cases)}})
        if claim.effect is None:
            continue
        arm, base = claim.effect
        lower = metric in claim.lower_is_better
        a, b = (scores[base], scores[arm]) if lower else (scores[arm], scores[base])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            diff, ci = paired_difference_ci(a, b, n_boot=n_boot)
        rows.append({"claim": claim_name, "bundle": claim.bundle, "comparison": claim_name,
                     "arm": f"{base} - {arm}" if lower else f"{arm} - {base}",
                     "metric": f"{metric}, paired difference" + (" (lower is better)" if lower else ""), "mean": round(diff, 4),
                     "value": round(diff, 4), "ci95": [round(ci[0], 4), round(ci[1], 4)], "verdict": verdict(ci),
                     "n_held_out": len(cases), "seeds": seeds, "budget": budget, "claim_text": claim.claim})
    return rows


def claim_diagnostics(claim: Claim, tables: Mapping[str, Sequence[Mapping[str, Mapping[str, float]]]]) -> dict:
    """``{arm: {column: mean over seeds and held-out cases}}`` of the claim's diagnostic columns (those present)."""
    out: dict[str, dict[str, float]] = {}
    for arm, (run, template) in claim.arms.items():
        for metric in claim.diagnostics:
            column = template.format(metric=metric)
            values = [case.get(column, np.nan) for per_seed in tables[run] for case in per_seed.values()]
            if values and not np.all(np.isnan(values)):
                out.setdefault(arm, {})[column] = round(float(np.nanmean(values)), 4)
    return out


def stages_budget(stages: Sequence[Mapping], synth: Mapping) -> str:
    """The training budget of recipe stages in words: the training stages' overrides that set it and the data."""
    parts = []
    for stage in stages:
        if any(Path(c).name.startswith("train") for c in stage["config"]):
            keys = {k: v for k, v in (stage.get("overrides") or {}).items()
                    if any(w in k for w in ("epoch", "batch", "learning_rate", "lr", "roi", "patch", "spacing",
                                            "crop", "arch", "encoder", "init_filters", "depth"))}
            parts.append(f"{stage['name']}: " + ", ".join(f"{k}={v}" for k, v in keys.items()))
    data = f"synthetic {synth.get('kind')} n={synth.get('n')} {synth.get('options', {})}"
    return "; ".join(parts) + f"; data {data}; CPU"


def claim_budget(claim: Claim, recipe_stages: Mapping[str, dict], preset: str) -> str:
    """The training budget in words: the recipe's training overrides, the split and the preset."""
    train = [s for s in claim.stages if s.startswith("train")]
    text = stages_budget([recipe_stages[s] for s in train], {**claim.data, "n": sum(claim.split)})
    for run_name, run in claim.runs.items():  # what a run changes in training (epochs, label subset, configs)
        changed = {k: v for stage in ("*", *train) for k, v in run.overrides.get(stage, {}).items()}
        if changed:
            text += f"; run {run_name}: " + ", ".join(f"{k}={v}" for k, v in changed.items())
    if claim.pretrain:
        pre = claim.pretrain
        text += (f"; pretraining: {pre.bundle} recipe stage {pre.stage} with {json.dumps(dict(pre.overrides))}, seed "
                 f"{pre.seed}, one pretraining shared by every training seed")
    if preset == "gpu" and claim.gpu:
        text += f"; GPU preset overrides {json.dumps(claim.gpu)}"
    n_train, n_val, n_test = claim.split
    return f"{text}; split {n_train} train / {n_val} validation / {n_test} held out; preset {preset}"


def run_claim(name: str, work: str | Path, preset: str = "cpu", seeds: Sequence[int] | None = None,
              split: Sequence[int] | None = None, log: Callable[[str], None] = print) -> dict:
    """Run claim ``name`` (:data:`CLAIMS`) and return ``{"rows": ..., "per_seed": ..., "budget": ...}``.

    ``seeds`` and ``split`` replace the claim's (a quick check of the plumbing; the protocol's numbers
    are the claim's own).
    """
    from tools.recipes import load_recipe
    from tools.runner import copy_bundle, run_stage

    claim = CLAIMS[name]
    if seeds is not None or split is not None:
        claim = Claim(**{**claim.__dict__, "seeds": tuple(seeds or claim.seeds), "split": tuple(split or claim.split)})
    if preset not in ("cpu", "gpu"):
        raise ValueError(f"preset must be 'cpu' or 'gpu', got {preset!r}")
    extra = claim.gpu if preset == "gpu" else {}
    data_key = hashlib.sha1(json.dumps([claim.data, list(claim.split)], sort_keys=True).encode()).hexdigest()[:10]
    work = Path(work)
    start = time.time()
    data = claim_data(claim, work)
    work.mkdir(parents=True, exist_ok=True)
    work = work / name
    log(f"[claim {name}] data ready ({sum(claim.split)} cases, {time.time() - start:.0f} s)")
    recipe_stages = {s["name"]: s for s in load_recipe(claim.bundle)["demo"]["stages"]}
    tables: dict[str, list] = {run: [] for run in claim.runs}
    per_seed: dict[str, dict] = {}
    session = os.environ.get(SESSION_ENV, "")
    run_dirs = {run_name: work.parent / "runs" / f"{claim.bundle}-{run_key(claim, run_name, data_key, extra)}"
                for run_name in claim.runs}
    pretrained = pretrain_weights(claim, data, data_key, work.parent / "runs", session, log) if claim.pretrain else None
    for seed in claim.seeds:
        t_seed, train_s = time.time(), 0.0
        for run_name, run in claim.runs.items():
            run_dir = run_dirs[run_name] / f"seed{seed}"
            done = run_dir / ".complete"
            if session and done.is_file() and done.read_text() == session:
                log(f"[claim {name}] seed {seed} {run_name}: trained earlier in this bench run, reused")
            else:
                shutil.rmtree(run_dir, ignore_errors=True)
                if run.after:
                    # trained weights come along; training-state checkpoints do not (a stage that finds one
                    # resumes from it, so the stage would not train again)
                    shutil.copytree(run_dirs[run.after] / f"seed{seed}" / "bundle", run_dir / "bundle",
                                    ignore=shutil.ignore_patterns("*checkpoint_epoch=*"))
                    root = run_dir / "bundle"
                else:
                    root = copy_bundle(claim.bundle, run_dir / "bundle")
                for stage_name in run.stages or claim.stages:
                    stage = _stage(recipe_stages, stage_name, run, extra, seed, pretrained)
                    log(f"[claim {name}] seed {seed} {run_name}: {stage_name}")
                    t_stage = time.time()
                    run_stage(stage, root, data, run_dir)
                    if stage_name.startswith("train"):
                        train_s += time.time() - t_stage
                done.write_text(session)
            eval_dir = run_dir / recipe_stages["evaluate"].get("output_dir", "evaluate")
            tables[run_name].append(read_per_case(eval_dir / "per_case.csv"))
        # train_seconds: the training stages run by this command (a peer's equal wall-clock budget)
        per_seed[str(seed)] = {"seconds": round(time.time() - t_seed, 1), "train_seconds": round(train_s, 1)}
    budget = claim_budget(claim, recipe_stages, preset)
    rows = claim_rows(name, claim, tables, budget)
    result = {"rows": rows, "per_seed": per_seed, "budget": budget, "claim": claim.claim, "preset": preset,
              "diagnostics": claim_diagnostics(claim, tables), "seconds": round(time.time() - start, 1)}
    work.mkdir(parents=True, exist_ok=True)
    (work / "claim.json").write_text(json.dumps(result, indent=1))
    return result


def scenario_claim(work: Path, name: str, **kwargs) -> dict:
    """The bench scenario ``claim:NAME`` (keyword arguments of :func:`run_claim`)."""
    return run_claim(name, Path(work) / "claims", log=lambda msg: print(msg, flush=True), **kwargs)


# ------------------------------------------------------------------------------------------- report

#: every claim of issue 17 point 3 -> where it is measured (scenario names in bench/results.json)
CLAIM_INDEX = {
    "deformable vs standard ASPP (DeepLabV3+, H&E)": ["claim:deeplab_deformable_aspp"],
    "DINO vs random encoder initialisation at 10, 25 and 100 % of the labels (DeepLabV3+, H&E)": [
        "claim:dino_init_10pct_labels", "claim:dino_init_25pct_labels", "claim:dino_init_100pct_labels"],
    "two-stage global-local pipeline vs one multi-class network (tumour paper)": ["claim:two_stage_vs_one_network"],
    "clinical weak supervision on vs off (tumour stage)": ["claim:tumour_weak_supervision"],
    "active contour on vs off, by lesion size (case Dice, then lesion-wise Dice of reference lesions under 10 mm, "
    "10-20 mm and over 20 mm)": ["claim:tumour_active_contour"],
    "liver CT quality (no comparison: the floor of point 5)": ["claim:liver_ct_quality"],
    "Mask R-CNN vs clump splitting (AP50, F1, Jaccard, steatosis-area error)": ["claim:maskrcnn_vs_clump_splitting"],
    "PathSegDiff head on LDM features vs on DINO features vs on a random encoder": ["pathsegdiff_features"],
}


#: issue 17 point 5: (floor, scenario, arm, metric, minimum); the mean must reach the minimum
FLOORS = [
    ("liver Dice, liver bundle", "claim:liver_ct_quality", "liver bundle", "dice", 0.95),
    ("tumour Dice, tumour bundle (defaults: active contour on)", "claim:tumour_active_contour", "active contour on",
     "dice", 0.70),
    ("mIoU, DeepLab bundle (deformable ASPP)", "claim:deeplab_deformable_aspp", "deformable ASPP", "mean_iou", 0.80),
    ("AP50 on touching droplets, Mask R-CNN minus clump splitting", "claim:maskrcnn_vs_clump_splitting",
     "Mask R-CNN - clump splitting", "touching_AP50, paired difference", 0.10),
]


def floor_lines(scenarios: Mapping[str, dict]) -> list[str]:
    """The quality floors of one machine's run as a Markdown table (measured ones with their ci95)."""
    lines = ["| floor | minimum | mean | ci95 | held-out cases | seeds | result |", "|---|---|---|---|---|---|---|"]
    for title, scenario, arm, metric, minimum in FLOORS:
        rows = (scenarios.get(scenario) or {}).get("rows") or []
        row = next((r for r in rows if r["arm"] == arm and r["metric"] == metric), None)
        if row is None:
            lines.append(f"| {title} | {minimum} | | | | | not measured (`--only {scenario}`) |")
            continue
        gap = row["mean"] - minimum
        result = "met" if gap >= 0 else f"missed by {-gap:.3f}"
        lines.append(f"| {title} | {minimum} | {row['mean']:.3f} | [{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}] | "
                     f"{row['n_held_out']} | {len(row['seeds'])} | {result} |")
    return lines + [""]


def peer_table(res: Mapping) -> list[str]:
    """One peer scenario's rows (the bundle's row of the claim first) as a Markdown table."""
    lines = ["| arm | metric | mean | ci95 | verdict | held-out cases | seeds |", "|---|---|---|---|---|---|---|"]
    for r in list(res.get("bundle_rows", [])) + list(res.get("rows", [])):
        ci = r.get("ci95") or ["", ""]
        lines.append(f"| {r['arm']} | {r['metric']} | {r.get('mean', r.get('value'))} | [{ci[0]}, {ci[1]}] | "
                     f"{r.get('verdict', '')} | {r.get('n_held_out', '')} | {len(r.get('seeds') or [])} |")
    return lines


def peer_lines(runs: Mapping[str, Mapping]) -> list[str]:
    """The section of ``docs/claims.md`` with nnU-Net v2 beside the CT bundles (scenarios ``peer:NAME``)."""
    from tools.bench.peer import PEERS

    lines = ["## nnU-Net v2 beside the CT bundles (the peer a user would pick instead)", "",
             "nnU-Net v2 (`nnUNetv2_plan_and_preprocess`, `nnUNetv2_train`, `nnUNetv2_predict`, defaults) trained "
             "on the same training cases as the bundle's claim run, for the bundle's training wall clock per seed "
             "on the same machine, and scored on the same held-out volumes by the same metric code "
             "(`tools/bench/peer.py`). *difference* is bundle minus nnU-Net.", ""]
    found = False
    for key, run in runs.items():
        for name in PEERS:
            res = run.get("scenarios", {}).get(f"peer:{name}")
            if not res or "rows" not in res:
                continue
            found = True
            lines += [f"Machine `{key}`, {res.get('date', '')}, `{res.get('command', '')}` "
                      f"({res.get('seconds', res.get('wall_s', '?'))} s), nnunetv2 {res.get('nnunetv2', '?')}.", ""]
            lines += peer_table(res)
            budgets = sorted({r["budget"] for r in res["rows"] if r.get("budget")})
            methods = sorted({r["interval"] for r in res["rows"] if r.get("interval")})
            lines += [""] + [f"Budget: {b}" for b in budgets] + [""]
            if methods:
                lines += [f"Interval of the difference: {', '.join(methods)}.", ""]
    if not found:
        lines += ["Not run yet (`make bench-peer`: `python -m tools bench --out bench --only "
                  "claim:liver_ct_quality,peer:nnunet_liver`).", ""]
    return lines


def write_claims_markdown(results: Mapping, path: str | Path) -> Path:
    """``docs/claims.md`` from ``bench/results.json``: one section per claim, every run machine's rows.

    A claim nobody has run yet is listed as not run; nothing in the page is typed by hand.
    """
    lines = ["# The papers' claims, tested", "",
             "Generated by `python -m tools bench --only claim:NAME` (module `tools/bench/claims.py`) from "
             "`bench/results.json`; do not edit. Each effect is the paired difference of two arms (same seed, "
             "same held-out case) with its two-way bootstrap 95 % interval over seeds and cases; *shown* means "
             "the interval lies above zero, *reversed* below, *not shown* that it contains zero. Data: the "
             "`realism=\"full\"` synthetic generators (`liverseg_monai.data.synth`), designed from the real "
             "features before any claim was run; the held-out cases are never used for training or checkpoint "
             "selection.", ""]
    runs = (results or {}).get("runs", {})
    for title, scenarios in CLAIM_INDEX.items():
        lines += [f"## {title}", ""]
        found = False
        for key, run in runs.items():
            for scenario in scenarios:
                res = run.get("scenarios", {}).get(scenario)
                if not res or "rows" not in res:
                    continue
                found = True
                claim_text = next((r.get("claim_text") for r in res["rows"] if r.get("claim_text")), res.get("claim", ""))
                lines += [f"Machine `{key}`, {res.get('date', '')}, `{res.get('command', '')}` "
                          f"({res.get('seconds', res.get('wall_s', '?'))} s)." + (f" Claim: {claim_text}." if claim_text else ""), "",
                          "| arm | metric | mean | ci95 | verdict | held-out cases | seeds |", "|---|---|---|---|---|---|---|"]
                for r in res["rows"]:
                    ci = r.get("ci95") or ["", ""]
                    mean = r.get("mean", r.get("value"))
                    lines.append(f"| {r['arm']} | {r['metric']} | {'–' if mean is None else mean} | "
                                 f"[{ci[0]}, {ci[1]}] | {r.get('verdict', '')} | {r.get('n_held_out', '')} | "
                                 f"{len(r.get('seeds') or [])} |")
                lines += ["", f"Budget: {res.get('budget', '')}", ""]
                if res.get("diagnostics"):
                    lines += ["Diagnostics (mean over seeds and held-out cases): " + "; ".join(
                        f"{arm}: " + ", ".join(f"`{k}` {v}" for k, v in cols.items())
                        for arm, cols in res["diagnostics"].items()) + ".", ""]
                tried = CLAIMS[scenario.split(':', 1)[1]].tried if scenario.startswith("claim:") else ""
                if tried:
                    lines += [f"Tried: {tried}", ""]
        if not found:
            lines += ["Not run yet" + (f" (`python -m tools bench --out bench --only {scenarios[0]}`)." if scenarios
                                       else ": no protocol for this claim exists yet."), ""]
        else:  # a claim of the section that no machine has run is named, not left out silently
            missing = [s for s in scenarios if not any("rows" in (r.get("scenarios", {}).get(s) or {})
                                                       for r in runs.values())]
            lines += [f"- `{s}`: not run yet (`python -m tools bench --out bench --only {s}`)." for s in missing]
            lines += [""] if missing else []
    lines += peer_lines(runs)
    lines += ["## Quality floors (issue 17 point 5)", ""]
    for key, run in runs.items():
        scenarios = run.get("scenarios", {})
        if any(f[1] in scenarios for f in FLOORS):
            lines += [f"Machine `{key}`:", ""] + floor_lines(scenarios)
    path = Path(path)
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path
