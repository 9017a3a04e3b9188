from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import CropForeground, MapLabelValue, Resize, ScaleIntensityRange
from torch import nn

from liverseg_monai.engines.two_stage import PrepareBatchWithPrior
from liverseg_monai.metrics.cascade import AblationMetrics, cascade_case_metrics, tumor_burden
from liverseg_monai.networks.blocks.mask_cleanup import KeepLargestComponent, MaskCleanup
from liverseg_monai.networks.two_stage import (
    CascadeStage,
    LiverBoxCrop,
    PasteBack,
    TwoStageSegmenter,
    resize,
    window,
)


class Band(nn.Module):
    """Two-class logits: class 1 where lo < x < hi (x is the windowed [0, 1] image). Records input sizes."""

    def __init__(self, lo: float, hi: float):
        super().__init__()
        self.lo, self.hi = lo, hi
        self.sizes: list[tuple] = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[2:]))
        score = torch.minimum(x - self.lo, self.hi - x) * 100
        return torch.cat([-score, score], dim=1)


def scene(shape=(40, 36, 30)):
    hu = np.full(shape, 150.0, np.float32)  # bright surroundings: no partial-volume band looks like tumour
    liver = np.zeros(shape, bool)
    liver[10:30, 8:28, 5:25] = True
    hu[liver] = 60.0
    g = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    tumor = ((g[0] - 20) ** 2 + (g[1] - 18) ** 2 + (g[2] - 15) ** 2) < 25
    hu[tumor] = 0.0
    hu[5:9, 30:34, 10:14] = 0.0  # a tumour-like blob outside the liver: must not become tumour
    return hu, liver, tumor


def segmenter(**kw):
    liver = CascadeStage(Band(0.3, 0.6), (-200, 300), (32, 32, 24))  # -50 < HU < 100
    tumor = CascadeStage(Band(0.15, 0.37), (-100, 250), (32, 32, 32))  # -47 < HU < 30
    return TwoStageSegmenter(liver, tumor, margin=2, liver_cleanup=MaskCleanup(), **kw)


def dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_liver_then_tumour_in_the_liver_box():
    hu, liver, tumor = scene()
    net = segmenter()
    with torch.no_grad():
        out = net(torch.as_tensor(hu)[None, None])
    assert out.shape == (1, 1, *hu.shape)
    lab = out[0, 0].numpy()
    assert set(np.unique(lab)) <= {0.0, 1.0, 2.0}
    assert dice(lab >= 1, liver | tumor) > 0.9
    assert dice(lab == 2, tumor) > 0.8
    assert not (lab[5:9, 30:34, 10:14] == 2).any()  # the blob outside the liver box
    assert not ((lab == 2) & ~(lab >= 1)).any()
    # stage 1 saw the whole volume at its fixed size, stage 2 the liver box (+2 voxels) at its size
    assert net.liver_net.sizes == [(32, 32, 24)] and net.tumor_net.sizes == [(32, 32, 32)]


@pytest.mark.parametrize("tumor_in_liver", [True, False])
def test_tumour_outside_the_stage1_liver_is_dropped_unless_allowed(tumor_in_liver):
    hu, liver, tumor = scene()
    net = segmenter(tumor_in_liver=tumor_in_liver)
    net.liver_cleanup = KeepLargestComponent()  # no hole filling
    net.liver_stage.net = Band(0.45, 0.6)  # the liver without its tumour (HU 0 -> 0.4)
    with torch.no_grad():
        lab = net(torch.as_tensor(hu)[None, None])[0, 0].numpy()
    assert (lab[tumor] == 2).mean() < 0.2 if tumor_in_liver else (lab[tumor] == 2).mean() > 0.8


def test_empty_liver_gives_an_empty_map_with_metadata():
    hu = np.full((24, 24, 24), -1000.0, np.float32)
    affine = torch.diag(torch.tensor([1.5, 1.5, 2.5, 1.0], dtype=torch.float64))
    x = MetaTensor(torch.as_tensor(hu)[None, None], affine=affine)
    with torch.no_grad():
        out = segmenter()(x)
    assert isinstance(out, MetaTensor) and (out == 0).all()
    torch.testing.assert_close(out.affine, affine)


