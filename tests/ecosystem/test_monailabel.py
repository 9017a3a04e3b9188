"""A real MONAI Label server (``monaibundle`` sample app) serving this repository's bundles.

One server on 127.0.0.1 serves the liver CT bundle and the H&E DeepLab bundle (and the two-stage
tumour bundle once it has a ``models/model.pt``) from its ``model/`` folder; ``/infer`` runs on
synthetic images over HTTP, ``/train`` runs one epoch of the liver bundle on the datastore's label.

The checkpoints are randomly initialised (``init_random_weights``): these are plumbing tests (MONAI
Label loads our configs, our transforms run in its pipeline, results come back on the input's grid);
segmentation quality is covered by the bundle tests.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import itk
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from liverseg_monai.data.synth.histo import synth_histo
from liverseg_monai.data.synth.lits import synth_lits
from liverseg_monai.ecosystem import monailabel as ml
from liverseg_monai.ecosystem.bundles import init_random_weights, set_config_values

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # real servers; CI runs them (make test), test-fast skips them
LIVER = "liver_ct_unet_segmentation"
HISTO = "liver_pathology_deeplab_segmentation"
TUMOR = "liver_tumor_ct_segresnetvae"
MODELS = (LIVER, HISTO, TUMOR)
# the tumour bundle's smoke-scale settings (as in its recipe), written into the served copy because
# MONAI Label runs configs/inference.json without overrides
TUMOR_SMALL = {"spacing": [8.0, 8.0, 10.0], "liver#roi_size": [32, 32, 16], "tumor#roi_size": [32, 32, 16],
               "init_filters": 8}
TUMOR_PARTS = {"models/model_liver.pt": "liver#network_def", "models/model_tumor.pt": "tumor#network_def"}


@pytest.fixture(scope="module")
def server(monailabel_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("monailabel")
    bundles = {}
    for name in MODELS:
        bundle = shutil.copytree(REPO / "bundles" / name, root / "bundles" / name)
        if name == TUMOR:
            # MONAI Label builds `network_def` and loads one models/model.pt: serve the composed two stages
            set_config_values(bundle, "configs/inference.json", TUMOR_SMALL)
            init_random_weights(bundle, TUMOR_PARTS, seed=0)
            ml.serve_composed_network(bundle, TUMOR_PARTS)
        else:
            init_random_weights(bundle, seed=0)
        bundles[name] = bundle
    app = ml.make_app(root / "app", bundles)

    studies = root / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    ct = synth_lits(root / "lits", seed=0, n=2, size=(48, 48, 24)).parent
    shutil.copy(ct / "volume-0.nii.gz", studies / "ct0.nii.gz")
    shutil.copy(ct / "segmentation-0.nii.gz", studies / "labels" / "final" / "ct0.nii.gz")
    shutil.copy(ct / "volume-1.nii.gz", studies / "ct1.nii.gz")
    # NRRD for the tumour bundle: MONAI 1.6's Spacingd updates every dict entry named "image_*" when the
    # input is NIfTI, and MONAI Label puts the string "image_path" there (docs/monailabel.md)
    itk.imwrite(itk.imread(str(ct / "volume-1.nii.gz")), str(studies / "ct2.nrrd"))
    histo = synth_histo(root / "histo", seed=0, n=1, size=64).parent
    shutil.copy(next((histo / "images").glob("*.png")), studies / "tile0.png")

    server = ml.MonaiLabelServer(app, studies, MODELS, root / "monailabel.log")
    try:
        server.start(timeout_s=240)
        yield server.url, studies
    finally:
        server.stop()


def test_info_lists_our_bundles(server) -> None:
    url, _ = server
    info = ml.info(url)
    assert set(MODELS) <= set(info["models"]), info["models"].keys()
    assert info["models"][LIVER]["labels"] == {"liver": 1}
    assert LIVER in info["trainers"]


def test_infer_liver_ct_returns_label_map_on_input_grid(server, tmp_path: Path) -> None:
    url, studies = server
    out = ml.infer(url, LIVER, "ct1", tmp_path / "ct1_label.nii.gz")
    label, image = nib.load(out), nib.load(studies / "ct1.nii.gz")
    assert label.shape == image.shape
    np.testing.assert_allclose(label.affine, image.affine, atol=1e-3)
    values = set(np.unique(np.asarray(label.dataobj)).tolist())
    assert values <= {0, 1} and values, values


def test_infer_two_stage_tumour_ct_returns_liver_and_tumour_labels(server, tmp_path: Path) -> None:
    url, studies = server
    out = ml.infer(url, TUMOR, "ct2", tmp_path / "ct2_tumour.nrrd")
    label, image = itk.imread(str(out)), itk.imread(str(studies / "ct2.nrrd"))
    assert tuple(label.GetLargestPossibleRegion().GetSize()) == tuple(image.GetLargestPossibleRegion().GetSize())
    np.testing.assert_allclose(np.asarray(label.GetOrigin()), np.asarray(image.GetOrigin()), atol=1e-3)
    np.testing.assert_allclose(np.asarray(label.GetSpacing()), np.asarray(image.GetSpacing()), atol=1e-3)
    assert set(np.unique(itk.array_from_image(label)).tolist()) <= {0, 1, 2}


def test_infer_histopathology_returns_the_bundle_prediction(server, tmp_path: Path) -> None:
    """The H&E tile's class map over HTTP equals the one the bundle's own writer saved in the same run.

    MONAI Label writes 2D results through ITK: PNG needs uint8 pixels and a label without channel
    dimension (the bundle's ``pred`` is ``(1, H, W)``), so the result is asked for as NIfTI.
    """
    url, studies = server
    out = ml.infer(url, HISTO, "tile0", tmp_path / "tile0_label.nii.gz",
                   params={"result_extension": ".nii.gz", "result_dtype": "uint8"})
    label = np.squeeze(np.asarray(nib.load(out).dataobj))
    # the bundle's postprocessing (SaveTilePredictiond) wrote its PNG under the app's bundle copy
    written = np.asarray(Image.open(studies.parent / "app" / "model" / HISTO / "eval" / "tile0_label.png"))
    assert label.shape == written.shape == np.asarray(Image.open(studies / "tile0.png")).shape[:2]
    assert set(np.unique(label).tolist()) <= set(range(7))
    np.testing.assert_array_equal(label, written)


def test_train_liver_ct_one_epoch(server) -> None:
    url, _ = server
    bundle_models = server[1].parent / "app" / "model" / LIVER / "models"
    started = time.time()
    task = ml.train(url, LIVER, {"max_epochs": 1, "val_split": 0.0, "multi_gpu": False, "device": "cpu"},
                    timeout_s=400)
    assert task["status"] == "DONE"
    written = [p for p in bundle_models.glob("*.pt") if p.stat().st_mtime >= started - 1]
    assert written, f"no checkpoint written in {bundle_models}"
