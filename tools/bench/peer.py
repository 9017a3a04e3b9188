"""nnU-Net v2 beside the CT bundles (issue 17 point 2): the peer a user would pick instead.

``python -m tools bench --out bench --only peer:nnunet_liver`` (``make bench-peer``) does, for a CT claim
of :mod:`tools.bench.claims`:

1. the claim's own dataset (same generator, data seed and split: :func:`tools.bench.claims.claim_data`)
   written as an nnU-Net raw dataset (:func:`write_nnunet_dataset`): the training and validation cases
   as ``imagesTr``/``labelsTr`` with ``splits_final.json`` making fold 0 exactly the claim's training /
   validation split, the held-out cases as ``imagesTs``; reference labels mapped to the peer's task
   (:attr:`Peer.label_map`, e.g. tumour into liver for the liver bundle's task);
2. nnU-Net's own CLI as a user runs it: ``nnUNetv2_plan_and_preprocess`` (2d and 3d_fullres),
   ``nnUNetv2_train DATASET CONFIG 0 -tr nnUNetTrainerWallClock`` and ``nnUNetv2_predict``, nnU-Net's
   defaults except test-time mirroring, which is off (on two CPU cores it multiplies the prediction of
   the held-out volumes by 4 in 2d and 8 in 3d_fullres, and the bundles do not use it either; it usually
   adds a little Dice, so nnU-Net's figures here may be slightly below its best). The trainer
   (``tools/bench/nnunet_trainers``) is nnU-Net's default stopped at the bundle's training wall clock for the same seed (:func:`bundle_budget`). nnU-Net's
   planning and preprocessing run before and outside that budget (their time is recorded), while the
   bundle's budget includes its own caching and preprocessing: the comparison leans towards nnU-Net;
3. the held-out predictions scored by the bundles' metric code
   (:func:`liverseg_monai.metrics.ct.case_metrics`) on the original voxel grid, per seed and case, with
   the two-way bootstrap ci95; beside them the bundle's row of the same claim and machine and the
   difference *bundle - nnU-Net* (:func:`compare`).

The rows go to ``bench/results.json`` (scenario ``peer:NAME``) and to the claim's section of
``docs/claims.md``. nnU-Net is an optional dependency (``pip install -e ".[peer]"``); the scenario says
so when it is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TRAINERS = Path(__file__).resolve().parent / "nnunet_trainers"
TRAINER = "nnUNetTrainerWallClock"


@dataclass(frozen=True)
class Peer:
    """nnU-Net v2 on the data of one CT claim."""

    claim: str  # the claim of tools.bench.claims whose data, split, seeds and bundle arm it shares
    bundle_arm: str  # the claim's arm the peer is compared with
    dataset_id: int
    dataset_name: str
    labels: Mapping[str, int]  # nnU-Net dataset.json labels
    label_map: Mapping[int, int]  # reference value -> peer class (values not listed are kept)
    class_names: Mapping[int, str]  # classes measured -> the names in the metric columns
    metrics: Mapping[str, str]  # claim metric (the bundle row's) -> the peer's case_metrics column
    configurations: Sequence[str] = ("2d", "3d_fullres")


PEERS: dict[str, Peer] = {
    # the liver bundle's task: liver with its lesions as one class (its evaluate.json maps label 2 to 1)
    "nnunet_liver": Peer(claim="liver_ct_quality", bundle_arm="liver bundle", dataset_id=501,
                         dataset_name="LiversegLiverCT", labels={"background": 0, "liver": 1}, label_map={2: 1},
                         class_names={1: "liver"}, metrics={"dice": "liver_dice"}),
    # the tumour bundle's task: liver and tumour (HCC-TACE-Seg labels 1 and 2) as in its per_case.csv
    "nnunet_tumour": Peer(claim="two_stage_vs_one_network", bundle_arm="two-stage", dataset_id=502,
                          dataset_name="LiversegHCC", labels={"background": 0, "liver": 1, "tumor": 2},
                          label_map={3: 0, 4: 0},  # portal vein and aorta of the SEG: background, as in the bundle
                          class_names={1: "liver", 2: "tumor"},
                          metrics={"tumor_dice": "tumor_dice", "liver_dice": "liver_dice"}),
}


# ---------------------------------------------------------------------------------------------- data


def case_id(image: str) -> str:
    """nnU-Net's case identifier of an image file name (``volume-3.nii.gz`` -> ``volume-3``)."""
    name = Path(image).name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    raise ValueError(f"{image}: nnU-Net peer expects NIfTI images (.nii.gz or .nii)")


