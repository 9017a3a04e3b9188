"""CT inference preprocessing moves the volume to ``@device`` right after reading and validating it (issue
19 point 1): orientation, spacing/resize, windowing, the inverse, argmax and clean-up then run there.
Training keeps it on the CPU (its loader workers cannot hold CUDA tensors)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

REPO = Path(__file__).resolve().parents[2]
LIVER = REPO / "bundles" / "liver_ct_unet_segmentation" / "configs"
TUMOUR = REPO / "bundles" / "liver_tumor_ct_segresnetvae" / "configs"


def _parser(files, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser["bundle_root"] = str(REPO / "bundles" / "none")  # no trained_with: the defaults
    for k, v in overrides.items():
        parser[k] = v
    return parser


def _steps(parser: ConfigParser, key: str) -> list[dict]:
    return parser.get(key)["transforms"] if isinstance(parser.get(key), dict) else parser.get(key)


@pytest.mark.parametrize("configs, key, expected", [
    ([LIVER / "inference.json"], "preprocessing", "@device"),
    ([LIVER / "train.json"], "volume_transforms", None),
    ([TUMOUR / "inference.json"], "preprocessing", "@device"),
    ([TUMOUR / "inference.json", TUMOUR / "train.json"], "preprocessing", None),
])
def test_the_volume_moves_to_the_device_after_the_check(configs, key, expected):
    parser = _parser(configs)
    targets = [t["_target_"] if isinstance(t, dict) else t for t in _steps(parser, key)]
    check = next(i for i, t in enumerate(targets) if str(t).endswith("CheckCTImaged"))
    move = _steps(parser, key)[check + 1]
    assert move["_target_"] == "EnsureTyped" and move["device"] == "@preprocessing_device"
    assert targets[check + 2] == "Orientationd"  # everything spatial comes after the move
    assert parser.get("preprocessing_device") == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_liver_preprocessing_on_the_gpu_equals_the_cpu(tmp_path):
    ct = np.random.default_rng(0).integers(-1000, 1000, (96, 80, 24)).astype(np.int16)
    nib.save(nib.Nifti1Image(ct, np.diag([0.8, 0.8, 2.5, 1.0])), str(tmp_path / "ct.nii.gz"))
    out = {}
    for device in ("cpu", "cuda"):
        parser = _parser([LIVER / "inference.json"], device=f"$torch.device('{device}')")
        parser["preprocessing#transforms#0#reader"] = "NibabelReader"
        image = parser.get_parsed_content("preprocessing")({"image": str(tmp_path / "ct.nii.gz")})["image"]
        assert image.device.type == device
        out[device] = image.cpu()
    torch.testing.assert_close(out["cuda"], out["cpu"], atol=1e-4, rtol=1e-4)
