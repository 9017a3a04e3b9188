"""BCSS and GlaS official layouts -> dataset folders, on tiny fake copies in the official naming."""

import json

import numpy as np
import pytest
from PIL import Image

from liverseg_monai.cli import main as cli_main
from liverseg_monai.data.datalist import load_datalist
from liverseg_monai.data.prepare.bcss import prepare_bcss
from liverseg_monai.data.prepare.glas import prepare_glas
from liverseg_monai.data.readers_pathology import (
    BCSS_CODES,
    bcss_case,
    bcss_lookup,
    bcss_site,
    find_glas_cases,
    read_glas_grades,
)

# (file stem, code pattern): every ROI is 16x24, a stripe of each listed code
BCSS_ROIS = {
    "TCGA-A1-A0SK-DX1_xmin45749_ymin25055_MPP-0.2500": [1, 2, 3, 0],
    "TCGA-A1-A0SK-DX1_xmin1000_ymin2000_MPP-0.2500": [19, 20, 10, 11],
    "TCGA-A2-A0CM-DX1_xmin18562_ymin56852_MPP-0.2500": [4, 9, 7, 21],
    "TCGA-AR-A1AQ-DX1_xmin10000_ymin20000_MPP-0.2500": [2, 2, 5, 6],
    "TCGA-BH-A18V-DX1_xmin5000_ymin6000_MPP-0.2500": [1, 1, 18, 13],
    "TCGA-OL-A5RW-DX1_xmin1000_ymin1000_MPP-0.2500": [1, 2, 3, 4],
    "TCGA-S3-AA10-DX1_xmin2000_ymin3000_MPP-0.2500": [3, 3, 0, 0],
}


def codes_mask(codes, h=16, w=24):
    mask = np.zeros((h, w), np.uint8)
    for k, c in enumerate(codes):
        mask[:, k * w // len(codes) : (k + 1) * w // len(codes)] = c
    return mask


def fake_bcss(root, image_dir="rgbs_colorNormalized", rois=BCSS_ROIS):
    (root / image_dir).mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for stem, codes in rois.items():
        Image.fromarray(rng.integers(0, 255, (16, 24, 3), dtype=np.uint8)).save(root / image_dir / f"{stem}.png")
        Image.fromarray(codes_mask(codes)).save(root / "masks" / f"{stem}.png")
    (root / "gtruth_codes.tsv").write_text("label\tGT_code\n" + "".join(f"{n}\t{c}\n" for c, n in BCSS_CODES.items()))
    return root


def test_bcss_names_and_grouping():
    name = "TCGA-OL-A5RW-DX1_xmin1000_ymin1000_MPP-0.2500.png"
    assert bcss_site(name) == "OL" and bcss_case(name) == "TCGA-OL-A5RW"
    lut, names = bcss_lookup("main")
    assert names == ["outside_roi", "tumor", "stroma", "inflammatory", "necrosis", "other"]
    assert [lut[c] for c in (0, 7, 1, 19, 20, 2, 3, 10, 11, 4, 9, 21)] == [0, 0, 1, 1, 1, 2, 3, 3, 3, 4, 5, 5]
    lut, names = bcss_lookup({"bg": [0], "tumor": [1], "other": [2]})
    assert lut[1] == 1 and lut[2] == 2 and lut[13] == 2  # unlisted codes go to "other"
    with pytest.raises(ValueError, match="both"):
        bcss_lookup({"a": [1], "b": [1]})


def test_prepare_bcss_institute_split_and_labels(tmp_path):
    src = fake_bcss(tmp_path / "BCSS")
    path = prepare_bcss(src, tmp_path / "out", seed=0)
    content = json.loads(path.read_text())
    assert content["classes"] == ["outside_roi", "tumor", "stroma", "inflammatory", "necrosis", "other"]
    assert content["split"] == "institute"
    test_sites = {bcss_site(it["image"]) for it in content["testing"]}
    assert test_sites == {"OL", "S3"}
    # a patient is never in two splits
    cases = {k: {it["case"] for it in content[k]} for k in ("training", "validation", "testing")}
    assert not (cases["training"] & cases["validation"]) and not (cases["training"] & cases["testing"])
    assert all("fold" in it for it in content["training"])
    n = sum(len(content[k]) for k in ("training", "validation", "testing"))
    assert n == len(BCSS_ROIS)
    # the mask codes are regrouped stripe by stripe
    items = load_datalist(tmp_path / "out", "training") + load_datalist(tmp_path / "out", "validation")
    stem = "TCGA-A1-A0SK-DX1_xmin1000_ymin2000_MPP-0.2500"
    item = next(it for it in items if stem in it["image"])
    label = np.asarray(Image.open(item["label"]))
    np.testing.assert_array_equal(label, codes_mask([1, 1, 3, 3]))
    rgb = np.asarray(Image.open(item["image"]))
    np.testing.assert_array_equal(rgb, np.asarray(Image.open(src / "rgbs_colorNormalized" / f"{stem}.png")))


def test_prepare_bcss_options_tiles_full_grouping_downsample(tmp_path):
    src = fake_bcss(tmp_path / "BCSS", image_dir="images")
    path = prepare_bcss(src, tmp_path / "full", grouping="full", split="random", seed=3)
    content = json.loads(path.read_text())
    assert len(content["classes"]) == 22 and content["split"] == "random"
    item = next(it for k in ("training", "validation", "testing") for it in content[k] if "ymin2000" in it["image"])
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "full" / item["label"])), codes_mask([19, 20, 10, 11]))

    # 8-pixel tiles; tiles mostly outside_roi are dropped (the S3 ROI is half code 0)
    path = prepare_bcss(src, tmp_path / "tiles", tile_size=8, min_annotated=0.6)
    content = json.loads(path.read_text())
    names = [it["image"] for k in ("training", "validation", "testing") for it in content.get(k, [])]
    s3 = [n for n in names if "TCGA-S3" in n]
    assert len(s3) == 2 and all("_x0" in n for n in s3)  # half- and fully outside_roi tiles dropped
    assert all(Image.open(tmp_path / "tiles" / n).size == (8, 8) for n in names)

    grouping = json.dumps({"background": [0, 7], "tumor": [1, 19, 20], "rest": [2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 21]})
    path = prepare_bcss(src, tmp_path / "half", grouping=grouping, downsample=2)
    content = json.loads(path.read_text())
    assert content["classes"] == ["background", "tumor", "rest"]
    item = next(it for k in ("training", "validation", "testing") for it in content.get(k, []) if "ymin2000" in it["image"])
    label = np.asarray(Image.open(tmp_path / "half" / item["label"]))
    assert label.shape == (8, 12)
    np.testing.assert_array_equal(label, codes_mask([1, 1, 2, 2], 8, 12))


