"""torchrun with two CPU processes (gloo) on every bundle's multi-GPU training config.

Each case merges the bundle's ``multi_gpu_train*.json`` after the training configs of one recipe stage
(``tools/recipes/<bundle>.yaml``: same synthetic data, same smoke-scale overrides), runs one
or two epochs under ``torchrun --nproc_per_node=2`` and checks: exit code 0; the stage's checkpoint
written, by rank 0 only (rank 1's checkpoint and output folders are redirected to ``models_rank1`` and
``<output_dir>_rank1``, which must gain no checkpoint and no TensorBoard summary); both ranks end
with identical weights (the trained modules' state dicts, parameters and buffers, saved by each rank
in ``finalize``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from liverseg_monai.data.synth.lits import synth_lits
from tools.recipes import load_recipe, synthesize
from tools.runner import bundle_command, copy_bundle

# rank 0 writes to models/ and OUT as usual; any file another rank would write lands in models_rank<R>/
# or OUT_rank<R>/
RANK_SUFFIX = "('' if os.environ['RANK'] == '0' else '_rank' + os.environ['RANK'])"


def save_each_rank(modules: tuple[str, ...]) -> list[str]:
    """``finalize`` that saves the modules' state dicts (a list) as ``<bundle_root>/rank<R>.pt`` on every rank."""
    return [
        f"$torch.save([liverseg_monai.engines.distributed.unwrap(m).state_dict() for m in [{', '.join(modules)}]], "
        "@bundle_root + '/rank' + str(dist.get_rank()) + '.pt')",
        "$dist.destroy_process_group()",
    ]