def test_vessel_classes_map_to_labels_3_and_4():
    hu, liver, tumor = scene()

    class FourClass(nn.Module):
        def forward(self, x):  # tumour where dark, portal vein in the upper half of the box, aorta nowhere
            t = torch.minimum(x - 0.15, 0.37 - x) * 100
            pv = torch.zeros_like(x) - 50
            pv[..., : x.shape[-1] // 4] = 80
            return torch.cat([-t, t, pv, torch.zeros_like(x) - 50], dim=1)

    net = segmenter()
    net.tumor_stage.net = FourClass()
    with torch.no_grad():
        lab = net(torch.as_tensor(hu)[None, None])[0, 0].numpy()
    assert (lab == 3).any() and not (lab == 4).any() and (lab == 2).any()


def test_prepare_batch_with_prior():
    batch = {"image": torch.zeros(2, 1, 4, 4, 4), "label": torch.ones(2, 1, 4, 4, 4), "liver": torch.ones(2, 1, 4, 4, 4),
             "tumor_fraction_prior": torch.tensor([0.1, float("nan")], dtype=torch.float64)}
    image, target = PrepareBatchWithPrior()(batch, torch.device("cpu"))
    assert image.shape == (2, 1, 4, 4, 4)
    assert set(target) == {"label", "liver", "tumor_fraction_prior"}
    assert target["tumor_fraction_prior"].dtype == torch.float32 and torch.isnan(target["tumor_fraction_prior"][1])


def test_case_metrics_and_burden():
    ref = np.zeros((1, 10, 10, 10), np.uint8)
    ref[0, 2:8, 2:8, 2:8] = 1
    ref[0, 3:5, 3:5, 3:5] = 2
    assert tumor_burden(ref) == pytest.approx(100 * 8 / 216)
    m = cascade_case_metrics(ref, ref, (1.0, 1.0, 1.0), {1: "liver", 2: "tumor"})
    assert m["liver_dice"] == 1.0 and m["tumor_dice"] == 1.0 and m["tumor_burden_abs_error"] == 0.0
    pred = ref.copy()
    pred[pred == 2] = 1  # tumour missed, liver still complete
    m = cascade_case_metrics(pred, ref, (1.0, 1.0, 1.0), {1: "liver", 2: "tumor"})
    assert m["liver_dice"] == 1.0 and m["tumor_dice"] == 0.0 and m["tumor_burden_pct"] == 0.0
    extra = AblationMetrics({2: "tumor"})({"pred_no_ac": MetaTensor(torch.as_tensor(pred)), "label": torch.as_tensor(ref)})
    assert extra["tumor_dice_no_ac"] == 0.0 and "liver_dice_no_ac" not in extra


def test_stage_pieces_match_the_training_transforms():
    """The torch window, resize and crop equal the MONAI transforms training feeds the networks."""
    hu = torch.randn(1, 23, 17, 11) * 400
    expected = Resize((16, 8, 12), mode="trilinear", anti_aliasing=False)(
        ScaleIntensityRange(a_min=-100, a_max=250, b_min=0.0, b_max=1.0, clip=True)(hu))
    got = resize(window(hu[None], -100.0, 250.0), [16, 8, 12])[0]
    torch.testing.assert_close(got, torch.as_tensor(expected), rtol=1e-5, atol=1e-6)
    _, liver, _ = scene()
    classes = []

    class Record(nn.Module):  # records the stage-2 input (the crop), predicts background
        def forward(self, x):
            classes.append(x.shape[2:])
            return torch.cat([torch.ones_like(x), torch.zeros_like(x)], dim=1)

    net = TwoStageSegmenter(CascadeStage(Band(0.3, 0.6), (-200, 300), (40, 36, 30)),
                            CascadeStage(nn.Identity(), (-100, 250), (8, 8, 8)), margin=[3, 1, 2])
    net.tumor_stage = _Crop(classes)
    hu, _, _ = scene()
    with torch.no_grad():
        lab = net(torch.as_tensor(hu)[None, None])[0, 0]
    mask = torch.as_tensor(lab.numpy() >= 1)[None]
    box_shape = CropForeground(margin=[3, 1, 2], allow_smaller=True)(mask).shape[1:]
    assert tuple(classes[0]) == tuple(box_shape)


class _Crop(nn.Module):
    """A stage 2 that records the crop's shape and predicts background."""

    def __init__(self, shapes: list):
        super().__init__()
        self.shapes = shapes

    def forward(self, x):
        self.shapes.append(tuple(x.shape[2:]))
        return torch.zeros(x.shape[0], *x.shape[2:], dtype=torch.int64)


def test_scripted_network_gives_the_eager_output():
    """torch.jit.script compiles the whole cascade (clean-up, data-dependent crop, paste) and agrees."""
    hu, _, _ = scene()
    net = segmenter()
    net.liver_stage.net = nn.Conv3d(1, 2, 1)
    net.tumor_stage.net = nn.Conv3d(1, 2, 1)
    with torch.no_grad():
        net.liver_stage.net.weight.copy_(torch.tensor([8.0, -8.0]).view(2, 1, 1, 1, 1))
        net.liver_stage.net.bias.copy_(torch.tensor([-4.8, 4.8]))  # liver where window(HU) < 0.6
        net.tumor_stage.net.weight.copy_(torch.tensor([8.0, -8.0]).view(2, 1, 1, 1, 1))
        net.tumor_stage.net.bias.copy_(torch.tensor([-2.96, 2.96]))  # tumour where window(HU) < 0.37
        x = torch.as_tensor(hu)[None, None]
        eager = net(x)
        scripted = torch.jit.script(net)(x)
    assert set(torch.unique(eager).tolist()) == {0.0, 1.0, 2.0}
    torch.testing.assert_close(scripted, eager)


def test_model_saver_composes_once_both_stage_checkpoints_exist(tmp_path, caplog):
    """Either stage's trainer may finish second: with one checkpoint missing the saver warns and writes
    nothing; with both it writes the composed state dict, which loads back into the network."""
    import logging

    from liverseg_monai.engines.two_stage import TwoStageModelSaver

    net = segmenter()
    liver_ckpt, tumor_ckpt, out = tmp_path / "model_liver.pt", tmp_path / "model_tumor.pt", tmp_path / "model.pt"
    torch.save(net.tumor_stage.net.state_dict(), tumor_ckpt)
    saver = TwoStageModelSaver(net, str(liver_ckpt), str(tumor_ckpt), str(out))
    with caplog.at_level(logging.WARNING):
        saver()
    assert not out.exists() and str(liver_ckpt) in caplog.text

    # the test stages have no weights: a buffer stands for the liver stage's trained state
    for stage_net in (net.liver_stage.net, net.tumor_stage.net):
        stage_net.register_buffer("w", torch.zeros(3))
    torch.save(net.tumor_stage.net.state_dict(), tumor_ckpt)
    torch.save({"w": torch.tensor([1.0, 2.0, 3.0])}, liver_ckpt)
    saver()
    composed = torch.load(out, weights_only=True)
    assert torch.equal(composed["liver_stage.net.w"], torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(composed["tumor_stage.net.w"], torch.zeros(3))


class ThreeBands(nn.Module):
    """Three-class logits on the [-200, 300] HU window: 2 below 0.46 (< 30 HU), 1 up to 0.6 (100 HU), 0 above."""

    def forward(self, x):
        return torch.cat([(x - 0.6) * 100, torch.minimum(x - 0.46, 0.6 - x) * 100, (0.46 - x) * 100], dim=1)


def test_one_stage_baseline_labels_liver_and_tumour_from_one_network(tmp_path):
    """``baseline_one_network.json``: one network's classes are the labels; its weights are the liver stage's."""
    from liverseg_monai.engines.two_stage import load_two_stage_weights
    from liverseg_monai.errors import InputError
    from liverseg_monai.networks.two_stage import OneStageSegmenter

    hu, liver, tumor = scene()
    net = OneStageSegmenter(CascadeStage(ThreeBands(), (-200, 300), (32, 32, 24)))
    image = MetaTensor(torch.from_numpy(hu)[None, None], meta={"filename_or_obj": "case.nii.gz"})
    out = net(image)
    assert out.shape == (1, 1, *hu.shape) and isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "case.nii.gz"
    labels = out[0, 0].numpy()
    assert dice(labels == 2, tumor | (hu == 0)) > 0.8  # every dark blob is tumour: no liver box restricts it
    assert dice(labels >= 1, liver | (hu == 0)) > 0.8
    # weights: the liver stage's checkpoint alone (no composed model.pt, no tumour stage)
    conv = OneStageSegmenter(CascadeStage(nn.Conv3d(1, 3, 1), (-200, 300), (8, 8, 8)))
    torch.save(conv.stage.net.state_dict(), tmp_path / "model_liver.pt")
    other = OneStageSegmenter(CascadeStage(nn.Conv3d(1, 3, 1), (-200, 300), (8, 8, 8)))
    used = load_two_stage_weights(other, tmp_path / "model.pt", tmp_path / "model_liver.pt", tmp_path / "model_tumor.pt")
    assert used == str(tmp_path / "model_liver.pt")
    assert torch.equal(other.stage.net.weight, conv.stage.net.weight)
    with pytest.raises(InputError, match="no trained weights"):
        load_two_stage_weights(other, tmp_path / "model.pt", tmp_path / "missing.pt", tmp_path / "model_tumor.pt")


def test_one_network_baseline_config_has_three_classes():
    from tools.runner import config_parser

    root = "bundles/liver_tumor_ct_segresnetvae"
    train = config_parser(root, ["inference.json", "train.json", "baseline_one_network.json"])
    assert train["num_classes"] == 3 and train["liver_label_map"]["target_labels"] == [1, 2, 0, 0]
    assert train["liver"]["network_def"]["out_channels"] == 3 and train["stage_network"] == "@liver#network_def"
    evaluate = config_parser(root, ["inference.json", "evaluate.json", "baseline_one_network.json"],
                             {"init_filters": 8, "liver#roi_size": [16, 16, 16]})
    segmenter = evaluate.get_parsed_content("network_def")
    assert type(segmenter).__name__ == "OneStageSegmenter"
    assert segmenter.stage.net(torch.zeros(1, 1, 16, 16, 16)).shape[1] == 3


@pytest.mark.parametrize("margin", [0, 2, [3, 1, 5], [9, 0, 1]])
def test_liver_box_crop_is_the_box_monai_crop_foreground_crops(margin):
    """The crop between the stages is training's CropForegroundd box (same margin, clipped at the edges)."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        mask = torch.zeros(20, 17, 13, dtype=torch.bool)
        lo = rng.integers(0, [15, 12, 8])
        hi = lo + rng.integers(1, 6, size=3)
        mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = torch.as_tensor(rng.random(tuple(hi - lo)) > 0.3)
        mask[lo[0], lo[1], lo[2]] = True
        x0, x1, y0, y1, z0, z1 = LiverBoxCrop(margin)(mask)
        start, end = CropForeground(margin=margin, allow_smaller=True).compute_bounding_box(mask[None])
        assert [x0, y0, z0] == list(start) and [x1, y1, z1] == list(end)
    assert LiverBoxCrop(margin)(torch.zeros(4, 4, 4, dtype=torch.bool)) == []
    with pytest.raises(ValueError, match="one per axis"):
        LiverBoxCrop([1, 2])


@pytest.mark.parametrize("tumor_in_liver", [True, False])
def test_paste_back_maps_stage2_classes_to_labels_inside_the_box(tumor_in_liver):
    """Stage-2 class k > 0 becomes label k + 1 (training's MapLabelValued inverted); class 0 keeps stage 1."""
    liver = torch.zeros(10, 10, 10, dtype=torch.bool)
    liver[2:8, 2:8, 2:8] = True
    labels = liver.float()
    classes = torch.randint(0, 4, (6, 8, 6))
    box = [1, 7, 1, 9, 3, 9]
    out = PasteBack(tumor_in_liver)(labels, liver, classes, box)
    inside = out[1:7, 1:9, 3:9]
    forward_map = MapLabelValue(orig_labels=[0, 1, 2, 3], target_labels=[0, 2, 3, 4])(classes)
    region_liver = liver[1:7, 1:9, 3:9]
    kept = (classes > 0) & ((classes != 1) | region_liver if tumor_in_liver else torch.ones_like(region_liver))
    torch.testing.assert_close(inside[kept], torch.as_tensor(forward_map)[kept].float())
    torch.testing.assert_close(inside[~kept], labels[1:7, 1:9, 3:9][~kept])
    outside = torch.ones_like(labels, dtype=torch.bool)
    outside[1:7, 1:9, 3:9] = False
    torch.testing.assert_close(out[outside], labels[outside])  # nothing outside the box changes
    assert labels.max() == 1  # the input map is not written in place


def test_tumour_config_composes_the_cascade_from_named_components_shared_with_training():
    """inference.json: network_def is liver#stage -> crop_to_liver -> tumor#stage -> paste_back, and the
    crop's margin is the very key training's CropForegroundd reads (train.json + train_tumor.json)."""
    from monai.bundle import ConfigParser

    cfg = Path(__file__).resolve().parents[2] / "bundles" / "liver_tumor_ct_segresnetvae" / "configs"
    parser = ConfigParser()
    parser.read_config([str(cfg / "inference.json")])
    net_def = parser.get("network_def")
    assert [net_def[k] for k in ("liver_stage", "crop", "tumor_stage", "paste")] == [
        "@liver#stage", "@crop_to_liver", "@tumor#stage", "@paste_back"]
    assert parser.get("crop_to_liver")["margin"] == "@tumor#crop_margin"
    train = ConfigParser()
    train.read_config([str(cfg / f) for f in ("inference.json", "train.json", "train_tumor.json")])
    crops = [t for t in train.get("stage_transforms") if t.get("_target_") == "CropForegroundd"]
    assert len(crops) == 1 and crops[0]["margin"] == "@tumor#crop_margin"
    net = parser.get_parsed_content("network_def", instantiate=True)
    assert isinstance(net.crop, LiverBoxCrop) and isinstance(net.paste, PasteBack)
    assert net.margin == parser.get_parsed_content("tumor#crop_margin")