def test_prepare_bcss_without_test_sites_falls_back_to_random(tmp_path):
    rois = {k: v for k, v in BCSS_ROIS.items() if "-OL-" not in k and "-S3-" not in k}
    src = fake_bcss(tmp_path / "BCSS", rois=rois)
    content = json.loads(prepare_bcss(src, tmp_path / "out").read_text())
    assert content["split"] == "random" and content["testing"] and content["validation"]


def test_prepare_through_the_cli(tmp_path, capsys):
    src = fake_bcss(tmp_path / "BCSS")
    assert cli_main(["prepare", "bcss", "--src", str(src), "--out", str(tmp_path / "d"), "--grouping", "full"]) == 0
    assert len(json.loads((tmp_path / "d" / "dataset.json").read_text())["classes"]) == 22
    # a second run into the same folder refuses unless asked to overwrite
    assert cli_main(["prepare", "bcss", "--src", str(src), "--out", str(tmp_path / "d")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert cli_main(["prepare", "bcss", "--src", str(src), "--out", str(tmp_path / "d"), "--overwrite", "True"]) == 0
    assert len(json.loads((tmp_path / "d" / "dataset.json").read_text())["classes"]) == 6


# ------------------------------------------------------------------------------------------- GlaS


def glas_anno(h=20, w=30, kind=0):
    anno = np.zeros((h, w), np.uint8)
    anno[2:9, 2:12] = 1
    anno[2:9, 12:20] = 2  # touching gland: only the instance map separates them
    if kind:
        anno[12:18, 5:25] = 3
    return anno


def fake_glas(root, n_train=5, grade_csv=True):
    folder = root / "Warwick QU Dataset (Released 2016_07_08)"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    names = [f"train_{i}" for i in range(1, n_train + 1)] + ["testA_1", "testA_2", "testB_1"]
    for k, name in enumerate(names):
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(folder / f"{name}.bmp")
        Image.fromarray(glas_anno(kind=k % 2)).save(folder / f"{name}_anno.bmp")
    if grade_csv:
        rows = "".join(f"{n},{k + 1},{'benign' if k % 2 else ' malignant'},adenomatous\n" for k, n in enumerate(names))
        (folder / "Grade.csv").write_text("name,patient ID,grade (GlaS),grade (Sirinukunwattana et al. 2015)\n" + rows)
    return root


def test_find_glas_cases_and_grades(tmp_path):
    src = fake_glas(tmp_path / "GlaS")
    cases = find_glas_cases(src)
    assert [c.name for c in cases] == ["train_1", "train_2", "train_3", "train_4", "train_5", "testA_1", "testA_2", "testB_1"]
    assert cases[0].grade == "malignant" and cases[1].grade == "benign"
    grades = read_glas_grades(next(src.iterdir()) / "Grade.csv")
    assert grades["testB_1"] == "benign"


def test_prepare_glas(tmp_path):
    src = fake_glas(tmp_path / "GlaS")
    content = json.loads(prepare_glas(src, tmp_path / "out", seed=0, val_fraction=0.2).read_text())
    assert content["classes"] == ["background", "gland"]
    assert [it["split"] for it in content["testing"]] == ["testA", "testA", "testB"]
    assert len(content["validation"]) == 1 and len(content["training"]) == 4
    assert {it["fold"] for it in content["training"]} == {0, 1, 2, 3}
    item = next(it for it in content["training"] if it["image"].endswith("train_2.png"))
    assert item["grade"] == "benign"
    label = np.asarray(Image.open(tmp_path / "out" / item["label"]))
    inst = np.asarray(Image.open(tmp_path / "out" / item["instance"]))
    np.testing.assert_array_equal(label, (glas_anno(kind=1) > 0).astype(np.uint8))
    assert set(np.unique(inst).tolist()) == {0, 1, 2, 3}
    assert len(np.unique(inst[2:9, 2:20])) == 2  # the touching glands stay two objects
    # labels load through the data contract
    assert len(load_datalist(tmp_path / "out", "testing", require=("image", "label"))) == 3


def test_prepare_glas_without_grades_and_no_validation(tmp_path):
    src = fake_glas(tmp_path / "GlaS", n_train=3, grade_csv=False)
    content = json.loads(prepare_glas(next(src.iterdir()), tmp_path / "out", val_fraction=0).read_text())
    assert "validation" not in content and len(content["training"]) == 3
    assert "grade" not in content["training"][0]
