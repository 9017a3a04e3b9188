"""A trained bundle folder runs inference with the plain command: training recorded its overrides.

DeepLab trained at the recipe's smoke size (``encoder: resnet10``, 32-channel ASPP and decoder, 64-px
patches) writes ``models/train_config.json``; ``inference.json`` without any override then builds the
same network, loads ``models/model.pt`` and writes the same label maps as with the overrides repeated.
"""

from __future__ import annotations

import json

from liverseg_monai.recipes import copy_bundle, load_recipe, run_stage, synthesize

BUNDLE = "liver_pathology_deeplab_segmentation"


def test_inference_uses_the_values_training_was_run_with(tmp_path):
    recipe = load_recipe(BUNDLE)
    stages = {s["name"]: s for s in recipe["stages"]}
    data = synthesize(recipe["synth"], tmp_path / "data")
    root = copy_bundle(BUNDLE, tmp_path / BUNDLE)
    configs_before = {p.name: p.read_bytes() for p in (root / "configs").iterdir()}

    run_stage(stages["train"], root, data, tmp_path)
    record = json.loads((root / "models" / "train_config.json").read_text())
    assert record == {"encoder": "resnet10", "output_stride": 16, "aspp_channels": 32, "decoder_channels": 32,
                      "patch_size": [64, 64]}
    assert {p.name: p.read_bytes() for p in (root / "configs").iterdir()} == configs_before, "training changed configs/"

    with_overrides = dict(stages["inference"], output_dir="infer_overrides")
    plain = {"name": "inference", "config": ["inference.json"], "output_dir": "infer_plain"}
    run_stage(with_overrides, root, data, tmp_path)
    run_stage(plain, root, data, tmp_path)
    expected = sorted(p.relative_to(tmp_path / "infer_overrides") for p in (tmp_path / "infer_overrides").rglob("*_label.png"))
    got = sorted(p.relative_to(tmp_path / "infer_plain") for p in (tmp_path / "infer_plain").rglob("*_label.png"))
    assert expected and got == expected
    for rel in expected:
        assert (tmp_path / "infer_plain" / rel).read_bytes() == (tmp_path / "infer_overrides" / rel).read_bytes(), rel
