"""Auto3DSeg with this repository's ``auto3dseg/segresnetvae`` algorithm template, for a tiny budget.

AutoRunner (data analysis -> BundleGen from our template -> training through ``scripts/train.py`` ->
scoring from ``progress.yaml`` -> ensemble through ``scripts/infer.py``) on synthetic LiTS-like cases.
Two epochs at 32x32x16 check that the template works end to end, not that it segments well.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from liverseg_monai.data.synth.lits import synth_lits

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "auto3dseg"


def test_template_follows_auto3dseg_naming() -> None:
    """BundleGen imports ``<folder>.scripts.algo.<Folder.capitalize()>Algo`` from the templates folder."""
    from monai.apps.auto3dseg import BundleAlgo

    sys.path.insert(0, str(TEMPLATES))
    try:
        from segresnetvae.scripts.algo import SegresnetvaeAlgo
    finally:
        sys.path.remove(str(TEMPLATES))
    assert issubclass(SegresnetvaeAlgo, BundleAlgo)
    assert (TEMPLATES / "segresnetvae" / "configs" / "hyper_parameters.yaml").is_file()
    assert (TEMPLATES / "segresnetvae" / "scripts" / "infer.py").is_file()


@pytest.mark.slow
def test_autorunner_trains_and_ensembles_segresnetvae(tmp_path: Path) -> None:
    from monai.apps.auto3dseg import AutoRunner

    data = synth_lits(tmp_path / "data", seed=0, n=5, size=(48, 48, 24), tumor_radius_mm=(20.0, 30.0)).parent
    split = json.loads((data / "dataset.json").read_text())
    datalist = {
        "training": [{**item, "fold": 1} for item in split["training"]] + [{**item, "fold": 0} for item in split["validation"]],
        "testing": [{"image": item["image"]} for item in split["testing"]],
    }
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    work = tmp_path / "work"
    runner = AutoRunner(
        work_dir=str(work),
        input={"modality": "CT", "dataroot": str(data), "datalist": str(tmp_path / "datalist.json"), "num_fold": 1,
               "resample_resolution": [8.0, 8.0, 10.0], "roi_size_max": [32, 32, 16], "init_filters": 8},
        algos="segresnetvae",
        templates_path_or_url=str(TEMPLATES),
    )
    runner.set_analyze_params({"do_ccp": False, "device": "cpu", "worker": 0})
    runner.set_device_info(cuda_visible_devices=[], cmd_prefix=sys.executable)
    runner.set_training_params({"num_epochs": 2, "num_epochs_per_validation": 1, "num_images_per_batch": 2,
                                "num_workers": 0, "sw_batch_size": 1})
    runner.set_num_fold(1)
    runner.run()

    algo = work / "segresnetvae_0"
    hyper = yaml.safe_load((algo / "configs" / "hyper_parameters.yaml").read_text())
    assert hyper["roi_size"] == [32, 32, 16] and hyper["output_classes"] == 3 and hyper["fold"] == 0
    assert hyper["bundle_root"] == str(algo)
    assert hyper["intensity_bounds"][0] < hyper["intensity_bounds"][1]
    progress = yaml.safe_load((algo / "model" / "progress.yaml").read_text())
    assert [p["epoch"] for p in progress] == [1, 2]
    assert 0.0 <= progress[-1]["best_avg_dice_score"] <= 1.0
    assert (algo / "model" / "model.pt").is_file()

    (pred_path,) = (work / "ensemble_output").rglob("*.nii.gz")
    image = nib.load(data / datalist["testing"][0]["image"])
    pred = nib.load(pred_path)
    assert pred.shape[:3] == image.shape
    assert set(np.unique(np.asarray(pred.dataobj)).tolist()) <= {0, 1, 2}
