import pytest

from liverseg_monai.engines.checkpoints import latest_checkpoint, require_checkpoint
from liverseg_monai.errors import InputError


def test_latest_checkpoint_by_epoch_number(tmp_path):
    assert latest_checkpoint(tmp_path) == ""
    for n in (2, 10, 9):
        (tmp_path / f"checkpoint_epoch={n}.pt").write_bytes(b"")
    assert latest_checkpoint(tmp_path).endswith("checkpoint_epoch=10.pt")


def test_require_checkpoint(tmp_path):
    with pytest.raises(InputError, match="no trained weights"):
        require_checkpoint(tmp_path / "model.pt")
    (tmp_path / "w.pt").write_bytes(b"")
    assert require_checkpoint(tmp_path / "model.pt", tmp_path / "w.pt").endswith("w.pt")
