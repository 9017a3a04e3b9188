"""Bad inputs to the two-stage liver/tumour bundle: a clear error naming the file, no partial output."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from liverseg_monai.data.clinical import with_severity_prior
from liverseg_monai.data.synth.lits import save_nifti
from liverseg_monai.errors import InputError
from tools.runner import copy_bundle

SMALL = {"spacing": [8.0, 8.0, 10.0], "liver#roi_size": [32, 32, 16], "tumor#roi_size": [16, 16, 16], "init_filters": 8}
AFFINE = np.diag([8.0, 8.0, 10.0, 1.0])


def _case(root: Path, name: str, ct: np.ndarray | None = None, label: np.ndarray | None = None) -> dict:
    ct = np.full((24, 24, 12), -100, np.int16) if ct is None else ct
    save_nifti(root / f"{name}.nii.gz", ct, AFFINE, ct.dtype)
    item = {"image": f"{name}.nii.gz", "patient_id": name}
    if label is not None:
        save_nifti(root / f"{name}_seg.nii.gz", label, AFFINE, np.uint8)
        item["label"] = f"{name}_seg.nii.gz"
    return item


def _inference(tmp_path: Path, testing: list, checkpoints=("liver", "tumor")) -> tuple[ConfigParser, Path]:
    root = copy_bundle("liver_tumor_ct_segresnetvae", tmp_path / "bundle")
    data = tmp_path / "data"
    (data / "dataset.json").write_text(json.dumps({"testing": testing}))
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    out = tmp_path / "out"
    for k, v in {**SMALL, "bundle_root": str(root), "dataset_dir": str(data), "output_dir": str(out)}.items():
        parser[k] = v
    for stage in checkpoints:
        torch.save(parser.get_parsed_content(f"{stage}#network_def").state_dict(), root / "models" / f"model_{stage}.pt")
    return parser, out


def _input_error(exc: BaseException) -> InputError | None:
    """The InputError in an exception chain (MONAI wraps errors raised in config expressions)."""
    while exc is not None and not isinstance(exc, InputError):
        exc = exc.__cause__ or exc.__context__
    return exc


def _run(parser: ConfigParser) -> None:
    parser.get_parsed_content("initialize")
    parser.get_parsed_content("evaluator").run()


def test_missing_tumour_checkpoint_is_refused(tmp_path):
    (tmp_path / "data").mkdir()
    item = _case(tmp_path / "data", "ct0")
    parser, out = _inference(tmp_path, [item], checkpoints=("liver",))
    with pytest.raises(Exception) as err:
        _run(parser)
    found = _input_error(err.value)
    assert found is not None and "model_tumor.pt" in str(found) and "no trained weights" in str(found)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("problem, match", [("truncated", "ct0.nii.gz"), ("nan", "NaN"), ("2d", "3D volume")])
def test_bad_ct_names_the_file_and_writes_nothing(tmp_path, problem, match):
    data = tmp_path / "data"
    data.mkdir()
    if problem == "nan":
        item = _case(data, "ct0", ct=np.full((24, 24, 12), np.nan, np.float32))
    elif problem == "2d":
        item = _case(data, "ct0", ct=np.zeros((24, 24, 1), np.int16))
    else:
        item = _case(data, "ct0")
        raw = (data / "ct0.nii.gz").read_bytes()
        (data / "ct0.nii.gz").write_bytes(raw[: len(raw) // 3])
    parser, out = _inference(tmp_path, [item])
    with pytest.raises(Exception) as err:
        _run(parser)
    found = _input_error(err.value)
    assert found is not None, f"no InputError behind {err.value!r}"
    assert "ct0" in str(found) and match.lower() in str(found).lower()
    assert not list(out.glob("*_seg.nii.gz")) if out.exists() else True


def test_label_with_unknown_classes_is_refused_in_training(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    label = np.zeros((24, 24, 12), np.uint8)
    label[5:10, 5:10, 3:6] = 7
    item = _case(data, "ct0", label=label)
    parser = ConfigParser()
    configs = Path(__file__).resolve().parents[2] / "bundles" / "liver_tumor_ct_segresnetvae" / "configs"
    parser.read_config([str(configs / "inference.json"), str(configs / "train.json")])  # training stacks on inference
    parser["preprocessing#transforms#0#reader"] = "NibabelReader"
    chain = parser.get_parsed_content("validate#preprocessing")
    with pytest.raises(Exception) as err:
        chain({"image": str(data / item["image"]), "label": str(data / item["label"])})
    found = _input_error(err.value)
    assert found is not None and "ct0" in str(found)


def test_unreadable_clinical_table(tmp_path):
    table = tmp_path / "clinical.csv"
    table.write_bytes(b"\x00\x01\x02\xff\xfe garbage")
    with pytest.raises(InputError, match="clinical.csv"):
        with_severity_prior([{"image": "a.nii.gz", "label": "a_seg.nii.gz", "patient_id": "P1"}], table)


def test_clinical_table_without_the_group_column(tmp_path):
    label = np.zeros((8, 8, 8), np.uint8)
    label[2:6, 2:6, 2:6] = 1
    save_nifti(tmp_path / "a_seg.nii.gz", label, np.eye(4), np.uint8)
    table = tmp_path / "clinical.csv"
    table.write_text("patient_id,Okuda\nP1,1\n")
    with pytest.raises(InputError, match="clinical.csv.*no column 'BCLC'"):
        with_severity_prior([{"image": "a.nii.gz", "label": str(tmp_path / "a_seg.nii.gz"), "patient_id": "P1"}], table, "BCLC")
