"""torchrun with two CPU processes (gloo) on the liver CT bundle's multi_gpu_train.json."""

import os
import subprocess
import sys

import torch

from liverseg_monai.data.synth.lits import synth_lits
from liverseg_monai.recipes import bundle_command, copy_bundle


def test_torchrun_two_ranks_end_with_identical_weights(tmp_path):
    data = tmp_path / "data"
    synth_lits(data, seed=2, n=10, size=(40, 40, 16))  # two validation cases: one per rank
    root = copy_bundle("liver_ct_unet_segmentation", tmp_path / "bundle")
    save_each_rank = (
        "$torch.save(@network.module.state_dict(), @ckpt_dir + '/rank' + str(dist.get_rank()) + '.pt')"
    )
    cmd = bundle_command(
        root, ["train.json", "multi_gpu_train.json"], data, tmp_path / "out",
        {"max_epochs": 1, "spatial_size": [32, 32], "samples_per_volume": 2, "batch_size": 2, "num_workers": 0,
         "finalize": [save_each_rank, "$dist.destroy_process_group()"]},
    )
    # python -m monai.bundle ... -> torchrun --nproc_per_node=2 -m monai.bundle ...
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533"] + cmd[1:]
    # two ranks on two cores: one thread each, or they oversubscribe the CPU and crawl
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-6000:]
    w0 = torch.load(root / "models" / "rank0.pt", weights_only=True)
    w1 = torch.load(root / "models" / "rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    for k in w0:
        torch.testing.assert_close(w0[k], w1[k], rtol=0, atol=0, msg=k)
    assert (root / "models" / "model.pt").is_file()
