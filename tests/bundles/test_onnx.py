"""ONNX export (`monai.bundle onnx_export`) checked against onnxruntime, for bundles whose recipe has
an ``onnx`` section (the U-Net and the DeepLab, issue 9)."""

import subprocess

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from tests.bundles import harness
from tools.recipes import list_recipes, load_recipe
from tools.runner import bundle_command, copy_bundle

ONNX_BUNDLES = [b for b in list_recipes() if b in harness.bundle_names() and load_recipe(b).get("onnx")]


def test_the_unet_and_the_deeplab_are_exported():
    expected = {"liver_ct_unet_segmentation", "liver_pathology_deeplab_segmentation"} & set(harness.bundle_names())
    assert expected <= set(ONNX_BUNDLES)


@pytest.mark.parametrize("bundle", ONNX_BUNDLES)
def test_onnx_matches_pytorch(bundle, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a dev dependency")
    spec = load_recipe(bundle)["onnx"]
    root = copy_bundle(bundle, tmp_path / bundle)
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / spec.get("config", "inference.json")))
    parser["bundle_root"] = str(root)
    for k, v in (spec.get("overrides") or {}).items():
        parser[k] = v
    torch.manual_seed(0)
    net = parser.get_parsed_content(spec.get("net_id", "network_def"))
    torch.save(net.state_dict(), tmp_path / "model.pt")
    cmd = bundle_command(root, spec.get("config", "inference.json"), tmp_path, tmp_path / "out", spec.get("overrides"),
                         verb="onnx_export")
    cmd.insert(4, spec.get("net_id", "network_def"))
    cmd += ["--filepath", str(tmp_path / "model.onnx"), "--ckpt_file", str(tmp_path / "model.pt"),
            "--meta_file", str(root / "configs" / "metadata.json"),
            "--input_shape", repr(list(spec["input_shape"])), "--use_trace", "True"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    x = torch.randn(*spec["input_shape"])
    net.eval()
    with torch.no_grad():
        expected = net(x)
    expected = expected[0] if isinstance(expected, tuple | list) else expected
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert got.shape == tuple(expected.shape)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-3, atol=1e-3)
