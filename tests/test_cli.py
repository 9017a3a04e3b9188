import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "liverseg_monai", *args], capture_output=True, text=True)


def test_synth_writes_a_dataset(tmp_path):
    proc = run("synth", "lits", "--out", str(tmp_path), "--n", "3", "--size", "16,16,8")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "dataset.json").is_file() and (tmp_path / "volume-2.nii.gz").is_file()


def test_errors_are_one_clear_line(tmp_path):
    proc = run("prepare", "lits", "--src", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and str(tmp_path / "nope") in proc.stderr
    bad = run("synth", "lits", "--out", str(tmp_path), "--no-such-option", "1")
    assert bad.returncode == 2 and "no_such_option" in bad.stderr


def test_demo_stage_overrides_are_parsed_and_checked(monkeypatch, tmp_path):
    import argparse

    import pytest

    from liverseg_monai import demo
    from liverseg_monai.cli import _stage_overrides

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
