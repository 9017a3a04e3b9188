"""A real MONAI Label server (``monaibundle`` sample app) serving all five segmentation bundles as shipped.

One server on 127.0.0.1 serves the liver CT, two-stage tumour CT, H&E DeepLab, steatosis Mask R-CNN and
PathSegDiff bundles, each folder copied as it is into the app's ``model/`` folder with a
``models/model.pt`` added (no other manual step). ``/infer`` on a NIfTI CT (both CT bundles) and on an
H&E tile (the three pathology bundles) must return exactly the labels that the bundle's own
``python -m monai.bundle run --config_file configs/inference.json`` writes for the same input from the
same served folder; ``/train`` runs one epoch of the liver bundle on the datastore's label.

To keep CI fast the served copies hold the tiny network sizes of each bundle's recipe
(``tools/recipes/<bundle>.yaml``, its ``inference`` stage overrides), written into the copy's
``configs/inference.json`` as a user picking a smaller configuration would (MONAI Label runs that file
without overrides). The checkpoints are randomly initialised (``init_random_weights``): these are
plumbing tests; segmentation quality is covered by the bundle tests.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
import yaml
from PIL import Image

from liverseg_monai.data.synth.histo import synth_histo
from liverseg_monai.data.synth.lits import synth_lits
from tools.ecosystem import monailabel as ml
from tools.runner import init_random_weights, run_bundle, set_config_values

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # real servers; CI runs them (make test), test-fast skips them
LIVER = "liver_ct_unet_segmentation"
TUMOR = "liver_tumor_ct_segresnetvae"
HISTO = "liver_pathology_deeplab_segmentation"
STEATOSIS = "liver_steatosis_maskrcnn"
PATHSEGDIFF = "pathology_pathsegdiff_segmentation"
MODELS = (LIVER, TUMOR, HISTO, STEATOSIS, PATHSEGDIFF)
CT_IMAGE, TILE_IMAGE = "ct1", "tile0"
# what the bundle's own run writes for the input (relative to its --output_dir)
BUNDLE_OUTPUT = {LIVER: f"**/{CT_IMAGE}*.nii.gz", TUMOR: f"**/{CT_IMAGE}*.nii.gz", HISTO: f"{TILE_IMAGE}_label.png",
                 STEATOSIS: f"{TILE_IMAGE}_instances.tif", PATHSEGDIFF: f"{TILE_IMAGE}_seg.png"}
# served-copy settings beyond the recipe's sizes: the random-weight Mask R-CNN keeps every detection, so
# the instance map compared below is not empty
EXTRA = {STEATOSIS: {"score_threshold": 0.0}}


def recipe_inference_overrides(bundle: str) -> dict:
    """The ``inference`` stage overrides of the bundle's recipe (its tiny, CPU-scale network sizes)."""
    recipe = yaml.safe_load((REPO / "tools" / "recipes" / f"{bundle}.yaml").read_text())
    stage = next(s for s in recipe["stages"] if s["name"] == "inference")
    return dict(stage.get("overrides") or {})


