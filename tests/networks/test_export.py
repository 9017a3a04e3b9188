import subprocess
import sys

import pytest
import torch

from liverseg_monai.errors import InputError
from liverseg_monai.networks.deeplab import deeplab_v3_plus
from liverseg_monai.networks.export import load_torchscript

# a fresh interpreter that has imported neither torchvision nor liverseg_monai.networks
_CHILD = """
import sys, torch
assert "torchvision" not in sys.modules
from liverseg_monai.networks.export import load_torchscript
net = load_torchscript(sys.argv[1])
x = torch.load(sys.argv[2])
with torch.no_grad():
    torch.save(net(x), sys.argv[3])
"""


def test_load_torchscript_in_fresh_process(tmp_path):
    torch.manual_seed(0)
    net = deeplab_v3_plus(3, 3, encoder="resnet10", aspp_channels=8, decoder_channels=8).eval()
    path = tmp_path / "model.ts"
    torch.jit.script(net).save(str(path))
    x = torch.randn(1, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "y.pt"), net(x), rtol=1e-4, atol=1e-5)


def test_load_torchscript_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_torchscript(tmp_path / "missing.ts")
    bad = tmp_path / "bad.ts"
    bad.write_bytes(b"not a zip archive")
    with pytest.raises(InputError, match="bad.ts"):
        load_torchscript(bad)
