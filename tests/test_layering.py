"""The package's folders import only downwards (docs/architecture.md, STYLE.md section 6), and the
library holds no tooling: nothing in ``liverseg_monai`` imports ``tools`` (benchmarks, demo, recipes,
experiments, the bundle runner), and the tooling's folders are not in the package.

Every module of ``liverseg_monai`` is parsed with ``ast`` (nothing is imported); each import of
``liverseg_monai.<folder>`` is an edge from the importing module's top-level folder to that folder.
Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "liverseg_monai"

# bottom to top; a folder may import its own layer's peers and any layer below, never one above
LAYERS: list[set[str]] = [
    {"errors"},
    # files in, files out; `visualize` renders overlay PNGs (numpy in, image file out) and uses only io
    {"io", "visualize"},
    {"data"},
    {"networks", "transforms", "losses", "metrics"},
    {"ssl", "engines", "inferers"},
    {"ecosystem"},
    # the library's command line (synth, prepare); `__init__` / `__main__` are the package's entry
    {"cli", "__init__", "__main__"},
]
# tooling that lives in the top-level `tools/` package, never in the library
TOOLING = {"bench", "recipes", "demo", "runner", "research", "ablation_deeplab"}
LEVEL = {folder: i for i, layer in enumerate(LAYERS) for folder in layer}

# (importer folder, imported folder) pairs allowed against the layering, each with its reason.
# Empty today; add an entry only with a reason and the issue that will remove it.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}


def _folder(module: str) -> str:
    """``liverseg_monai.io.tables`` -> ``io``; ``liverseg_monai.errors`` -> ``errors``; the package -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _imported_modules(path: Path, module: str, top: str = "liverseg_monai") -> list[tuple[str, int]]:
    """Every ``<top>...`` module ``path`` imports, with the line, relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if base == "liverseg_monai":  # `from liverseg_monai import io` imports the folder itself
                found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
            else:
                found.append((base, node.lineno))
    return [(name, line) for name, line in found if name == top or name.startswith(f"{top}.")]


def _folder_imports() -> dict[tuple[str, str], list[str]]:
    """``(importer folder, imported folder) -> ["module:line -> imported module", ...]`` between different folders."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        source = _folder(module)
        for name, line in _imported_modules(path, module):
            target = _folder(name)
            if target != source:
                edges[(source, target)].append(f"{module}:{line} -> {name}")
    return edges


EDGES = _folder_imports()


def test_every_folder_has_a_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    folders |= {p.stem for p in PACKAGE.glob("*.py")}
    assert not folders - set(LEVEL), f"folders missing from LAYERS in {__file__}: {sorted(folders - set(LEVEL))}"


def test_the_library_does_not_import_the_tooling():
    sites = [f"{_module_name(path)}:{line} -> {name}" for path in sorted(PACKAGE.rglob("*.py"))
             for name, line in _imported_modules(path, _module_name(path), top="tools")]
    assert not sites, "the library imports the tooling (move the piece into liverseg_monai, or the caller into tools):\n" + (
        "\n".join(sites))


def test_the_scan_sees_an_import_of_the_tooling(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom tools.runner import run_bundle\n\n\ndef f():\n    import tools.bench\n")
    assert _imported_modules(module, "m", top="tools") == [("tools.runner", 2), ("tools.bench", 6)]


def test_the_package_holds_no_tooling():
    files = [p.relative_to(PACKAGE) for p in PACKAGE.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    found = sorted(f.as_posix() for f in files
                   if f.suffix == ".yaml" or TOOLING & {f.stem, *(part for part in f.parts[:-1])})
    assert not found, f"tooling inside the installable library (it belongs in tools/): {found}"


def test_the_import_scan_sees_known_edges():
    assert ("engines", "metrics") in EDGES  # CaseMetricsSaver measures with metrics.ct
    assert ("transforms", "io") in EDGES


def test_no_folder_imports_a_folder_above_it():
    upward = {
        edge: sites for edge, sites in EDGES.items() if LEVEL[edge[1]] > LEVEL[edge[0]] and edge not in KNOWN_EXCEPTIONS
    }
    report = "\n".join(f"{a} (layer {LEVEL[a]}) imports {b} (layer {LEVEL[b]}): " + "; ".join(sites)
                       for (a, b), sites in sorted(upward.items()))
    assert not upward, f"upward imports (move the shared piece down to a layer both use):\n{report}"


def test_known_exceptions_are_still_needed():
    stale = [edge for edge in KNOWN_EXCEPTIONS if edge not in EDGES]
    assert not stale, f"remove these from KNOWN_EXCEPTIONS, the imports are gone: {stale}"


def _cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components with more than one folder (Tarjan)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(set(graph) | {b for _, b in edges}):
        if node not in index:
            visit(node)
    return components


def test_cycle_finder():
    assert _cycles({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == [["a", "b", "c"]]
    assert _cycles({("a", "b"), ("b", "c")}) == []


def test_no_import_cycle_between_folders():
    cycles = _cycles({edge for edge in EDGES if edge not in KNOWN_EXCEPTIONS})
    detail = "\n".join(f"{' <-> '.join(c)}: " + "; ".join(s for e, sites in EDGES.items() if set(e) <= set(c) for s in sites)
                       for c in cycles)
    assert not cycles, f"import cycles between folders:\n{detail}"
