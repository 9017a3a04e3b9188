"""Bundle configs read as the data flow: no ``$`` expression longer than one short line.

An expression over :data:`MAX_EXPRESSION` characters is a piece of code that belongs in
``liverseg_monai`` as a named function, called from the config by its dotted path with a short
argument list (or as a ``_target_`` component with named arguments). See docs/architecture.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAX_EXPRESSION = 120

CONFIGS = sorted((REPO / "bundles").glob("*/configs/*.json"))

# (config path relative to bundles/, key) -> why it is still long. Remove an entry when it is fixed:
# the test is a strict xfail, so a fixed entry fails until it is taken out of this list.
KNOWN_LONG: dict[tuple[str, str], str] = {}


def expressions(node: object, key: str = "") -> Iterator[tuple[str, str]]:
    """Every ``$`` expression in a parsed config, with its MONAI id (``run#0``, ``train#dataset#data``)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from expressions(v, f"{key}#{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from expressions(v, f"{key}#{i}" if key else str(i))
    elif isinstance(node, str) and node.startswith("$"):
        yield key, node


def long_expressions(path: Path) -> list[tuple[str, int]]:
    return [(key, len(expr)) for key, expr in expressions(json.loads(path.read_text())) if len(expr) > MAX_EXPRESSION]


def _cases() -> list:
    cases = []
    for path in CONFIGS:
        rel = path.relative_to(REPO / "bundles").as_posix()
        known = [reason for (file, _), reason in KNOWN_LONG.items() if file == rel]
        marks = [pytest.mark.xfail(strict=True, reason="; ".join(known))] if known else []
        cases.append(pytest.param(path, id=rel, marks=marks))
    return cases


def test_the_scan_finds_every_bundle_config():
    assert len({p.parts[-3] for p in CONFIGS}) >= 6
    assert list(expressions({"a": {"b": ["$x", 1]}, "c": "$y"})) == [("a#b#0", "$x"), ("c", "$y")]


@pytest.mark.parametrize("path", _cases())
def test_no_long_expression(path: Path):
    rel = path.relative_to(REPO / "bundles").as_posix()
    long = long_expressions(path)
    assert not long, (
        f"bundles/{rel}: $ expressions over {MAX_EXPRESSION} characters (make each a named function in "
        "liverseg_monai, called by its dotted path): " + ", ".join(f"{key} ({n} chars)" for key, n in long)
    )


def test_known_long_expressions_are_exactly_the_listed_ones():
    """An xfail above covers a whole file: check that its long expressions are the listed keys, no more."""
    for file in {file for file, _ in KNOWN_LONG}:
        listed = {key for f, key in KNOWN_LONG if f == file}
        found = {key for key, _ in long_expressions(REPO / "bundles" / file)}
        assert found <= listed, f"bundles/{file}: new long expressions {sorted(found - listed)}"
