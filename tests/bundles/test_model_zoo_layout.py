"""Every bundle in the layout model-zoo publishes, checked the way model-zoo's CI checks it, offline.

Project-MONAI/model-zoo ``ci/verify_bundle.py -m full`` takes a bundle folder holding its trained
``models/model.pt`` and checks, in this order: the necessary and preferred files (``LICENSE``,
``configs/metadata.json``, ``configs/inference.json``, ``models/model.pt``); ``version`` listed in the
``changelog``; the metadata against MONAI's schema (``verify_metadata``, schema saved as
``eval/schema.json``); the inference workflow's properties; ``verify_net_in_out(network_def)`` with its
default ``p = n = any = 1``; ``ckpt_export(network_def)`` of ``models/model.pt`` into
``models/verify_model.ts``; and reloads a provided TorchScript file.

Here every bundle is copied, its ``network_def`` built from ``inference.json`` at the recipe's tiny
size (``tools/recipes/<bundle>.yaml``, ``export`` section: the full-size networks are too slow
for CI; the checks are the same) and its random state dict saved as ``models/model.pt``, standing in
for trained weights; then the checker's calls run with the checker's arguments (plus the tiny
overrides; ``use_trace`` where the recipe sets it, which the checker itself cannot pass), the schema
comes from ``../shared/schemas`` instead of the network, and the exported module is reloaded and must
reproduce the eager network loaded from ``models/model.pt``.

``tests/bundles/test_bundles.py`` covers the recipe's own ``verify_net_in_out`` sizes and the reload
in a fresh process; this test covers the published layout and the checker's defaults.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.bundles import harness
from tools.recipes import load_recipe, synthesize
from tools.runner import copy_bundle

BUNDLES = harness.bundle_names()
# the checker's lists (ci/verify_bundle.py)
NECESSARY_FILES = ("configs/metadata.json", "LICENSE")
PREFERRED_FILES = ("models/model.pt", "configs/inference.json")


def build_network(root: Path, overrides: dict, net_id: str = "network_def") -> torch.nn.Module:
    """``net_id`` of the bundle's ``inference.json`` with ``overrides``, as the checker's parser builds it."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser.read_meta(str(root / "configs" / "metadata.json"))
    parser["bundle_root"] = str(root)
    for key, value in overrides.items():
        parser[key] = value
    return parser.get_parsed_content(net_id)


def publish_layout(bundle: str, dest: Path, overrides: dict) -> Path:
    """A copy of the bundle with ``models/model.pt``: the random state dict of its ``network_def``."""
    root = copy_bundle(bundle, dest)
    torch.manual_seed(0)
    net = build_network(root, overrides)
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return root


def check_files(root: Path) -> None:
    for rel in NECESSARY_FILES + PREFERRED_FILES:
        assert (root / rel).is_file(), f"{root}: model-zoo needs {rel}"
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    assert meta.get("version") in meta.get("changelog", {}), f"{root}: version {meta.get('version')} not in changelog"


def check_metadata(root: Path) -> None:
    from monai.bundle import verify_metadata

    schema = root / "eval" / "schema.json"  # where the checker downloads it to
    if harness.SCHEMA.is_file():
        schema.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(harness.SCHEMA, schema)
    verify_metadata(meta_file=str(root / "configs" / "metadata.json"), filepath=str(schema))


def check_inference_properties(root: Path, dataset_dir: Path, overrides: dict) -> None:
    """MONAI's inference-workflow properties (``bundle_root``, ``device``, ``network_def``, ``inferer``, ...).

    ``create_workflow`` runs ``initialize`` (which loads ``models/model.pt``) and builds every required
    property, the dataset included, so it needs a dataset folder as MONAI Label gives one.
    """
    from monai.bundle import create_workflow

    workflow = create_workflow(
        workflow_type="inference",
        config_file=str(root / "configs" / "inference.json"),
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=str(root / "configs" / "logging.conf"),
        bundle_root=str(root),
        dataset_dir=str(dataset_dir),
        output_dir=str(root / "eval"),
        **overrides,
    )
    missing = workflow.check_properties()
    assert not missing, f"{root}: inference.json lacks the required properties {missing}"


def check_net_in_out(root: Path, overrides: dict) -> None:
    from monai.bundle import verify_net_in_out

    verify_net_in_out(
        net_id="network_def",
        meta_file=str(root / "configs" / "metadata.json"),
        config_file=str(root / "configs" / "inference.json"),
        bundle_root=str(root),
        device="cpu",
        **overrides,
    )


def check_torchscript(root: Path, spec: dict, overrides: dict) -> None:
    from monai.bundle import ckpt_export

    ts = root / "models" / "verify_model.ts"
    trace = {"use_trace": True, "input_shape": list(spec["input_shape"])} if spec.get("use_trace") else {}
    ckpt_export(
        net_id="network_def",
        filepath=str(ts),
        ckpt_file=str(root / "models" / "model.pt"),
        meta_file=str(root / "configs" / "metadata.json"),
        config_file=str(root / "configs" / "inference.json"),
        bundle_root=str(root),
        **trace,
        **overrides,
    )
    import liverseg_monai.networks  # noqa: F401  (registers torchvision's custom ops before loading)

    scripted = torch.jit.load(str(ts), map_location="cpu")
    eager = build_network(root, overrides)
    eager.load_state_dict(torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True))
    for module in (eager, scripted):
        module.eval()
    x = torch.randn(*spec["input_shape"])
    with torch.no_grad():
        expected, got = eager(x), scripted(x)
    if isinstance(expected, tuple | list):
        expected, got = expected[0], got[0]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_passes_model_zoo_checks(bundle, tmp_path):
    recipe = load_recipe(bundle)
    spec = recipe.get("export") or {}
    if spec.get("skip"):
        pytest.skip(f"{bundle}: {spec['skip']}")
    overrides = dict(spec.get("overrides") or {})
    root = publish_layout(bundle, tmp_path / bundle, overrides)
    check_files(root)
    check_metadata(root)
    check_inference_properties(root, synthesize(recipe["synth"], tmp_path / "data"), overrides)
    check_net_in_out(root, overrides)
    check_torchscript(root, spec, overrides)


def test_layout_check_fails_without_model_pt(tmp_path):
    """The file check is real: a bundle copy without ``models/model.pt`` (the repository's state) fails it."""
    root = copy_bundle(BUNDLES[0], tmp_path / BUNDLES[0])
    with pytest.raises(AssertionError, match="models/model.pt"):
        check_files(root)