def _write_label(src: Path, dst: Path, label_map: Mapping[int, int]) -> None:
    import nibabel as nib

    img = nib.load(str(src))
    data = np.asarray(img.dataobj)
    if not np.array_equal(data, np.round(data)):
        raise ValueError(f"{src}: the label map is not integer-valued")
    data = data.astype(np.int16)
    out = data.copy()
    for old, new in label_map.items():
        out[data == old] = new
    header = img.header.copy()
    header.set_data_dtype(np.uint8)
    nib.save(nib.Nifti1Image(out.astype(np.uint8), img.affine, header), str(dst))


def write_nnunet_dataset(data_dir: str | Path, raw_root: str | Path, peer: Peer) -> dict:
    """The claim's dataset as ``<raw_root>/DatasetNNN_NAME`` (nnU-Net v2 raw layout).

    Returns ``{"folder", "train", "val", "test"}``: the dataset folder, the training and validation case
    ids (fold 0 of :func:`write_splits`) and the held-out items ``[(case id, image path, label path)]``.
    """
    data_dir, raw_root = Path(data_dir), Path(raw_root)
    content = json.loads((data_dir / "dataset.json").read_text())
    folder = raw_root / f"Dataset{peer.dataset_id:03d}_{peer.dataset_name}"
    shutil.rmtree(folder, ignore_errors=True)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub).mkdir(parents=True)
    ids: dict[str, list[str]] = {"training": [], "validation": []}
    for section in ids:
        for item in content.get(section, []):
            cid = case_id(item["image"])
            shutil.copyfile(data_dir / item["image"], folder / "imagesTr" / f"{cid}_0000.nii.gz")
            _write_label(data_dir / item["label"], folder / "labelsTr" / f"{cid}.nii.gz", peer.label_map)
            ids[section].append(cid)
    test = []
    for item in content.get("testing", []):
        cid = case_id(item["image"])
        shutil.copyfile(data_dir / item["image"], folder / "imagesTs" / f"{cid}_0000.nii.gz")
        test.append((cid, str(data_dir / item["image"]), str(data_dir / item["label"])))
    if not ids["training"] or not test:
        raise ValueError(f"{data_dir / 'dataset.json'}: the nnU-Net peer needs training and testing cases")
    dataset = {"channel_names": {"0": "CT"}, "labels": dict(peer.labels),
               "numTraining": len(ids["training"]) + len(ids["validation"]), "file_ending": ".nii.gz",
               "name": peer.dataset_name, "description": f"liverseg-monai claim data ({data_dir.name})"}
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=1))
    return {"folder": folder, "train": ids["training"], "val": ids["validation"], "test": test}


def write_splits(preprocessed_folder: str | Path, train: Sequence[str], val: Sequence[str]) -> Path:
    """``splits_final.json`` whose fold 0 is the claim's training / validation split (nnU-Net reads it)."""
    path = Path(preprocessed_folder) / "splits_final.json"
    path.write_text(json.dumps([{"train": list(train), "val": list(val) or list(train)[:1]}], indent=1))
    return path


# ------------------------------------------------------------------------------------------ running


def _tool(name: str) -> str:
    here = Path(sys.executable).parent / name
    found = str(here) if here.is_file() else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: install the peer with `pip install -e \".[peer]\"` (nnunetv2)")
    return found


