"""PathSegDiff bundle beyond the shared harness: resumable stages, whole-slide inference, and the
ablation as a learning test (diffusion features vs a randomly initialised encoder, same head)."""

import json

import numpy as np
import pytest
import torch

from liverseg_monai.data.synth.histo import synth_histo
from liverseg_monai.engines.checkpoints import latest_checkpoint
from tools.recipes import load_recipe
from tools.runner import copy_bundle, run_stage

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


# ---------------------------------------------------------------------------------------------------
# Stage checks at the demo budget (issue: "PathSegDiff must learn"). Each stage is checked on its own,
# on held-out tiles, through the bundle's own configs and the demo recipe's overrides. Before the fix
# the demo's autoencoder reconstructed held-out tiles at 8.5 dB (the mean colour alone gives 16.7 dB),
# the head trained 45 steps and predicted almost no background (IoU 0.001).
# ---------------------------------------------------------------------------------------------------


def demo_overrides(stage: str) -> dict:
    stages = {s["name"]: s for s in load_recipe(BUNDLE)["demo"]["stages"]}
    return dict(stages[stage]["overrides"])


def tiles(data, split):
    from liverseg_monai.io.rgb import read_label_map, read_rgb

    items = json.loads((data / "dataset.json").read_text())[split]
    x = np.stack([read_rgb(data / it["image"]) for it in items]).transpose(0, 3, 1, 2)
    y = np.stack([read_label_map(data / it["label"]) for it in items])
    return torch.from_numpy(x).float() / 255.0, torch.from_numpy(y).long()


def bundle_part(root, overrides: dict, key: str, seed: int = 0):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    for k, v in overrides.items():
        if "#" not in k:
            parser[k] = v
    torch.manual_seed(seed)
    return parser.get_parsed_content(key)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo recipe's data and its three training stages plus evaluation, run once for the checks below."""
    from tools.recipes import synthesize

    torch.set_num_threads(2)
    tmp = tmp_path_factory.mktemp("pathsegdiff_demo")
    demo = load_recipe(BUNDLE)["demo"]
    data = synthesize(demo["synth"], tmp / "data")
    root = copy_bundle(BUNDLE, tmp / "bundle")
    for stage in demo["stages"]:
        if stage["name"] != "inference":
            run_stage(stage, root, data, tmp)
    return {"data": data, "root": root, "work": tmp}


@pytest.mark.slow
def test_autoencoder_reconstructs_held_out_tiles(demo_run):
    from liverseg_monai.engines.diffusion import load_module_weights

    x, _ = tiles(demo_run["data"], "testing")
    ae = bundle_part(demo_run["root"], demo_overrides("train_autoencoder"), "autoencoder_def")
    load_module_weights(ae, demo_run["root"] / "models" / "autoencoder.pt", "train_autoencoder.json")
    with torch.no_grad():
        psnr = -10 * torch.log10(torch.mean((ae.eval().reconstruct(x).clamp(0, 1) - x) ** 2))
        mean_colour = -10 * torch.log10(torch.mean((x.mean((0, 2, 3), keepdim=True) - x) ** 2))
    assert float(psnr) > float(mean_colour) + 3.0, (float(psnr), float(mean_colour))


@pytest.mark.slow
def test_denoising_loss_falls_well_below_its_start(demo_run):
    from monai.inferers import LatentDiffusionInferer

    from liverseg_monai.engines.diffusion import diffusion_loss, load_stage_weights

    x, _ = tiles(demo_run["data"], "testing")
    overrides = demo_overrides("train_diffusion")
    trained = bundle_part(demo_run["root"], overrides, "extractor")
    load_stage_weights(trained, demo_run["root"] / "models" / "autoencoder.pt", demo_run["root"] / "models" / "diffusion.pt")
    initial = bundle_part(demo_run["root"], overrides, "diffusion_def")  # the stage's seed-0 initialisation
    initial.scale_factor.copy_(trained.diffusion.scale_factor)
    losses = {}
    for name, diffusion in (("trained", trained.diffusion), ("initial", initial)):
        torch.manual_seed(1)  # the same noise and timesteps for both
        inferer = LatentDiffusionInferer(bundle_part(demo_run["root"], overrides, "scheduler"))
        with torch.no_grad():
            losses[name] = float(diffusion_loss(diffusion.eval(), trained.autoencoder, inferer, x[..., :64, :64])[0])
    assert losses["trained"] < 0.5 * losses["initial"], losses


