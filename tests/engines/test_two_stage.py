import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, FillHoles, KeepLargestConnectedComponent
from torch import nn

from liverseg_monai.engines.two_stage import (
    AblationMetrics,
    PrepareBatchWithPrior,
    TwoStageSegmenter,
    cascade_case_metrics,
    tumor_burden,
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
    liver_net = Band(0.3, 0.6)  # liver window (-200, 300): -50 < HU < 100
    tumor_net = Band(0.15, 0.37)  # tumour window (-100, 250): -47 < HU < 30
    post = Compose([KeepLargestConnectedComponent(applied_labels=[1]), FillHoles(applied_labels=[1])])
    return TwoStageSegmenter(liver_net, tumor_net, liver_size=(32, 32, 24), tumor_size=(32, 32, 32),
                             margin=2, liver_postprocessing=post, **kw)


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
    net.liver_postprocessing = KeepLargestConnectedComponent(applied_labels=[1])  # no hole filling
    net.liver_net = Band(0.45, 0.6)  # the liver without its tumour (HU 0 -> 0.4)
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
    net.tumor_net = FourClass()
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
