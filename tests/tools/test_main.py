"""``python -m tools``: the one entry point of the tooling; the library's command line keeps only its own."""

import subprocess
import sys

import pytest

from tools.__main__ import build_parser
from tools.research import SCRIPTS


def test_library_command_line_has_no_tooling_commands():
    proc = subprocess.run([sys.executable, "-m", "liverseg_monai", "demo"], capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid choice: 'demo'" in proc.stderr


def test_tooling_commands():
    parser = build_parser()
    assert parser.parse_args(["demo"]).out == "demo_out"
    assert parser.parse_args(["bench", "--only", "quality"]).only == "quality"
    args = parser.parse_args(["ablation-deeplab", "--out", "x", "--iterations", "3"])
    assert (args.out, args.iterations, args.label_fraction) == ("x", 3, 0.25)
    args = parser.parse_args(["research", "dino_patch_sweep", '{"steps": 8}'])
    assert (args.script, args.args) == ("dino_patch_sweep", ['{"steps": 8}'])
    assert {"dino_bundle_sweep", "pathsegdiff_stage_figures"} <= set(SCRIPTS)
    with pytest.raises(SystemExit):
        parser.parse_args(["research", "no_such_script"])


def test_demo_stage_overrides_are_parsed_and_checked(monkeypatch, tmp_path):
    import argparse

    import pytest

    from tools import demo
    from tools.__main__ import _stage_overrides

    parser = argparse.ArgumentParser()
    got = _stage_overrides(parser, ["train_tumor:weak_supervision#weight=0", "train_tumor:max_epochs=3",
                                    "evaluate:tag=abc"])
    assert got == {"train_tumor": {"weak_supervision#weight": 0, "max_epochs": 3}, "evaluate": {"tag": "abc"}}
    with pytest.raises(SystemExit):
        _stage_overrides(parser, ["no-colon"])
    # a stage no selected bundle has is an error before anything runs
    with pytest.raises(ValueError, match="no demo stage named train_tumour"):
        demo.run_demo(tmp_path, ["liver_tumor_ct_segresnetvae"], {"train_tumour": {"max_epochs": 1}})
    # the override reaches the stage, on top of the recipe's own overrides
    seen = {}
    monkeypatch.setattr(demo, "synthesize", lambda spec, out: out)
    monkeypatch.setattr(demo, "copy_bundle", lambda bundle, out: out)
    monkeypatch.setattr(demo, "run_stage", lambda stage, *a, **k: seen.setdefault(stage["name"], stage["overrides"]))
    demo.run_bundle_demo("liver_tumor_ct_segresnetvae", tmp_path, {"train_tumor": {"weak_supervision#weight": 0}})
    assert seen["train_tumor"]["weak_supervision#weight"] == 0 and seen["train_tumor"]["max_epochs"] == 20
    assert "weak_supervision#weight" not in seen["train_liver"]
