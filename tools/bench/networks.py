"""Our bundles' networks against segmentation_models_pytorch (issue 11, item 4).

The networks exactly as the bundles' ``inference.json`` build them, against ``smp.Unet`` and
``smp.DeepLabV3Plus`` with ResNet-50 encoders (``encoder_weights=None``: nothing downloaded), random
weights, the same input batch: forward time (best of ``repeat`` after a warm-up) and parameter
counts. ``segmentation_models_pytorch`` is the ``bench`` extra (``pip install -e .[bench]``).
"""

from __future__ import annotations

import torch

from tools.bench.common import BUNDLES, autocast, param_count, timed
from tools.runner import config_parser


def _bundle_network(bundle: str) -> torch.nn.Module:
    return config_parser(BUNDLES / bundle, ["inference.json"]).get_parsed_content("network_def")


def scenario_networks(work=None, size: int = 256, batch: int = 4, repeat: int = 3, device: str = "cpu",
                      amp: bool = False, channels_last: bool = False) -> dict:
    import segmentation_models_pytorch as smp  # the bench extra

    specs = [
        ("U-Net, ResNet-50 encoder", "liver_ct_unet_segmentation", "smp.Unet('resnet50')",
         lambda: smp.Unet("resnet50", encoder_weights=None, in_channels=1, classes=2), 1),
        ("DeepLabV3+, ResNet-50 encoder (ours: deformable ASPP)", "liver_pathology_deeplab_segmentation",
         "smp.DeepLabV3Plus('resnet50')",
         lambda: smp.DeepLabV3Plus("resnet50", encoder_weights=None, in_channels=3, classes=7), 3),
    ]
    rows = []
    for name, bundle, ref_name, make_ref, channels in specs:
        try:
            torch.manual_seed(0)
            ours = _bundle_network(bundle).eval().to(device)
            ref = make_ref().eval().to(device)
        except Exception as err:  # a bundle missing or configured differently: say so
            rows.append({"network": name, "error": f"{type(err).__name__}: {err}"})
            continue
        x = torch.randn(batch, channels, size, size, device=device)
        if channels_last:
            ours, ref = ours.to(memory_format=torch.channels_last), ref.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)

        def run(net, x=x):
            with torch.inference_mode(), autocast(device, amp):
                return net(x)

        run(ours), run(ref)  # warm-up
        t_ours = min(timed(lambda: run(ours), device)[0] for _ in range(repeat))  # noqa: B023
        t_ref = min(timed(lambda: run(ref), device)[0] for _ in range(repeat))  # noqa: B023
        rows.append({"network": name, "bundle": bundle, "reference": ref_name, "input": [batch, channels, size, size],
                     "ours_s": t_ours, "smp_s": t_ref, "time_ratio": t_ours / t_ref,
                     "ours_params_m": param_count(ours) / 1e6, "smp_params_m": param_count(ref) / 1e6})
    return {"rows": rows, "device": device, "amp": amp, "channels_last": channels_last, "repeat": repeat,
            "smp": smp.__version__}
