"""Outputs are written atomically (a temporary file in the same folder, then one rename).

For every kind of file the bundles write (NIfTI masks, DICOM-SEG, slide and instance TIFFs, label and
overlay PNGs, per-case CSVs and summary JSONs, embeddings, checkpoints) the test checks two things:

- every output file appears under its final name through ``os.replace`` only (a spy records the
  renames; a file written in place would appear without one);
- when the rename fails (a crash at the last step), nothing is left under the final name and no
  temporary file is left behind either.

A checkpoint whose ``torch.save`` dies half-way must also leave the previous checkpoint as the one
training resumes from. Finally every bundle config is audited: image and checkpoint savers must be
the atomic ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.data import MetaTensor
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def _meta_volume(array: np.ndarray, affine: np.ndarray, source: str) -> MetaTensor:
    return MetaTensor(torch.as_tensor(array[None]), affine=torch.as_tensor(affine),
                      meta={"filename_or_obj": source})


def write_nifti(out: Path, src: Path) -> None:
    from monai.transforms import SaveImaged

    from liverseg_monai.io.writers import AtomicNibabelWriter

    affine = np.diag([1.5, -0.8, 2.5, 1.0])
    pred = _meta_volume(np.ones((6, 5, 4), np.uint8), affine, str(src / "case.nii.gz"))
    SaveImaged("pred", output_dir=str(out), output_postfix="seg", output_ext=".nii.gz", resample=False,
               separate_folder=False, print_log=False, writer=AtomicNibabelWriter)({"pred": pred})


def write_case_tables(out: Path, src: Path) -> None:
    from liverseg_monai.engines.handlers import CaseMetricsSaver

    saver = CaseMetricsSaver(out, {1: "liver"})
    saver.rows = [{"case": "a", "liver_dice": 0.9}, {"case": "b", "liver_dice": 0.7}]
    saver._write(SimpleNamespace(state=SimpleNamespace(metrics={})))


def write_ct_overlay(out: Path, src: Path) -> None:
    from liverseg_monai.transforms.overlay import SaveOverlayd

    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    image = _meta_volume(np.random.default_rng(0).normal(0, 100, (16, 16, 8)).astype(np.float32), affine,
                         str(src / "case.nii.gz"))
    pred = torch.zeros_like(image)
    pred[:, 4:10, 4:10, 2:6] = 1
    SaveOverlayd("pred", output_dir=out)({"image": image, "pred": pred})


def _tile(src: Path) -> Path:
    path = src / "tile_0.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(path)
    return path


def write_tile_prediction(out: Path, src: Path) -> None:
    from liverseg_monai.transforms.tiles import SaveTilePredictiond

    image = MetaTensor(torch.zeros(3, 24, 24), meta={"filename_or_obj": str(_tile(src))})
    pred = torch.zeros(1, 24, 24)
    pred[0, 5:15, 5:15] = 2
    SaveTilePredictiond("pred", output_dir=out, postfix="label")({"image": image, "pred": pred})


def write_segmentation_report(out: Path, src: Path) -> None:
    from liverseg_monai.metrics.segmentation import write_segmentation_report

    write_segmentation_report(out, np.array([[[5, 1], [2, 8]], [[3, 0], [0, 4]]]), ["background", "gland"])


def write_dicom_seg(out: Path, src: Path) -> None:
    from liverseg_monai.data.synth.phantom import phantom_affine
    from liverseg_monai.io.dicom import write_seg_masks, write_series

    shape = (12, 10, 6)
    write_series(src / "series", np.zeros(shape, np.int16), phantom_affine(shape, (1.0, 1.0, 2.0), np.eye(3)),
                 uid_entropy="atomic-test")
    mask = np.zeros(shape, bool)
    mask[3:8, 2:7, 1:4] = True
    write_seg_masks({"Liver": mask}, src / "series", out / "series_seg.dcm", uid_entropy="atomic-test",
                    content_date="20000101")


def write_slide_label_tiff(out: Path, src: Path) -> None:
    from liverseg_monai.io.slide import SlideLabelWriter

    labels = np.zeros((300, 400), np.uint8)
    labels[50:200, 100:300] = 3
    SlideLabelWriter(out / "slide_label.tiff", labels.shape, mpp=2.0, class_names=["a", "b", "c", "d"]).write(labels)


def write_instance_tiff(out: Path, src: Path) -> None:
    from liverseg_monai.inferers.instances import save_instance_overlay, write_label_tiff

    labels = np.zeros((32, 32), np.uint16)
    labels[4:10, 4:10], labels[20:28, 18:26] = 1, 2
    write_label_tiff(out / "tile_instances.tif", labels, mpp=0.5)
    save_instance_overlay(out / "tile_overlay.png", np.full((3, 32, 32), 200, np.uint8), labels)


def write_embeddings(out: Path, src: Path) -> None:
    from liverseg_monai.ssl.handlers import EmbeddingWriter

    writer = EmbeddingWriter(out, map_name=None)
    tile = _tile(src)
    for k in range(3):
        image = MetaTensor(torch.zeros(3, 8, 8), meta={"filename_or_obj": str(tile).replace("_0", f"_{k}")})
        engine = SimpleNamespace(state=SimpleNamespace(output=[{"image": image, "pred": torch.randn(16)}]))
        writer._save(engine)
    writer._finish()


def write_checkpoints(out: Path, src: Path, final: bool = True) -> None:
    """Interval checkpoints (``checkpoint_epoch=N.pt``), a key-metric ``model.pt`` and a final one."""
    from ignite.engine import Engine

    from liverseg_monai.engines.handlers import AtomicCheckpointSaver

    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def _metric(e):
        e.state.metrics["val_dice"] = 0.1 * e.state.epoch

    AtomicCheckpointSaver(save_dir=str(out), save_dict={"model": net, "optimizer": optimizer}, save_interval=1, n_saved=1, epoch_level=True,
                          save_key_metric=True, key_metric_name="val_dice", key_metric_filename="model.pt",
                          save_final=final, final_filename="final.pt").attach(engine)
    engine.run([0, 1], max_epochs=2)


WRITERS: dict[str, Callable[[Path, Path], None]] = {
    "nifti_mask": write_nifti,
    "case_metrics_csv_json": write_case_tables,
    "ct_overlay_png": write_ct_overlay,
    "tile_label_and_overlay_png": write_tile_prediction,
    "segmentation_report": write_segmentation_report,
    "dicom_seg": write_dicom_seg,
    "slide_label_tiff": write_slide_label_tiff,
    "instance_tiff_and_overlay": write_instance_tiff,
    "embeddings_npy_csv": write_embeddings,
    "checkpoints": write_checkpoints,
}


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


@pytest.mark.parametrize("kind", list(WRITERS))
def test_every_output_appears_by_rename_only(kind, tmp_path, monkeypatch):
    out, src = tmp_path / "out", tmp_path / "src"
    src.mkdir()
    renamed: list[str] = []
    real_replace = os.replace

    def spy(a, b, *args, **kwargs):
        dst = Path(b)
        if dst.is_relative_to(out):
            assert not dst.exists() or dst.stat().st_size > 0
            renamed.append(str(dst.relative_to(out)))
        return real_replace(a, b, *args, **kwargs)

    monkeypatch.setattr(os, "replace", spy)
    WRITERS[kind](out, src)
    produced = _files(out)
    assert produced, f"{kind}: the writer produced nothing"
    assert produced <= set(renamed), f"{kind}: written in place, not by rename: {sorted(produced - set(renamed))}"
    assert not [p for p in produced if ".tmp" in p], f"{kind}: temporary files left: {produced}"


@pytest.mark.parametrize("kind", list(WRITERS))
def test_failed_rename_leaves_no_file(kind, tmp_path, monkeypatch):
    out, src = tmp_path / "out", tmp_path / "src"
    src.mkdir()
    real_replace = os.replace

    def crash(a, b, *args, **kwargs):
        if Path(b).is_relative_to(out):
            raise OSError(f"simulated crash before renaming onto {b}")
        return real_replace(a, b, *args, **kwargs)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(Exception, match="simulated crash"):
        WRITERS[kind](out, src)
    assert _files(out) == set(), f"{kind}: partial or temporary files left after a failed write: {_files(out)}"


def test_checkpoint_killed_mid_write_keeps_the_previous_one(tmp_path, monkeypatch):
    """``torch.save`` dying half-way through epoch 2's checkpoint leaves epoch 1's as the newest."""
    from liverseg_monai.engines.checkpoints import latest_checkpoint

    out = tmp_path / "models"
    real_save = torch.save

    def dies_in_epoch_2(obj, f, *args, **kwargs):
        if "epoch=2" in str(f):  # the temporary file for checkpoint_epoch=2.pt
            Path(f).write_bytes(b"PK\x03\x04 half a zip")
            raise KeyboardInterrupt("killed mid-write")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        write_checkpoints(out, tmp_path, final=False)
    monkeypatch.setattr(torch, "save", real_save)
    assert _files(out) == {"checkpoint_epoch=1.pt", "model.pt"}
    newest = latest_checkpoint(out)
    assert newest.endswith("checkpoint_epoch=1.pt")
    assert set(torch.load(newest, weights_only=True)) == {"model", "optimizer"}


def _targets(node, found: list[dict]) -> list[dict]:
    if isinstance(node, dict):
        if "_target_" in node:
            found.append(node)
        for value in node.values():
            _targets(value, found)
    elif isinstance(node, list):
        for value in node:
            _targets(value, found)
    return found


NON_ATOMIC = {
    "CheckpointSaver": "MONAI's CheckpointSaver writes with atomic=False: use liverseg_monai.engines.handlers.AtomicCheckpointSaver",
    "monai.handlers.CheckpointSaver": "use liverseg_monai.engines.handlers.AtomicCheckpointSaver",
    "ModelCheckpoint": "use liverseg_monai.engines.handlers.AtomicCheckpointSaver",
    "ignite.handlers.ModelCheckpoint": "use liverseg_monai.engines.handlers.AtomicCheckpointSaver",
    "SaveImage": "use SaveImaged with writer liverseg_monai.io.writers.AtomicNibabelWriter",
}
SAVE_IMAGE = {"SaveImaged", "monai.transforms.SaveImaged"}
ATOMIC_IMAGE_WRITERS = {"liverseg_monai.io.writers.AtomicNibabelWriter"}


def _config_files() -> list[str]:
    return sorted(str(p.relative_to(REPO / "bundles")) for p in (REPO / "bundles").glob("*/configs/*.json")
                  if p.name != "metadata.json")


@pytest.mark.parametrize("config", _config_files())
def test_bundle_configs_use_atomic_savers(config):
    problems = []
    for node in _targets(json.loads((REPO / "bundles" / config).read_text()), []):
        target = node["_target_"]
        if target in NON_ATOMIC:
            problems.append(f"{target}: {NON_ATOMIC[target]}")
        elif target in SAVE_IMAGE and node.get("writer") not in ATOMIC_IMAGE_WRITERS:
            problems.append(f"SaveImaged with writer {node.get('writer')!r}: use liverseg_monai.io.writers.AtomicNibabelWriter")
    assert not problems, f"bundles/{config}: " + "; ".join(problems)


def test_checkpoint_rotation_still_keeps_n_saved(tmp_path):
    """Deferred removal keeps ignite's ``n_saved=1``: one interval checkpoint, the best, the final."""
    write_checkpoints(tmp_path / "models", tmp_path)
    assert _files(tmp_path / "models") == {"checkpoint_epoch=2.pt", "model.pt", "final.pt"}
