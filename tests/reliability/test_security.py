"""Security: checkpoints are loaded with ``torch.load(..., weights_only=True)`` everywhere, a
checkpoint that carries code is refused without running it, and the README says bundle configs are
code.

The scan covers the package and the bundles (Python sources and every ``$`` expression in the JSON
configs); loading through MONAI's ``CheckpointLoader`` (what the bundle configs use) and through the
package's own loaders is checked at run time with a malicious pickle.
"""

from __future__ import annotations

import ast
import json
import pickle
import re
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(REPO / "liverseg_monai").rglob("*.py"), *(REPO / "bundles").rglob("*.py")])
CONFIGS = sorted((REPO / "bundles").glob("*/configs/*.json"))


def _unsafe_loads(tree: ast.AST) -> list[int]:
    """Line numbers of ``torch.load(...)`` calls without a literal ``weights_only=True`` and of
    ``numpy.load(..., allow_pickle=True)`` calls."""
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute) or node.func.attr != "load":
            continue
        owner = node.func.value
        owner_name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
        kwargs = {k.arg: k.value for k in node.keywords}
        if owner_name == "torch":
            value = kwargs.get("weights_only")
            if not (isinstance(value, ast.Constant) and value.value is True):
                bad.append(node.lineno)
        elif owner_name in ("np", "numpy"):
            value = kwargs.get("allow_pickle")
            if isinstance(value, ast.Constant) and value.value is True:
                bad.append(node.lineno)
    return bad


def _as_python(expr: str) -> str:
    """A config ``$`` expression as parseable Python: ``@id#sub`` / ``%file#id`` become plain names."""
    return re.sub(r"[@%]([\w#:./]+)", lambda m: "ref_" + re.sub(r"\W", "_", m.group(1)), expr)


def _expressions(node) -> list[str]:
    if isinstance(node, dict):
        return [e for v in node.values() for e in _expressions(v)]
    if isinstance(node, list):
        return [e for v in node for e in _expressions(v)]
    return [node[1:]] if isinstance(node, str) and node.startswith("$") else []


def test_scan_finds_what_it_looks_for():
    expr = "$torch.load(@bundle_root + '/models/model.pt', map_location=@device)"
    assert _unsafe_loads(ast.parse(_as_python(expr[1:]))) == [1]
    code = "import torch, numpy as np\nx = torch.load(p)\ny = torch.load(p, weights_only=False)\n" \
           "z = torch.load(p, weights_only=True)\nw = np.load(p, allow_pickle=True)\n"
    assert _unsafe_loads(ast.parse(code)) == [2, 3, 5]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_python_sources_load_checkpoints_with_weights_only(path):
    bad = _unsafe_loads(ast.parse(path.read_text(), filename=str(path)))
    assert not bad, f"{path.relative_to(REPO)}: torch.load without weights_only=True (or np.load allow_pickle) at lines {bad}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_config_expressions_load_checkpoints_with_weights_only(path):
    for expr in _expressions(json.loads(path.read_text())):
        if expr.startswith("import") or expr.startswith("from "):
            continue
        assert not _unsafe_loads(ast.parse(_as_python(expr))), f"{path.relative_to(REPO)}: unsafe load in '{expr}'"


class _RunsCode:
    """Unpickling this calls ``Path.touch`` on a marker file: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def malicious_checkpoint(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "model.pt"
    torch.save({"model": torch.nn.Linear(2, 2).state_dict(), "payload": _RunsCode(marker)}, path,
               pickle_protocol=pickle.HIGHEST_PROTOCOL)
    return path, marker


def test_monai_checkpoint_loader_refuses_a_checkpoint_carrying_code(malicious_checkpoint):
    from ignite.engine import Engine
    from monai.handlers import CheckpointLoader

    path, marker = malicious_checkpoint
    engine = Engine(lambda e, b: None)
    CheckpointLoader(str(path), {"model": torch.nn.Linear(2, 2)}).attach(engine)
    with pytest.raises(pickle.UnpicklingError):
        engine.run([0], max_epochs=1)
    assert not marker.exists()


def test_package_loaders_refuse_a_checkpoint_carrying_code(malicious_checkpoint):
    from liverseg_monai.engines.diffusion import load_module_weights
    from liverseg_monai.errors import InputError
    from liverseg_monai.networks.weights import read_backbone_file

    path, marker = malicious_checkpoint
    with pytest.raises(InputError, match="model.pt"):
        read_backbone_file(path)
    with pytest.raises(InputError, match="model.pt"):
        load_module_weights(torch.nn.Linear(2, 2), path)
    assert not marker.exists()


def test_readme_security_note():
    text = " ".join((REPO / "README.md").read_text().split())
    assert "## Security" in (REPO / "README.md").read_text()
    assert "configs are code" in text and "$" in text and "_target_" in text
    assert "trust" in text and "weights_only=True" in text