@pytest.fixture(scope="module")
def server(monailabel_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("monailabel")
    bundles = {}
    for name in MODELS:
        bundle = shutil.copytree(REPO / "bundles" / name, root / "bundles" / name)
        set_config_values(bundle, "inference.json", {**recipe_inference_overrides(name), **EXTRA.get(name, {})})
        init_random_weights(bundle, seed=0)  # models/model.pt: the state dict of network_def
        bundles[name] = bundle
    app = ml.make_app(root / "app", bundles)

    studies = root / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    ct = synth_lits(root / "lits", seed=0, n=2, size=(48, 48, 24)).parent
    shutil.copy(ct / "volume-0.nii.gz", studies / "ct0.nii.gz")
    shutil.copy(ct / "segmentation-0.nii.gz", studies / "labels" / "final" / "ct0.nii.gz")
    shutil.copy(ct / "volume-1.nii.gz", studies / f"{CT_IMAGE}.nii.gz")
    histo = synth_histo(root / "histo", seed=0, n=1, size=64).parent
    shutil.copy(next((histo / "images").glob("*.png")), studies / f"{TILE_IMAGE}.png")

    server = ml.MonaiLabelServer(app, studies, MODELS, root / "monailabel.log")
    try:
        server.start(timeout_s=240)
        yield server.url, studies
    finally:
        server.stop()


def bundle_own_output(studies: Path, bundle: str, image: str, out_dir: Path) -> Path:
    """Run the served bundle folder's own ``inference.json`` on ``image`` (a datastore file); its output file."""
    data = out_dir / "data"
    data.mkdir(parents=True)
    shutil.copy(studies / image, data / image)
    (data / "dataset.json").write_text(json.dumps({"testing": [{"image": image}]}))
    served = studies.parent / "app" / "model" / bundle
    run_bundle(served, ["inference.json"], dataset_dir=data, output_dir=out_dir / "out", timeout=600)
    found = sorted((out_dir / "out").glob(BUNDLE_OUTPUT[bundle]))
    assert len(found) == 1, f"{bundle}: expected one {BUNDLE_OUTPUT[bundle]} in {out_dir / 'out'}, found {found}"
    return found[0]


def read_labels(path: Path) -> np.ndarray:
    """Label array of a NIfTI, PNG or TIFF label file, without singleton dimensions."""
    if path.name.endswith((".nii", ".nii.gz")):
        return np.squeeze(np.asarray(nib.load(path).dataobj))
    if path.suffix in (".tif", ".tiff"):
        return np.squeeze(tifffile.imread(path))
    return np.squeeze(np.asarray(Image.open(path)))


def test_info_lists_all_five_bundles(server) -> None:
    url, _ = server
    info = ml.info(url)
    assert set(MODELS) <= set(info["models"]), info["models"].keys()
    assert info["models"][LIVER]["labels"] == {"liver": 1}
    assert LIVER in info["trainers"]


@pytest.mark.parametrize("bundle", [LIVER, TUMOR])
def test_infer_ct_equals_the_bundles_own_output(server, bundle: str, tmp_path: Path) -> None:
    """NIfTI in, the label map on the input's grid, voxel for voxel what the bundle itself writes."""
    url, studies = server
    served = ml.infer(url, bundle, CT_IMAGE, tmp_path / "served.nii.gz")
    own = bundle_own_output(studies, bundle, f"{CT_IMAGE}.nii.gz", tmp_path)
    label, image, reference = nib.load(served), nib.load(studies / f"{CT_IMAGE}.nii.gz"), nib.load(own)
    assert label.shape[:3] == image.shape[:3] == reference.shape[:3]
    np.testing.assert_allclose(label.affine, image.affine, atol=1e-3)
    np.testing.assert_allclose(reference.affine, image.affine, atol=1e-3)
    np.testing.assert_array_equal(read_labels(served), read_labels(own))


@pytest.mark.parametrize("bundle", [HISTO, STEATOSIS, PATHSEGDIFF])
def test_infer_tile_equals_the_bundles_own_output(server, bundle: str, tmp_path: Path) -> None:
    """An H&E tile over HTTP: the class map (DeepLab, PathSegDiff) or droplet instance map (steatosis),
    pixel for pixel what the bundle itself writes.

    MONAI Label writes 2D results through ITK: PNG needs uint8 pixels, and instance ids may exceed 255,
    so the result is asked for as uint16 NIfTI.
    """
    url, studies = server
    served = ml.infer(url, bundle, TILE_IMAGE, tmp_path / "served.nii.gz",
                      params={"result_extension": ".nii.gz", "result_dtype": "uint16"})
    own = bundle_own_output(studies, bundle, f"{TILE_IMAGE}.png", tmp_path)
    label, reference = read_labels(served), read_labels(own)
    assert label.shape == reference.shape == np.asarray(Image.open(studies / f"{TILE_IMAGE}.png")).shape[:2]
    np.testing.assert_array_equal(label, reference)
    if bundle == STEATOSIS:  # the instance map (one id per droplet), not the network's [ids, scores] pair
        assert label.ndim == 2 and len(np.unique(label[label > 0])) > 2


def test_train_liver_ct_one_epoch(server) -> None:
    url, studies = server
    bundle_models = studies.parent / "app" / "model" / LIVER / "models"
    started = time.time()
    task = ml.train(url, LIVER, {"max_epochs": 1, "val_split": 0.0, "multi_gpu": False, "device": "cpu"},
                    timeout_s=400)
    assert task["status"] == "DONE"
    written = [p for p in bundle_models.glob("*.pt") if p.stat().st_mtime >= started - 1]
    assert written, f"no checkpoint written in {bundle_models}"
