import csv

import numpy as np
import pytest
import torch
from PIL import Image

from liverseg_monai.errors import InputError
from liverseg_monai.metrics.instance import instance_ious
from liverseg_monai.transforms.clump_splitting import (
    ClumpSplittingd,
    apply_review,
    bootstrap_labels,
    concave_points,
    droplet_candidates,
    ellipse_fit_iou,
    main,
    segment_droplets,
    solidity,
    split_clump,
)

PINK = (232, 158, 190)


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _tile(discs, shape=(96, 96), glass=False):
    img = np.empty((*shape, 3), np.uint8)
    img[:] = PINK
    img[::7, ::5] = (90, 60, 140)  # nuclei-like dark dots
    truth = np.zeros(shape, np.int32)
    for i, (cy, cx, r) in enumerate(discs, start=1):
        m = _disc(shape, cy, cx, r)
        truth[m & (truth == 0)] = i
        img[m] = 248
    if glass:
        img[:, -20:] = 246
    return img, truth


def test_shape_measures():
    disc = _disc((40, 50), 20, 20, 12)
    assert solidity(disc) > 0.95 and ellipse_fit_iou(disc) > 0.9
    pair = disc | _disc((40, 50), 20, 36, 10)
    assert solidity(pair) < 0.95
    pts = concave_points(np.pad(pair, 3))
    assert len(pts) == 2
    assert all(abs(p[1] - 3 - 29) < 3 for p in pts)  # at the neck between the two discs


def test_two_overlapping_droplets_are_split():
    img, truth = _tile([(48, 36, 12), (48, 56, 11)])
    pred = segment_droplets(img)
    iou, pids, rids = instance_ious(pred, truth)
    assert len(pids) == 2
    assert (iou.max(0) > 0.8).all()


def test_chain_of_three_and_singles():
    img, truth = _tile([(30, 20, 9), (30, 36, 9), (30, 52, 9), (70, 70, 8)])
    pred, table = segment_droplets(img, return_table=True)
    iou, pids, rids = instance_ious(pred, truth)
    assert len(pids) == 4 and (iou.max(0) > 0.7).all()
    assert {row["method"] for row in table} <= {"single", "split", "watershed"}


def test_glass_is_background():
    img, truth = _tile([(40, 30, 10)], glass=True)
    candidates, tissue = droplet_candidates(img, max_clump_area=1000)
    assert not candidates[:, -15:].any() and not tissue[:, -15:].any()
    assert candidates[40, 30] and tissue[40, 30]


def test_watershed_fallback_only_when_needed():
    pair = _disc((60, 60), 30, 22, 12) | _disc((60, 60), 30, 40, 12)
    parts = split_clump(pair)
    assert len(parts) == 2 and parts[0][1] == "split"
    assert len(split_clump(pair, fallback=False)) == 2


def test_monai_transform():
    img, _ = _tile([(48, 36, 12), (48, 56, 11)])
    chw = torch.from_numpy(img.transpose(2, 0, 1).astype(np.float32) / 255)
    out = ClumpSplittingd("image", output_key="baseline")({"image": chw})
    assert out["baseline"].shape == (1, 96, 96) and int(out["baseline"].max()) == 2


def test_bootstrap_review_cycle(tmp_path):
    src = tmp_path / "tiles"
    src.mkdir()
    for i in range(2):
        img, _ = _tile([(30, 30, 10), (30, 48, 9), (70, 60, 8)])
        Image.fromarray(img).save(src / f"t{i}.png")
    review = bootstrap_labels(src, tmp_path / "boot")
    assert (tmp_path / "boot" / "review" / "t0.png").is_file()
    rows = list(csv.DictReader(open(review)))
    assert len(rows) == 6 and all(r["keep"] == "1" for r in rows)
    rows[0]["keep"] = "remove"
    with open(review, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    ds = apply_review(review, tmp_path / "dataset", validation_fraction=0.5, mpp=0.5)
    labs = sorted((tmp_path / "dataset" / "instances").glob("*.png"))
    counts = sorted(int(np.asarray(Image.open(p)).max()) for p in labs)
    assert counts == [2, 3]  # one droplet removed, the rest renumbered
    assert ds.is_file()


def test_cli(tmp_path, capsys):
    src = tmp_path / "tiles"
    src.mkdir()
    Image.fromarray(_tile([(30, 30, 10)])[0]).save(src / "a.png")
    assert main(["bootstrap", str(src), str(tmp_path / "out")]) == 0
    assert main(["apply", str(tmp_path / "missing.csv"), str(tmp_path / "ds")]) == 2
    assert "missing.csv" in capsys.readouterr().out


def test_bad_review_values(tmp_path):
    src = tmp_path / "tiles"
    src.mkdir()
    Image.fromarray(_tile([(30, 30, 10)])[0]).save(src / "a.png")
    review = bootstrap_labels(src, tmp_path / "boot", montage=False)
    text = review.read_text().replace(",1\n", ",maybe\n")
    review.write_text(text)
    with pytest.raises(InputError, match="keep must be"):
        apply_review(review, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