def _run(cmd: list[str], env: Mapping[str, str], log_path: Path, log: Callable[[str], None]) -> float:
    t = time.time()
    with open(log_path, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, env={**os.environ, **env}, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log_path.read_text().strip().splitlines()[-5:]
        raise RuntimeError(f"{cmd[0]} failed (exit {proc.returncode}); see {log_path}:\n" + "\n".join(tail))
    log(f"  {Path(cmd[0]).name} {' '.join(cmd[1:4])}: {time.time() - t:.0f} s")
    return time.time() - t


def bundle_budget(claim_result: Mapping | None, seeds: Sequence[int], default: float) -> dict[int, float]:
    """Training seconds per seed of the bundle's claim run (what nnU-Net gets for the same seed).

    Uses the recorded stage times (``per_seed[seed]["train_seconds"]``) when the claim run has them;
    older runs have only the seed's total (training and held-out evaluation), an upper bound that
    gives nnU-Net slightly more time than the bundle had. ``default`` when the claim was not run.
    """
    per_seed = (claim_result or {}).get("per_seed", {})
    out = {}
    for seed in seeds:
        entry = per_seed.get(str(seed), {})
        out[seed] = float(entry.get("train_seconds") or entry.get("seconds") or default)
    return out


def score_predictions(pred_dir: Path, test: Sequence[tuple[str, str, str]], peer: Peer) -> dict[str, dict[str, float]]:
    """``{case: {column: value}}`` by :func:`liverseg_monai.metrics.ct.case_metrics` on the original grid."""
    import nibabel as nib

    from liverseg_monai.metrics.ct import case_metrics

    table = {}
    for cid, _image, label in test:
        ref_img = nib.load(label)
        pred_img = nib.load(str(pred_dir / f"{cid}.nii.gz"))
        if not np.allclose(pred_img.affine, ref_img.affine, atol=1e-3) or pred_img.shape != ref_img.shape:
            raise ValueError(f"{pred_dir / cid}.nii.gz: nnU-Net's prediction is not on the reference grid")
        ref = np.asarray(ref_img.dataobj).astype(np.int16)
        mapped = ref.copy()
        for old, new in peer.label_map.items():
            mapped[ref == old] = new
        spacing = [float(s) for s in ref_img.header.get_zooms()[:3]]
        table[cid] = case_metrics(np.asarray(pred_img.dataobj).astype(np.int16), mapped, spacing,
                                  peer.class_names, hd95=False)
    return table


def paired_scores(bundle_row: Mapping | None, cases: Sequence[str], n_seeds: int) -> np.ndarray | None:
    """The bundle's ``[seeds, cases]`` scores from its row's ``per_case`` (None when the row lacks a case or seed)."""
    per_case = (bundle_row or {}).get("per_case") or {}
    if not all(len(per_case.get(c) or []) >= n_seeds for c in cases):
        return None
    return np.array([[np.nan if per_case[c][i] is None else per_case[c][i] for c in cases] for i in range(n_seeds)])


def compare(bundle_row: Mapping | None, peer_scores: np.ndarray, bundle_scores: np.ndarray | None = None,
            n_boot: int = 2000) -> dict | None:
    """The difference *bundle - nnU-Net* of one metric with its ci95.

    With the bundle's per-case table (same held-out cases, seeds paired by index) the interval is the
    paired two-way bootstrap (:func:`liverseg_monai.metrics.bootstrap.paired_difference_ci`); with only the
    bundle's recorded row, the two arms' intervals are combined as independent normal errors
    (``se = (high - low) / 3.92``), which the row says.
    """
    from liverseg_monai.metrics.bootstrap import bootstrap_ci, paired_difference_ci, verdict

    if bundle_scores is not None:
        diff, ci = paired_difference_ci(bundle_scores, peer_scores, n_boot=n_boot)
        method = "paired two-way bootstrap"
    elif bundle_row is not None:
        peer_mean, peer_ci = bootstrap_ci(peer_scores, n_boot=n_boot)
        se = np.hypot((bundle_row["ci95"][1] - bundle_row["ci95"][0]) / 3.92, (peer_ci[1] - peer_ci[0]) / 3.92)
        diff = bundle_row["mean"] - peer_mean
        ci = (diff - 1.96 * se, diff + 1.96 * se)
        method = "independent arms, normal approximation from both ci95"
    else:
        return None
    return {"mean": round(float(diff), 4), "ci95": [round(float(ci[0]), 4), round(float(ci[1]), 4)],
            "verdict": verdict(ci), "interval": method}


def run_peer(name: str, work: str | Path, seeds: Sequence[int] | None = None, split: Sequence[int] | None = None,
             configurations: Sequence[str] | None = None, budget_s: float | None = None,
             results: str | Path | None = None, resume: bool = False, log: Callable[[str], None] = print) -> dict:
    """Run peer ``name`` (:data:`PEERS`) and return its rows (see the module docstring).

    ``seeds``, ``split``, ``configurations`` and ``budget_s`` replace the protocol's (a quick check of the
    plumbing); ``results`` is the ``bench/results.json`` holding the bundle's claim rows (default the
    repository's), from which the machine's claim run gives the budget and the comparison. ``resume``
    keeps the planned dataset and every seed already trained and predicted (``run.json``) of an earlier
    call, instead of starting again.
    """
    from liverseg_monai.metrics.bootstrap import bootstrap_ci
    from tools.bench import REPO
    from tools.bench.claims import CLAIMS, Claim, claim_data
    from tools.bench.common import machine_info

    peer = PEERS[name]
    claim = CLAIMS[peer.claim]
    if seeds is not None or split is not None:
        claim = Claim(**{**claim.__dict__, "seeds": tuple(seeds or claim.seeds), "split": tuple(split or claim.split)})
    configurations = tuple(configurations or peer.configurations)
    work = Path(work)
    start = time.time()
    data = claim_data(claim, work)
    root = work / "nnunet" / name
    planned = resume and (root / ".planned").is_file()
    if not planned:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
    env = {"nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "preprocessed"),
           "nnUNet_extTrainer": str(TRAINERS), "nnUNet_n_proc_DA": str(max(1, os.cpu_count() or 1)),
           "nnUNet_compile": "false", "nnUNet_def_n_proc": "2", "LIVERSEG_NNUNET_SKIP_VALIDATION": "1"}
    ds = write_nnunet_dataset(data, root / "raw", peer)  # the same files again when resuming
    log_path = root / "nnunet.log"
    log(f"[peer {name}] nnU-Net dataset {ds['folder'].name}: {len(ds['train'])} train, {len(ds['val'])} val, "
        f"{len(ds['test'])} held out")
    if planned:
        plan_s = float((root / ".planned").read_text())
    else:
        plan_s = _run([_tool("nnUNetv2_plan_and_preprocess"), "-d", str(peer.dataset_id), "-c", *configurations,
                       "-np", *(["2"] * len(configurations)), "--verify_dataset_integrity"], env, log_path, log)
        write_splits(root / "preprocessed" / ds["folder"].name, ds["train"], ds["val"])
        (root / ".planned").write_text(f"{plan_s:.1f}")

    key = machine_info("cpu")["key"]
    recorded = json.loads(Path(results or REPO / "bench" / "results.json").read_text()) \
        if Path(results or REPO / "bench" / "results.json").is_file() else {}
    claim_result = recorded.get("runs", {}).get(key, {}).get("scenarios", {}).get(f"claim:{peer.claim}")
    if claim_result is None and not budget_s:
        raise RuntimeError(f"no claim:{peer.claim} run of this machine ({key}) in results.json, so no equal wall clock: "
                           f"run `python -m tools bench --out bench --only claim:{peer.claim},peer:{name}` "
                           f"(make bench-peer does)")
    budgets = {s: float(budget_s) for s in claim.seeds} if budget_s else bundle_budget(claim_result, claim.seeds, 300.0)
    bundle_rows = {r["metric"]: r for r in (claim_result or {}).get("rows", []) if r["arm"] == peer.bundle_arm}

    rows, per_config = [], {}
    for config in configurations:
        tables, info = [], []
        for seed in claim.seeds:
            results_dir = root / "results" / config / f"seed{seed}"
            pred_dir = results_dir / "predictions"
            if resume and (results_dir / "run.json").is_file():
                log(f"[peer {name}] {config} seed {seed}: trained and predicted earlier, reused")
                tables.append(score_predictions(pred_dir, ds["test"], peer))
                info.append({**json.loads((results_dir / "run.json").read_text()), **_epochs_trained(results_dir)})
                continue
            shutil.rmtree(results_dir, ignore_errors=True)
            run_env = {**env, "nnUNet_results": str(results_dir), "LIVERSEG_NNUNET_BUDGET_S": str(budgets[seed]),
                       "LIVERSEG_NNUNET_SEED": str(seed)}
            log(f"[peer {name}] {config} seed {seed}: training for {budgets[seed]:.0f} s (the bundle's)")
            train_s = _run([_tool("nnUNetv2_train"), str(peer.dataset_id), config, "0", "-tr", TRAINER,
                            "-device", "cpu"], run_env, log_path, log)
            predict_s = _run([_tool("nnUNetv2_predict"), "-i", str(ds["folder"] / "imagesTs"), "-o", str(pred_dir),
                              "-d", str(peer.dataset_id), "-c", config, "-f", "0", "-tr", TRAINER, "-device", "cpu",
                              "-npp", "1", "-nps", "1", "--disable_tta"], run_env, log_path, log)
            tables.append(score_predictions(pred_dir, ds["test"], peer))
            info.append({"seed": seed, "budget_s": round(budgets[seed], 1), "train_command_s": round(train_s, 1),
                         "predict_s": round(predict_s, 1), **_epochs_trained(results_dir)})
            (results_dir / "run.json").write_text(json.dumps(info[-1]))
        per_config[config] = info
        cases = sorted(tables[0])
        for metric, column in peer.metrics.items():
            scores = np.array([[t[c][column] for c in cases] for t in tables])
            mean, ci = bootstrap_ci(scores)
            budget = (f"nnU-Net v2 {config}, nnUNetTrainerWallClock: the bundle's training wall clock per seed "
                      f"({', '.join(f'{b:.0f}' for b in budgets.values())} s; trained "
                      f"{', '.join(str(i.get('trained_s', '?')) for i in info)} s, "
                      f"{', '.join(str(i.get('iterations', '?')) for i in info)} iterations of batch "
                      f"{_batch_size(root, ds['folder'].name, config)}), CPU, no test-time mirroring, defaults otherwise; "
                      f"split {len(ds['train'])} train / {len(ds['val'])} validation / {len(cases)} held out")
            row = {"peer": name, "claim": peer.claim, "bundle": claim.bundle, "arm": f"nnU-Net {config}",
                   "metric": metric, "mean": round(mean, 4), "value": round(mean, 4),
                   "ci95": [round(ci[0], 4), round(ci[1], 4)], "n_held_out": len(cases), "seeds": list(claim.seeds),
                   "budget": budget, "per_case": {c: [round(t[c][column], 4) for t in tables] for c in cases}}
            rows.append(row)
            diff = compare(bundle_rows.get(metric), scores, paired_scores(bundle_rows.get(metric), cases, len(tables)))
            if diff is not None:
                rows.append({"peer": name, "claim": peer.claim, "bundle": claim.bundle,
                             "arm": f"{peer.bundle_arm} - nnU-Net {config}", "metric": f"{metric}, difference",
                             "value": diff["mean"], **diff, "n_held_out": len(cases), "seeds": list(claim.seeds),
                             "budget": budget})
    result = {"rows": rows, "per_config": per_config, "plan_and_preprocess_s": round(plan_s, 1),
              "claim": claim.claim, "bundle_rows": list(bundle_rows.values()),
              "nnunetv2": _nnunet_version(), "seconds": round(time.time() - start, 1)}
    (root / "peer.json").write_text(json.dumps(result, indent=1))
    return result


def _epochs_trained(results_dir: Path) -> dict:
    """``{"epochs", "iterations", "trained_s"}`` from the trainer's last line in nnU-Net's training log."""
    import glob
    import re

    pattern = re.compile(r"stopped after (\d+) epochs(?: of (\d+) iterations)?,(?: (\d+) iterations,)? (\d+) s")
    for path in sorted(glob.glob(str(results_dir / "**" / "training_log_*.txt"), recursive=True)):
        for line in Path(path).read_text().splitlines():
            found = pattern.search(line)
            if found:
                epochs, per_epoch, iterations, seconds = found.groups()
                iterations = int(iterations) if iterations else int(epochs) * int(per_epoch)
                return {"epochs": int(epochs), "iterations": iterations, "trained_s": int(seconds)}
    return {}


def _batch_size(root: Path, dataset: str, config: str) -> str:
    try:
        plans = json.loads((root / "preprocessed" / dataset / "nnUNetPlans.json").read_text())
        conf = plans["configurations"][config]
        return f"{conf['batch_size']} x {conf['patch_size']}"
    except (OSError, KeyError, ValueError):
        return "?"


def _nnunet_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nnunetv2")
    except PackageNotFoundError:
        return "not installed"


#: set to 1 to keep what an interrupted ``peer:NAME`` run already trained and predicted (``run_peer(resume=True)``)
RESUME_ENV = "LIVERSEG_BENCH_RESUME"


def scenario_peer(work: Path, name: str, **kwargs) -> dict:
    """The bench scenario ``peer:NAME`` (keyword arguments of :func:`run_peer`)."""
    kwargs.setdefault("resume", os.environ.get(RESUME_ENV) == "1")
    return run_peer(name, Path(work) / "claims", log=lambda msg: print(msg, flush=True), **kwargs)
