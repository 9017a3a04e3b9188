"""PathSegDiff bundle beyond the shared harness: resumable stages, whole-slide inference, and the
ablation as a learning test (diffusion features vs a randomly initialised encoder, same head)."""

import json

import numpy as np
import pytest
import torch

from liverseg_monai.data.synth.histo import synth_histo
from liverseg_monai.engines.checkpoints import latest_checkpoint
from liverseg_monai.recipes import copy_bundle, load_recipe, run_stage

BUNDLE = "pathology_pathsegdiff_segmentation"


def tiny():
    return dict(load_recipe(BUNDLE)["overrides"]["tiny_histo"])


def test_autoencoder_stage_resumes_from_its_checkpoint(tmp_path):
    data = tmp_path / "data"
    synth_histo(data, seed=0, n=5, size=32)
    root = copy_bundle(BUNDLE, tmp_path / "bundle")
    stage = {"name": "ae", "config": ["inference.json", "train_autoencoder.json"], "output_dir": "ae",
             "overrides": {**tiny(), "autoencoder#max_epochs": 1, "ssl#batch_size": 4, "ssl#num_workers": 0}}
    run_stage(stage, root, data, tmp_path)
    models = root / "models"
    assert (models / "autoencoder.pt").is_file() and (models / "autoencoder_checkpoint_epoch=1.pt").is_file()
    first = torch.load(models / "autoencoder.pt", weights_only=True)
    stage["overrides"]["autoencoder#max_epochs"] = 2
    proc = run_stage(stage, root, data, tmp_path)
    assert "Restored all variables from" in proc.stdout + proc.stderr
    assert "autoencoder_checkpoint_epoch=1.pt" in proc.stdout + proc.stderr
    assert (models / "autoencoder_checkpoint_epoch=2.pt").is_file()
    latest = latest_checkpoint(models, "autoencoder_checkpoint_epoch=*.pt")
    assert latest.endswith("autoencoder_checkpoint_epoch=2.pt")  # what a third run would resume from
    ckpt = torch.load(models / "autoencoder_checkpoint_epoch=2.pt", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 2 * ckpt["trainer"]["epoch_length"]  # two epochs in all
    second = torch.load(models / "autoencoder.pt", weights_only=True)
    assert any(not torch.equal(first[k], second[k]) for k in first)  # epoch 2 trained on top of epoch 1


def test_diffusion_stage_refuses_to_start_without_the_autoencoder(tmp_path):
    data = tmp_path / "data"
    synth_histo(data, seed=0, n=3, size=32)
    root = copy_bundle(BUNDLE, tmp_path / "bundle")
    stage = {"name": "ldm", "config": ["inference.json", "train_autoencoder.json", "train_diffusion.json"],
             "output_dir": "ldm", "overrides": {**tiny(), "ssl#num_workers": 0}}
    with pytest.raises(RuntimeError, match="autoencoder.pt: missing: run the train_autoencoder.json stage first"):
        run_stage(stage, root, data, tmp_path)


def test_whole_slide_inference_with_the_slide_machinery(tmp_path):
    from monai.bundle import ConfigParser

    from liverseg_monai.data.synth.slide import synth_slide
    from liverseg_monai.io.slide import open_slide

    data = tmp_path / "slides"
    synth_slide(data, seed=0, n=1, width=384, height=256, tile_size=128, progress=False)
    root = copy_bundle(BUNDLE, tmp_path / "bundle")
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    for k, v in tiny().items():
        parser[k] = v
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), root / "models" / "model.pt")
    stage = {"name": "slide", "config": ["inference.json", "inference_slide.json"], "output_dir": "slide_out",
             "overrides": {**tiny(), "slide#patch_size": 64, "slide#batch_size": 8}}
    run_stage(stage, root, data, tmp_path)
    out = tmp_path / "slide_out"
    slide = json.loads((data / "dataset.json").read_text())["testing"][0]["image"]
    stem = slide.split("/")[-1].split(".")[0]
    assert (out / f"{stem}_label.tiff").is_file() and (out / f"{stem}_overlay.png").is_file()
    labels, rgb = open_slide(out / f"{stem}_label.tiff", require_mpp=False), open_slide(data / slide)
    try:
        assert labels.shape == rgb.shape == (256, 384)
        values = np.unique(labels.read_region(0, 0, 0, *labels.shape))
    finally:
        labels.close()
        rgb.close()
    assert values.max() < len(tiny()["class_names"])


@pytest.mark.slow
def test_ablation_diffusion_features_learn(tmp_path):
    from liverseg_monai.engines.diffusion import histo_tiles, run_feature_ablation
    from liverseg_monai.metrics.segmentation import confusion_matrix, segmentation_summary

    torch.set_num_threads(2)
    res = run_feature_ablation(tmp_path, seed=0, n_unlabelled=32, n_labelled=8, n_test=8, size=32,
                               ae_epochs=3, ldm_epochs=3, head_epochs=150, log=lambda _: None)
    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert saved["budget"]["n_labelled"] == 8 and set(saved) >= {"diffusion", "random_encoder", "curves"}
    curves = res["curves"]
    # the self-supervised stages learn: reconstruction error and noise-prediction error fall
    assert curves["autoencoder"][-1] < 0.5 * curves["autoencoder"][0]
    assert curves["diffusion"][-1] < curves["diffusion"][0]
    # the head on frozen diffusion features learns the tissue classes of unseen tiles
    assert curves["head_diffusion"][-1] < 0.7 * curves["head_diffusion"][0]
    # ... better than predicting the most frequent class (parenchyma, half the pixels) everywhere
    _, test_labels, classes = histo_tiles(8, 32, seed=0 + 3)  # the ablation's test tiles
    ref = test_labels.numpy().ravel()
    majority = segmentation_summary(confusion_matrix(np.full_like(ref, np.bincount(ref).argmax()), ref, 7), classes)
    assert res["diffusion"]["mean_dice"] > majority["mean_dice"] + 0.05
    assert res["diffusion"]["mean_iou"] > majority["mean_iou"] + 0.03
    for arm in ("diffusion", "random_encoder"):
        assert 0.0 <= res[arm]["mean_iou"] <= 1.0
