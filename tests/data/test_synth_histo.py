"""Synthetic H&E tiles: format, determinism, class content, stain variation, speed."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image

from liverseg_monai.data.datalist import load_datalist
from liverseg_monai.data.synth import get_synthesizer
from liverseg_monai.data.synth.histo import HISTO_CLASSES, HistoField, make_histo_tile, synth_histo


def test_tile_shapes_and_dtypes():
    rgb, label = make_histo_tile(np.random.default_rng(3), (96, 128))
    assert rgb.shape == (96, 128, 3) and rgb.dtype == np.uint8
    assert label.shape == (96, 128) and label.dtype == np.uint8
    assert label.max() < len(HISTO_CLASSES)


def test_tile_is_deterministic_per_rng_seed():
    a = make_histo_tile(np.random.default_rng(7), 64)
    b = make_histo_tile(np.random.default_rng(7), 64)
    c = make_histo_tile(np.random.default_rng(8), 64)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_field_renders_without_seams():
    """A window rendered in two halves equals the window rendered at once (slides rely on it)."""
    fld = HistoField(seed=5, scale=1.0, region_px=50.0)
    conc, label = fld.render(100, -40, 64, 80)
    left_c, left_l = fld.render(100, -40, 64, 37)
    right_c, right_l = fld.render(100, -3, 64, 43)
    np.testing.assert_array_equal(label, np.concatenate([left_l, right_l], axis=1))
    np.testing.assert_allclose(conc, np.concatenate([left_c, right_c], axis=1))


@pytest.fixture(scope="module")
def tiles():
    rngs = [np.random.default_rng(i) for i in range(24)]
    return [make_histo_tile(r, 128) for r in rngs]


def test_every_class_occurs_and_tiles_have_several_regions(tiles):
    labels = np.stack([t[1] for t in tiles])
    counts = np.bincount(labels.ravel(), minlength=len(HISTO_CLASSES))
    assert (counts > 0).all(), counts
    assert counts[1] == counts.max()  # parenchyma dominates, as in a liver biopsy
    assert np.median([len(np.unique(t[1])) for t in tiles]) >= 4


def test_hh_and_e_colours(tiles):
    """Nuclei-dense inflammation is darker and bluer than parenchyma; glass is bright."""
    rgb = np.stack([t[0] for t in tiles]).astype(float)
    labels = np.stack([t[1] for t in tiles])
    mean = {c: rgb[labels == c].mean(0) for c in range(len(HISTO_CLASSES))}
    assert mean[0].min() > 200  # glass
    assert mean[5].sum() < mean[1].sum() - 60  # inflammation darker
    assert mean[5][2] - mean[5][0] > mean[1][2] - mean[1][0]  # and bluer (hematoxylin)
    assert mean[1][0] > mean[1][1]  # parenchyma pink: red above green (eosin)
    assert mean[6].sum() > mean[1].sum() + 60  # fat vacuoles are white


def test_classes_are_not_separable_by_pixel_colour(tiles):
    """A nearest-class-mean colour classifier must do badly: classes need texture and context."""
    rgb = np.stack([t[0] for t in tiles]).reshape(-1, 3).astype(float)
    labels = np.stack([t[1] for t in tiles]).ravel()
    means = np.stack([rgb[labels == c].mean(0) for c in range(len(HISTO_CLASSES))])
    pred = np.argmin(((rgb[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    recall = [np.mean(pred[labels == c] == c) for c in range(len(HISTO_CLASSES))]
    assert np.mean(recall) < 0.6, recall


def test_stain_varies_between_tiles(tiles):
    par = [t[0][t[1] == 1].mean(0) for t in tiles if (t[1] == 1).sum() > 500]
    assert np.std(np.stack(par), axis=0).max() > 4.0


def test_synth_histo_layout_and_determinism(tmp_path):
    start = time.perf_counter()
    path = synth_histo(tmp_path / "a", seed=1, n=24, size=128)
    elapsed = time.perf_counter() - start
    assert elapsed < 15, elapsed  # ~1 s on an idle core
    content = json.loads(path.read_text())
    assert content["classes"] == list(HISTO_CLASSES)
    assert [len(content[k]) for k in ("training", "validation", "testing")] == [14, 5, 5]
    train = load_datalist(tmp_path / "a", "training", require=("image", "label"))
    test = load_datalist(tmp_path / "a", "testing", require=("image", "label"))
    img = np.asarray(Image.open(train[0]["image"]))
    lab = np.asarray(Image.open(test[0]["label"]))
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    assert lab.shape == (128, 128) and lab.dtype == np.uint8 and lab.max() < 7
    again = get_synthesizer("histo")(tmp_path / "b", seed=1, n=3, size=128)
    first = json.loads(again.read_text())["training"][0]["image"]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "b" / first)), img)


def _context_features(rgb: np.ndarray, scales=(1, 2, 4, 8)) -> np.ndarray:
    from scipy import ndimage

    od = -np.log(np.clip(rgb.astype(np.float32) / 255, 1 / 255, 1))
    feats = [od]
    for s in scales:
        mean = ndimage.gaussian_filter(od, (s, s, 0))
        feats += [mean, np.sqrt(np.clip(ndimage.gaussian_filter(od**2, (s, s, 0)) - mean**2, 0, None))]
    f = np.concatenate(feats, -1).reshape(-1, 3 * (1 + 2 * len(scales)))
    return np.concatenate([f, f**2, np.ones((len(f), 1), np.float32)], 1)


def test_classes_are_learnable_from_texture_and_context(tiles):
    """A linear model on local texture (multi-scale OD mean/std) beats the same model on pixel colour."""
    train, test = tiles[:16], tiles[16:]
    y = np.concatenate([t[1].ravel() for t in train])
    yt = np.concatenate([t[1].ravel() for t in test])
    recalls = {}
    for name, scales in (("pixel", ()), ("context", (1, 2, 4, 8))):
        X = np.concatenate([_context_features(t[0], scales) for t in train])[::3]
        Xt = np.concatenate([_context_features(t[0], scales) for t in test])
        W = np.linalg.lstsq(X, np.eye(len(HISTO_CLASSES))[y[::3]], rcond=None)[0]
        pred = np.argmax(Xt @ W, 1)
        recalls[name] = np.mean([np.mean(pred[yt == c] == c) for c in np.unique(yt)])
    assert recalls["context"] > recalls["pixel"] + 0.15, recalls


# ------------------------------------------------------------------------------ realism "full"
@pytest.fixture(scope="module")
def full_tiles():
    return [make_histo_tile(np.random.default_rng(100 + i), 128, realism="full") for i in range(12)]


def test_full_realism_every_class_present(full_tiles):
    counts = np.bincount(np.stack([t[1] for t in full_tiles]).ravel(), minlength=len(HISTO_CLASSES))
    assert (counts > 0).all(), counts
    assert counts[1] == counts.max()  # parenchyma dominates


def test_full_realism_nuclei_inside_parenchyma(full_tiles):
    """Dark haematoxylin-rich blobs (thresholded H channel of rgb2hed) are found within parenchyma."""
    from scipy import ndimage
    from skimage.color import rgb2hed

    for rgb, label in full_tiles[:4]:
        hch = rgb2hed(rgb)[..., 0]
        par = label == 1
        if par.sum() < 2000:
            continue
        dark = hch > np.percentile(hch[par], 90)
        blobs, n = ndimage.label(dark & par)
        sizes = np.bincount(blobs.ravel())[1:]
        per_kpx = np.sum(sizes >= 6) / par.sum() * 1000
        assert 0.3 < per_kpx < 6, per_kpx  # hepatocyte nuclei: ~1 per 21 x 21 um cell


def test_full_realism_macrovesicular_vacuole_displaces_nucleus():
    from liverseg_monai.data.synth.lobule import render_lobules

    fld = HistoField(seed=11, scale=1.0, region_px=400.0, region_probs=(0.0, 1.0, 0.0), steatotic_prob=1.0,
                     realism="full", lobule_px=300.0)
    _, label, layout = render_lobules(fld, 0, 0, 256, 256, parts=True)
    assert (label == 6).any() and layout["macro"].any()
    offsets = {True: [], False: []}
    for cid in np.unique(layout["cell"][layout["cell"] >= 0]):
        cell = layout["cell"] == cid
        nuc = cell & layout["nucleus"]
        if cell.sum() < 250 or nuc.sum() < 8 or cell[0].any() or cell[-1].any() or cell[:, 0].any() or cell[:, -1].any():
            continue
        cy, cx = np.argwhere(cell).mean(0)
        ny, nx = np.argwhere(nuc).mean(0)
        offsets[bool(layout["macro"][cell].any())].append(np.hypot(ny - cy, nx - cx) / np.sqrt(cell.sum()))
    assert len(offsets[True]) >= 5 and len(offsets[False]) >= 5
    assert np.median(offsets[True]) > 0.2 > np.median(offsets[False]), offsets


def test_full_realism_deterministic_and_basic_unchanged():
    a = make_histo_tile(np.random.default_rng(5), 64, realism="full")
    b = make_histo_tile(np.random.default_rng(5), 64, realism="full")
    c = make_histo_tile(np.random.default_rng(6), 64, realism="full")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    basic = make_histo_tile(np.random.default_rng(5), 64)
    assert not np.array_equal(basic[0], a[0])
    assert np.array_equal(make_histo_tile(np.random.default_rng(5), 64, realism="basic")[0], basic[0])


def test_full_field_renders_without_seams():
    fld = HistoField(seed=5, scale=1.0, region_px=80.0, realism="full", lobule_px=200.0)
    conc, label = fld.render(100, -40, 64, 80)
    left_c, left_l = fld.render(100, -40, 64, 37)
    right_c, right_l = fld.render(100, -3, 64, 43)
    np.testing.assert_array_equal(label, np.concatenate([left_l, right_l], axis=1))
    np.testing.assert_allclose(conc, np.concatenate([left_c, right_c], axis=1))


def test_full_tile_is_fast():
    make_histo_tile(np.random.default_rng(0), 64, realism="full")
    start = time.perf_counter()
    make_histo_tile(np.random.default_rng(1), 256, realism="full")
    assert time.perf_counter() - start < 2.5  # ~0.5 s on an idle core


def test_synth_histo_full_records_stain_sites(tmp_path):
    from liverseg_monai.cli import main

    assert main(["synth", "histo", "--out", str(tmp_path), "--seed", "2", "--n", "6", "--size", "64",
                 "--realism", "full"]) == 0
    content = json.loads((tmp_path / "dataset.json").read_text())
    sites = content["stain_sites"]
    assert len(sites) == 3 and content["realism"] == "full"
    h = np.array([s["h_vector"] for s in sites])
    e = np.array([s["e_vector"] for s in sites])
    assert np.allclose(np.linalg.norm(h, axis=1), 1, atol=1e-4)
    assert min(np.linalg.norm(h[i] - h[j]) for i in range(3) for j in range(i)) > 1e-3
    assert min(np.linalg.norm(e[i] - e[j]) for i in range(3) for j in range(i)) > 1e-3
    items = load_datalist(tmp_path, "training", require=("image", "label"))
    assert [it["site"] for it in items] == [0, 1, 2, 0]
    assert set(content["acquisition"]) == {f"images/tile_{i:04d}.png" for i in range(6)}
    img = np.asarray(Image.open(items[0]["image"]))
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8


def test_full_sites_change_the_colours():
    """The same tissue, stained by different sites, differs in mean colour."""
    from liverseg_monai.data.synth.acquisition import Acquisition, site_stain

    sites = [site_stain(np.random.default_rng([9, j])) for j in range(4)]
    tiles = [make_histo_tile(np.random.default_rng(1), 64, scale=1.0, realism="full", stain=st,
                             acquisition=Acquisition()) for st in sites]
    assert all(np.array_equal(t[1], tiles[0][1]) for t in tiles)  # same tissue
    means = np.array([t[0].reshape(-1, 3).mean(0) for t in tiles])
    assert np.ptp(means, axis=0).max() > 8, means
