import json

import pytest

from liverseg_monai.data import load_datalist, write_datalist
from liverseg_monai.errors import DatasetError


def _dataset(tmp_path, content, files=("a.nii.gz", "b.nii.gz", "c.nii.gz")):
    for f in files:
        (tmp_path / f).write_bytes(b"x")
    (tmp_path / "dataset.json").write_text(json.dumps(content))
    return tmp_path


def test_paths_are_resolved_and_strings_become_items(tmp_path):
    d = _dataset(tmp_path, {"training": [{"image": "a.nii.gz", "label": "b.nii.gz", "fold": 0}], "testing": ["c.nii.gz"]})
    train = load_datalist(d, "training", require=("image", "label"))
    assert train[0]["image"] == str((tmp_path / "a.nii.gz").resolve()) and train[0]["fold"] == 0
    assert load_datalist(d, "testing") == [{"image": str((tmp_path / "c.nii.gz").resolve())}]


def test_folds_give_validation_and_exclude_it_from_training(tmp_path):
    items = [{"image": "a.nii.gz", "fold": 0}, {"image": "b.nii.gz", "fold": 1}, {"image": "c.nii.gz", "fold": 1}]
    d = _dataset(tmp_path, {"training": items})
    assert [i["image"][-8:] for i in load_datalist(d, "validation", fold=1)] == ["b.nii.gz", "c.nii.gz"]
    assert [i["image"][-8:] for i in load_datalist(d, "training", fold=1)] == ["a.nii.gz"]


@pytest.mark.parametrize(
    "content, message",
    [
        ({}, "has no 'training' items"),
        ({"training": [{"image": "../outside.nii.gz"}]}, "outside the dataset folder"),
        ({"training": [{"image": "/abs/a.nii.gz"}]}, "absolute"),
        ({"training": [{"image": "missing.nii.gz"}]}, "does not exist"),
        ({"training": [{"label": "a.nii.gz"}]}, "lacks image"),
        ({"training": [3]}, "must be an object"),
    ],
)
def test_contract_breaches_name_the_file(tmp_path, content, message):
    d = _dataset(tmp_path, content)
    with pytest.raises(DatasetError, match=message) as err:
        load_datalist(d, "training")
    assert str(tmp_path) in str(err.value)


def test_missing_and_invalid_dataset_json(tmp_path):
    with pytest.raises(DatasetError, match="dataset.json.*missing"):
        load_datalist(tmp_path, "training")
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_datalist(tmp_path, "training")


def test_write_datalist_round_trip(tmp_path):
    _dataset(tmp_path, {})
    write_datalist(tmp_path, {"testing": ["a.nii.gz"]})
    assert load_datalist(tmp_path, "testing")[0]["image"].endswith("a.nii.gz")
    assert not list(tmp_path.glob(".*tmp*")), "no temporary files left behind"