def torchrun(bundle_root: Path, configs: list[str], data: Path, out: Path, overrides: dict,
             port: int) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run ...`` as ``torchrun --nproc_per_node=2 -m monai.bundle run ...``."""
    cmd = bundle_command(bundle_root, configs, data, None, {"output_dir": f"$'{out}' + {RANK_SUFFIX}", **overrides})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"] + cmd[1:]
    # two ranks on two cores: one thread each, or they oversubscribe the CPU and crawl
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else set()


def logged_summaries(path: Path) -> int:
    """How many summaries a TensorBoard event file holds (-1 for any other file).

    A ``TensorBoardStatsHandler`` opens its event file when it is constructed, which MONAI's config
    parser does on every rank; the handler is attached (and logs) on rank 0 only, so other ranks'
    files hold the file header and no summary.
    """
    if not path.name.startswith("events.out.tfevents."):
        return -1
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return sum(1 for event in EventFileLoader(str(path)).Load() if event.HasField("summary"))


def assert_identical(w0: list[dict], w1: list[dict]) -> None:
    assert len(w0) == len(w1)
    for s0, s1 in zip(w0, w1):
        assert s0.keys() == s1.keys()
        assert s0, "no weights saved"
        for k in s0:
            torch.testing.assert_close(s0[k], s1[k], rtol=0, atol=0, msg=k)


def run_distributed_stage(root: Path, data: Path, out: Path, configs: list[str], overrides: dict,
                          modules: tuple[str, ...], expect: str, port: int) -> None:
    """One stage under torchrun with the checks of the module docstring."""
    models, models_rank1 = root / "models", root / "models_rank1"
    # rank 1 reads what rank 0 reads (weights of earlier stages, checkpoints to resume) from its own folder
    shutil.copytree(models, models_rank1, dirs_exist_ok=True)
    before = files_under(models_rank1)
    for rank in (0, 1):
        (root / f"rank{rank}.pt").unlink(missing_ok=True)
    overrides = {**overrides, "ckpt_dir": f"$@bundle_root + '/models' + {RANK_SUFFIX}", "finalize": save_each_rank(modules)}
    proc = torchrun(root, configs, data, out, overrides, port)
    assert proc.returncode == 0, proc.stdout[-3000:] + "\n" + proc.stderr[-8000:]
    assert (root / expect).is_file(), f"{expect} not written; models/: {sorted(files_under(models))}"
    assert files_under(models_rank1) == before, f"rank 1 wrote {sorted(files_under(models_rank1) - before)}"
    out_rank1 = out.parent / f"{out.name}_rank1"
    written = {f: logged_summaries(out_rank1 / f) for f in files_under(out_rank1)}
    assert not any(written.values()), f"rank 1 wrote {written} in {out_rank1}"
    assert any(logged_summaries(out / f) for f in files_under(out)), f"rank 0 logged nothing in {out}"
    w0 = torch.load(root / "rank0.pt", weights_only=True)
    w1 = torch.load(root / "rank1.pt", weights_only=True)
    assert_identical(w0, w1)


@dataclass(frozen=True)
class Case:
    """One recipe stage run under torchrun.

    ``modules``: config expressions of the trained modules (compared across ranks); ``expect``: the
    checkpoint rank 0 writes, relative to the bundle root; ``synth``: changes to the recipe's dataset
    options (at least two validation cases, one per rank); ``overrides``: changes to the recipe
    stage's overrides (the training budget).
    """

    bundle: str
    stage: str
    modules: tuple[str, ...]
    expect: str
    multi_gpu: str = "multi_gpu_train.json"
    synth: dict = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)
    before: tuple[str, ...] = ()  # recipe stages run first (under torchrun as well), in order


CASES = [
    Case("liver_tumor_ct_segresnetvae", "train_liver", ("@network",), "models/model_liver.pt",
         synth={"prepare": {"kind": "hcc-tace", "options": {"val_fraction": 0.4}}}),
    Case("liver_tumor_ct_segresnetvae", "train_tumor", ("@network",), "models/model_tumor.pt",
         synth={"prepare": {"kind": "hcc-tace", "options": {"val_fraction": 0.4}}}),
    Case("pathology_dino_pretraining", "train", ("@network", "@teacher"), "models/model.pt",
         overrides={"max_epochs": 1, "batch_size": 2}),
    Case("liver_pathology_deeplab_segmentation", "train", ("@network",), "models/model.pt", synth={"n": 8}),
    Case("liver_steatosis_maskrcnn", "train", ("@network",), "models/model.pt", synth={"n": 8}),
    Case("pathology_pathsegdiff_segmentation", "train", ("@network",), "models/model.pt", synth={"n": 8},
         before=("train_autoencoder", "train_diffusion")),
]
STAGE_CASES = {  # how the earlier stages of a multi-stage bundle run under torchrun
    ("pathology_pathsegdiff_segmentation", "train_autoencoder"): Case(
        "pathology_pathsegdiff_segmentation", "train_autoencoder", ("@autoencoder#network",), "models/autoencoder.pt",
        multi_gpu="multi_gpu_train_autoencoder.json"),
    ("pathology_pathsegdiff_segmentation", "train_diffusion"): Case(
        "pathology_pathsegdiff_segmentation", "train_diffusion", ("@diffusion#network",), "models/diffusion.pt",
        multi_gpu="multi_gpu_train_diffusion.json"),
}
HEAVY = {"liver_steatosis_maskrcnn", "pathology_pathsegdiff_segmentation"}


def _params(case: Case):
    marks = [pytest.mark.slow] if case.bundle in HEAVY else []
    return pytest.param(case, id=f"{case.bundle}-{case.stage}", marks=marks)


@pytest.mark.parametrize("case", [_params(c) for c in CASES])
def test_torchrun_bundle(case: Case, tmp_path):
    recipe = load_recipe(case.bundle)
    synth = {**recipe["synth"], **case.synth}
    data = synthesize(synth, tmp_path / "data")
    root = copy_bundle(case.bundle, tmp_path / "bundle")
    stages = {s["name"]: s for s in recipe["stages"]}
    port = 29540 + CASES.index(case) * 4
    for i, stage_case in enumerate([STAGE_CASES[(case.bundle, s)] for s in case.before] + [case]):
        stage = stages[stage_case.stage]
        overrides = {**(stage.get("overrides") or {}), **stage_case.overrides}
        configs = list(stage["config"]) + [stage_case.multi_gpu]
        run_distributed_stage(root, data, tmp_path / stage_case.stage, configs, overrides, stage_case.modules,
                              stage_case.expect, port + i)


def test_torchrun_two_ranks_end_with_identical_weights(tmp_path):
    """The liver CT bundle, with the trained network compared across ranks."""
    data = tmp_path / "data"
    synth_lits(data, seed=2, n=10, size=(40, 40, 16))  # two validation cases: one per rank
    root = copy_bundle("liver_ct_unet_segmentation", tmp_path / "bundle")
    run_distributed_stage(
        root, data, tmp_path / "out", ["train.json", "multi_gpu_train.json"],
        {"max_epochs": 1, "spatial_size": [32, 32], "samples_per_volume": 2, "batch_size": 2, "num_workers": 0},
        ("@network",), "models/model.pt", port=29533,
    )


# ---------------------------------------------------------------------------------------------------
# cohort inference: multi_gpu_inference.json under torchrun
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InferCase:
    """A bundle's inference under ``torchrun --nproc_per_node=2`` against the single-process run.

    ``outputs``: glob of the per-case output files (one per testing case); ``broken``: the suffix of a
    file name the bundle's reader refuses (a case that must land in ``failed_cases.csv``); ``table``: a
    table of all cases that rank 0 writes from every rank's records (it must equal the single-process
    one); ``overrides``: added to the recipe's inference overrides (a smaller network).
    """

    bundle: str
    outputs: str
    broken: str
    table: str | None = None
    overrides: dict = field(default_factory=dict)


INFER_CASES = [
    InferCase("liver_ct_unet_segmentation", "*_seg.nii.gz", ".nii.gz"),
    InferCase("liver_pathology_deeplab_segmentation", "*_label.png", ".png"),
    InferCase("pathology_dino_pretraining", "*_embedding.npy", ".png", table="embeddings.csv",
              overrides={"arch": "resnet18"}),
]


def _output_arrays(folder: Path, pattern: str) -> dict[str, object]:
    import numpy as np

    if pattern.endswith(".nii.gz"):
        import nibabel as nib

        return {p.name: np.asarray(nib.load(p).dataobj) for p in folder.rglob(pattern)}
    if pattern.endswith(".npy"):
        return {p.name: np.load(p) for p in folder.rglob(pattern)}
    from PIL import Image

    return {p.name: np.asarray(Image.open(p)) for p in folder.rglob(pattern)}


@pytest.mark.parametrize("case", INFER_CASES, ids=lambda c: c.bundle)
def test_torchrun_inference_writes_each_case_once(case: InferCase, tmp_path):
    """Two gloo ranks share the testing cases: every case written once, equal to the single-process
    output; one broken case per rank, both reported in rank 0's one ``failed_cases.csv``."""
    import json

    import numpy as np

    recipe = load_recipe(case.bundle)
    stage = next(s for s in recipe["stages"] if s["name"] == "inference")
    overrides = {**(stage.get("overrides") or {}), **case.overrides}
    data = synthesize(recipe["synth"], tmp_path / "data")
    root = copy_bundle(case.bundle, tmp_path / "bundle")
    torch.manual_seed(0)  # random weights stand in for a training: the comparison needs only the same ones
    from tests.bundles.test_model_zoo_layout import build_network

    torch.save(build_network(root, overrides).state_dict(), root / "models" / "model.pt")

    # the cases: the testing and validation images; the cohort: a broken file first and second (one per
    # rank), then those cases
    datalist = json.loads((data / "dataset.json").read_text())
    images = [it if isinstance(it, str) else it["image"] for it in datalist["testing"] + datalist["validation"]]
    broken = []
    for name in ("broken_a", "broken_b"):
        (data / f"{name}{case.broken}").write_bytes(b"not an image")
        broken.append({"image": f"{name}{case.broken}"})
    datalist["cases"] = [{"image": im} for im in images]
    datalist["cohort"] = broken + datalist["cases"]
    (data / "dataset.json").write_text(json.dumps(datalist))
    cases = {"datalist": "$liverseg_monai.data.load_datalist(@dataset_dir, 'cases')"}
    cohort = {"datalist": "$liverseg_monai.data.load_datalist(@dataset_dir, 'cohort')"}

    single, multi = tmp_path / "single", tmp_path / "multi"
    proc = subprocess.run(bundle_command(root, ["inference.json"], data, single, {**overrides, **cases}),
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-6000:]
    cmd = bundle_command(root, ["inference.json", "multi_gpu_inference.json"], data, multi, {**overrides, **cohort})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29571"] + cmd[1:]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + "\n" + proc.stderr[-8000:]

    expected, got = _output_arrays(single, case.outputs), _output_arrays(multi, case.outputs)
    assert len(expected) == len(images) >= 2  # with the broken ones: two cases on each rank
    assert sorted(got) == sorted(expected)  # every case written, by name, once
    assert not [p for p in multi.rglob("*rank*")], "per-rank files left behind"
    for name in expected:
        if np.issubdtype(expected[name].dtype, np.floating):
            # float outputs (embeddings): another batch composition changes the summation order, ~1e-6
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-5, err_msg=name)
        else:  # masks and label maps: exactly the same
            np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    if case.table:  # one table of every rank's cases, as the single process writes it
        import csv

        def rows(folder: Path) -> list[dict]:
            with open(folder / case.table, newline="") as f:
                return list(csv.DictReader(f))

        def same(a: str, b: str) -> bool:  # numbers within the float outputs' tolerance, text exactly
            try:
                return bool(np.isclose(float(a), float(b), rtol=1e-3, atol=1e-4))
            except ValueError:
                return a == b

        table, reference = rows(multi), rows(single)
        assert len(table) == len(images), table
        assert [list(r) for r in table] == [list(r) for r in reference], (table, reference)
        assert all(same(r[k], e[k]) for r, e in zip(table, reference) for k in e), (table, reference)
    failed = (multi / "failed_cases.csv").read_text()
    assert "broken_a" in failed and "broken_b" in failed, failed
    assert len(failed.strip().splitlines()) == 3, failed  # header + one row per broken case