def linear_probe_miou(train_f, train_y, test_f, test_y, num_classes: int) -> float:
    """A 1x1 convolution fitted by full-batch Adam on standardised frozen features; mIoU on test pixels."""
    from liverseg_monai.metrics.segmentation import confusion_matrix, segmentation_summary

    mu, sd = train_f.mean((0, 2, 3), keepdim=True), train_f.std((0, 2, 3), keepdim=True) + 1e-6
    torch.manual_seed(0)
    probe = torch.nn.Conv2d(train_f.shape[1], num_classes, 1)
    opt = torch.optim.Adam(probe.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(probe((train_f - mu) / sd), train_y).backward()
        opt.step()
    with torch.no_grad():
        pred = probe((test_f - mu) / sd).argmax(1)
    names = [str(i) for i in range(num_classes)]
    return segmentation_summary(confusion_matrix(pred.numpy(), test_y.numpy(), num_classes), names)["mean_iou"]


@pytest.mark.slow
def test_frozen_features_separate_the_classes_better_than_a_random_encoder(demo_run):
    from liverseg_monai.engines.diffusion import load_stage_weights

    overrides = demo_overrides("train")
    train_x, train_y = tiles(demo_run["data"], "training")
    test_x, test_y = tiles(demo_run["data"], "testing")
    trained = bundle_part(demo_run["root"], overrides, "extractor")
    load_stage_weights(trained, demo_run["root"] / "models" / "autoencoder.pt", demo_run["root"] / "models" / "diffusion.pt")
    random = bundle_part(demo_run["root"], overrides, "extractor")
    scores = {}
    for name, ex in (("diffusion", trained), ("random", random)):
        with torch.no_grad():
            f_train = torch.cat([ex(train_x[i : i + 8]) for i in range(0, len(train_x), 8)])
            f_test = torch.cat([ex(test_x[i : i + 8]) for i in range(0, len(test_x), 8)])
        scores[name] = linear_probe_miou(f_train, train_y, f_test, test_y, len(overrides["class_names"]))
    assert scores["diffusion"] > scores["random"] + 0.1, scores


@pytest.mark.slow
def test_bundle_head_and_labels_line_up(demo_run):
    """The trained segmenter, scored by the bundle's evaluate.json on the held-out testing tiles (the recipe
    points its ``datalist`` there; the validation tiles chose the checkpoint):
    class names, label values and metric indices agree (each class's reference pixels counted by the
    metric equal the pixels with that value in the label files), background (glass) is found, and the
    mean IoU is far above the majority-class rule (0.07)."""
    summary = json.loads((demo_run["work"] / "eval" / "summary.json").read_text())
    per_class = summary["metrics"]["per_class"] if "metrics" in summary else summary["per_class"]
    names = demo_overrides("evaluate")["class_names"]
    _, test_y = tiles(demo_run["data"], "testing")
    counts = np.bincount(test_y.numpy().ravel(), minlength=len(names))
    assert [per_class[n]["reference_pixels"] for n in names] == counts.tolist(), (per_class, counts)
    mean_iou = summary["metrics"]["mean_iou"] if "metrics" in summary else summary["mean_iou"]
    # measured at this budget on the validation tiles (before the recipe scored the testing tiles): background
    # IoU 0.83, mIoU 0.55 (before the fix 0.001 and 0.13); CI passes these bounds on the testing tiles
    assert per_class["background"]["iou"] > 0.6, per_class["background"]
    assert mean_iou > 0.45, mean_iou


def test_head_recipe_fits_ground_truth_separable_features():
    """The demo's head, loss, optimiser and step count reach a high mIoU on features that carry the label
    (one-hot plus noise): what the head can do when the features are good."""
    from monai.losses import DiceCELoss

    from liverseg_monai.data.synth.histo import make_histo_tile
    from liverseg_monai.metrics.segmentation import confusion_matrix, segmentation_summary
    from liverseg_monai.networks.blocks.seg_head import ConvSegmentationHead

    overrides = demo_overrides("train")
    n_classes = len(overrides["class_names"])
    labels = torch.from_numpy(np.stack([make_histo_tile(np.random.default_rng(i), 64)[1] for i in range(12)])).long()
    g = torch.Generator().manual_seed(0)

    def features(y):
        onehot = torch.nn.functional.one_hot(y, n_classes).permute(0, 3, 1, 2).float()
        return onehot + 0.5 * torch.randn(onehot.shape, generator=g)

    torch.manual_seed(0)
    head = ConvSegmentationHead(n_classes, n_classes, overrides["head_channels"])
    opt = torch.optim.Adam(head.parameters(), lr=overrides["learning_rate"])
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    steps = 60  # a fraction of the demo's ~1440 head steps
    for _ in range(steps):
        idx = torch.randint(0, 8, (overrides["batch_size"],), generator=g)
        opt.zero_grad()
        loss_fn(head(features(labels[idx])), labels[idx, None]).backward()
        opt.step()
    with torch.no_grad():
        pred = head.eval()(features(labels[8:])).argmax(1)
    cm = confusion_matrix(pred.numpy(), labels[8:].numpy(), n_classes)
    assert segmentation_summary(cm, [str(i) for i in range(n_classes)])["mean_iou"] > 0.85
