"""The one bundle runner: command lines, in-process runs, random weights, config rewrites, failures."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from tools.runner import (
    bundle_command,
    config_parser,
    copy_bundle,
    init_random_weights,
    run_bundle,
    run_parsed,
    set_config_values,
)


@pytest.fixture
def bundle(tmp_path):
    root = tmp_path / "bundle"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "metadata.json").write_text("{}")
    (root / "configs" / "inference.json").write_text(json.dumps({
        "imports": ["$import torch"],
        "width": 4,
        "network_def": {"_target_": "torch.nn.Linear", "in_features": 3, "out_features": "@width"},
        "calls": [],
        "run": ["$@calls.append(@network_def(torch.ones(1, 3)).shape[-1])"],
    }))
    (root / "configs" / "broken.json").write_text(json.dumps({"run": ["$1 / 0"]}))
    return root


def test_command_line_names_configs_inside_the_bundle(bundle, tmp_path):
    cmd = bundle_command(bundle, ["inference.json", "broken.json"], tmp_path / "data", tmp_path / "out",
                         {"width": 8, "name": "x", "path": tmp_path, "sizes": [2, 3]})
    assert cmd[:4] == [sys.executable, "-m", "monai.bundle", "run"]
    files = json.loads(cmd[cmd.index("--config_file") + 1])
    assert files == [str(bundle / "configs" / "inference.json"), str(bundle / "configs" / "broken.json")]
    assert cmd[cmd.index("--meta_file") + 1] == str(bundle / "configs" / "metadata.json")
    pairs = dict(zip(cmd[4::2], cmd[5::2], strict=False))
    assert pairs["--width"] == "8" and pairs["--name"] == "x" and pairs["--path"] == str(tmp_path)
    assert pairs["--sizes"] == "[2, 3]" and pairs["--dataset_dir"] == str(tmp_path / "data")
    export = bundle_command(bundle, "inference.json", verb="ckpt_export")
    assert "--meta_file" not in export and export[3] == "ckpt_export"


def test_in_process_run_uses_the_parts_already_built(bundle):
    parser = config_parser(bundle, ["inference.json"], {"width": 5})
    net = parser.get_parsed_content("network_def")
    seen = []
    net.register_forward_hook(lambda *_: seen.append(1))
    run_parsed(parser)
    assert seen == [1] and parser.get_parsed_content("calls") == [5]
    assert parser["bundle_root"] == str(bundle)


def test_random_weights_are_reproducible(bundle):
    first = init_random_weights(bundle, {"models/a.pt": "network_def"}, seed=3, overrides={"width": 2})
    a = torch.load(first[0], weights_only=True)
    init_random_weights(bundle, {"models/a.pt": "network_def"}, seed=3, overrides={"width": 2})
    b = torch.load(first[0], weights_only=True)
    assert a["weight"].shape == (2, 3) and torch.equal(a["weight"], b["weight"])


def test_config_values_are_written_into_the_copy(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("LIVERSEG_BUNDLES", str(bundle.parent))
    (bundle / "models").mkdir()
    (bundle / "models" / "model.pt").write_bytes(b"weights")
    copy = copy_bundle("bundle", tmp_path / "copy")
    assert not (copy / "models" / "model.pt").exists() and (copy / "models").is_dir()
    set_config_values(copy, "inference.json", {"width": 7, "network_def#bias": False})
    config = json.loads((copy / "configs" / "inference.json").read_text())
    assert config["width"] == 7 and config["network_def"]["bias"] is False
    assert json.loads((bundle / "configs" / "inference.json").read_text())["width"] == 4


def test_a_failed_run_names_the_command_and_its_log(bundle, tmp_path):
    with pytest.raises(RuntimeError, match=r"(?s)exit 1.*broken\.json.*ZeroDivisionError"):
        run_bundle(bundle, ["broken.json"], output_dir=tmp_path / "out", timeout=300)
