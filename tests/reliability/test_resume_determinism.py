"""Faults lose nothing and results are reproducible (liver CT bundle, DeepLab histopathology bundle).

- training killed with SIGKILL mid-epoch resumes from its last checkpoint and ends with the same
  weights as an uninterrupted run (CPU, fixed seed, num_workers=0);
- the same seed gives identical inference outputs.
"""

import os
import signal
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from liverseg_monai.data.synth.histo import synth_histo
from liverseg_monai.data.synth.lits import synth_lits
from tools.runner import bundle_command, copy_bundle, run_stage

TINY = {"spatial_size": [32, 32], "samples_per_volume": 2, "batch_size": 2, "num_workers": 0, "max_epochs": 3,
        "learning_rate": 1e-3}


# DeepLab at smoke scale (ResNet-10 encoder, 32-channel deformable ASPP and decoder, 64 px patches)
DEEPLAB_TINY = {"encoder": "resnet10", "aspp_channels": 32, "decoder_channels": 32, "patch_size": [64, 64],
                "batch_size": 4, "patches_per_tile": 4, "num_workers": 0, "max_epochs": 3, "val_interval": 1}


def _final_weights(root: Path) -> dict:
    ckpt = torch.load(root / "models" / "checkpoint_epoch=3.pt", weights_only=True, map_location="cpu")
    return ckpt["model"]


def _kill_mid_epoch_2_then_resume(bundle: str, configs: list[str], data: Path, tmp_path: Path, overrides: dict):
    """Train uninterrupted; train again, SIGKILL once epoch 2 is iterating, resume; compare the weights."""
    stage = {"name": "train", "config": configs, "overrides": overrides}
    straight = copy_bundle(bundle, tmp_path / "straight")
    run_stage(stage, straight, data, tmp_path / "w1")

    killed = copy_bundle(bundle, tmp_path / "killed")
    cmd = bundle_command(killed, configs, data, tmp_path / "w2" / "train", overrides)
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 600
    # wait until epoch 1's checkpoint exists and epoch 2 has started iterating, then kill -9
    while time.time() < deadline and proc.poll() is None:
        text = (tmp_path / "killed.log").read_text()
        if (killed / "models" / "checkpoint_epoch=1.pt").exists() and "Epoch: 2/3, Iter: 1/" in text:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed mid-epoch"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    log.close()
    assert not (killed / "models" / "checkpoint_epoch=3.pt").exists()

    run_stage(stage, killed, data, tmp_path / "w3")
    a, b = _final_weights(straight), _final_weights(killed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(tmp_path):
    data = tmp_path / "data"
    synth_lits(data, seed=4, n=8, size=(32, 32, 16))
    _kill_mid_epoch_2_then_resume("liver_ct_unet_segmentation", ["train.json"], data, tmp_path, TINY)


def test_deeplab_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(tmp_path):
    """The histopathology bundle: random patches, stain jitter, flips and rotations, AdamW with a
    polynomial learning-rate schedule; its ``EpochSeeder`` makes the resumed epochs draw the same numbers."""
    data = tmp_path / "data"
    synth_histo(data, seed=4, n=8, size=64)
    _kill_mid_epoch_2_then_resume("liver_pathology_deeplab_segmentation", ["inference.json", "train.json"], data,
                                  tmp_path, DEEPLAB_TINY)


def test_same_seed_same_inference_output(tmp_path):
    data = tmp_path / "data"
    synth_lits(data, seed=5, n=4, size=(32, 32, 16))
    root = copy_bundle("liver_ct_unet_segmentation", tmp_path / "bundle")
    run_stage({"name": "train", "config": ["train.json"], "overrides": {**TINY, "max_epochs": 1}}, root, data, tmp_path)
    outs = []
    for run in ("a", "b"):
        run_stage({"name": "infer", "config": ["inference.json"], "output_dir": f"infer_{run}",
                   "overrides": {"spatial_size": [32, 32]}}, root, data, tmp_path)
        outs.append(sorted((tmp_path / f"infer_{run}").glob("*_seg.nii.gz")))
    assert len(outs[0]) == 1
    for x, y in zip(*outs):
        assert np.array_equal(np.asarray(nib.load(x).dataobj), np.asarray(nib.load(y).dataobj))
        assert np.array_equal(nib.load(x).affine, nib.load(y).affine)
