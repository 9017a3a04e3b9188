import pytest

from liverseg_monai.data import load_datalist
from liverseg_monai.data.prepare.lits import prepare_lits
from liverseg_monai.data.synth.lits import synth_lits
from liverseg_monai.errors import InputError


def _official_layout(tmp_path, n=10):
    synth_lits(tmp_path / "synth", seed=0, n=n, size=(16, 16, 8))
    src = tmp_path / "LiTS"
    for i in range(n):
        batch = src / ("Training Batch 1" if i < n // 2 else "Training Batch 2")
        batch.mkdir(parents=True, exist_ok=True)
        for stem in ("volume", "segmentation"):
            (batch / f"{stem}-{i}.nii.gz").write_bytes((tmp_path / "synth" / f"{stem}-{i}.nii.gz").read_bytes())
    return src


def test_split_is_seeded_70_20_10_and_case_level(tmp_path):
    src = _official_layout(tmp_path)
    prepare_lits(src, tmp_path / "a", seed=1)
    prepare_lits(src, tmp_path / "b", seed=1)
    parts = {k: load_datalist(tmp_path / "a", k, require=("image", "label")) for k in ("training", "validation", "testing")}
    assert [len(v) for v in parts.values()] == [7, 2, 1]
    names = [i["image"].split("/")[-1] for v in parts.values() for i in v]
    assert sorted(names) == sorted(f"volume-{i}.nii.gz" for i in range(10))
    for item in parts["training"] + parts["validation"]:
        assert item["image"].split("volume-")[1] == item["label"].split("segmentation-")[1]
    assert (tmp_path / "a" / "dataset.json").read_text() == (tmp_path / "b" / "dataset.json").read_text()
    prepare_lits(src, tmp_path / "c", seed=2)
    assert (tmp_path / "a" / "dataset.json").read_text() != (tmp_path / "c" / "dataset.json").read_text()


def test_missing_segmentation_is_named(tmp_path):
    src = _official_layout(tmp_path, n=4)
    (src / "Training Batch 2" / "segmentation-3.nii.gz").unlink()
    with pytest.raises(InputError, match="segmentation-3"):
        prepare_lits(src, tmp_path / "out")
