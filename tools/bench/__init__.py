"""``make bench``: speed, memory and quality side by side, ratios taken within one run.

Scenarios (issue 11), each in its own subprocess so that its peak resident memory (``ru_maxrss``)
is its own (``python -m tools.bench SCENARIO --work W --json OUT``):

- speed (``make bench``): ``ct_liver``, ``ct_tumor`` (:mod:`.ct`), ``slide_5000``, ``slide_20000``
  (:mod:`.slides`), ``train_input`` (:mod:`.training`), ``networks`` (:mod:`.networks`);
- quality (opt-in, ``make bench-quality`` or ``--quality``; they train): every paper's claim through the
  bundles with seeds, held-out cases and bootstrap intervals (``claim:NAME``, :mod:`.claims`; one at a
  time with ``--only claim:NAME``, all with ``--only claims``; ``--device cuda`` runs their GPU preset)
  and the PathSegDiff feature ablation ``pathsegdiff_features`` (:mod:`.pathsegdiff`);
- peers (opt-in: ``--only peer:NAME``, ``make bench-peer``): nnU-Net v2 trained for the bundle's wall
  clock on a CT claim's data and scored on its held-out volumes (:mod:`.peer`).

``run_bench`` merges the results into ``bench/results.json`` under a machine key (CPU model and
thread count, or the GPU's name), so runs on several machines sit side by side, and rewrites
``docs/benchmarks.md`` from all of them (:mod:`.report`). ``--device cuda`` runs the same scenarios
on a GPU with AMP and channels-last where they apply. A scenario that fails is recorded with its
error; the others still run. Optional packages are imported inside the scenarios.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.bench.common import REPO, load_average, machine_info

#: scenario -> "module:function" (imported in the scenario's own process)
SCENARIOS = {
    "ct_liver": "tools.bench.ct:scenario_ct_liver",
    "ct_tumor": "tools.bench.ct:scenario_ct_tumor",
    "slide_5000": "tools.bench.slides:scenario_slide_small",
    "slide_20000": "tools.bench.slides:scenario_slide_large",
    "slide_tissue": "tools.bench.slides:scenario_slide_tissue",
    "train_input": "tools.bench.training:scenario_train_input",
    "networks": "tools.bench.networks:scenario_networks",
    "pathsegdiff_features": "tools.bench.pathsegdiff:scenario_pathsegdiff_features",
}
GROUPS = {
    "speed": ["ct_liver", "ct_tumor", "slide_5000", "slide_20000", "slide_tissue", "train_input", "networks"],
    "quality": ["claims", "pathsegdiff_features"],
}
#: keyword arguments per scenario. ``full``: the issue's sizes; ``small``: a quick check of the whole
#: run on a busy machine; ``tiny``: the unit test.
PRESETS = {
    "full": {
        "ct_liver": {"shape": [512, 512, 128]},
        "ct_tumor": {"shape": [512, 512, 128]},
        "slide_5000": {"size": 5000, "tissue_px": 2000},
        "slide_20000": {"size": 20000, "tissue_px": 2000},
        "slide_tissue": {"size": 8000, "tissue_px": 7000},
        "train_input": {"steps": 60, "min_epoch_steps": 30},
        "networks": {"size": 256, "batch": 4},
        "pathsegdiff_features": {"seeds": [0, 1, 2], "n_test": 100},
    },
    "small": {
        "ct_liver": {"shape": [128, 128, 48]},
        "ct_tumor": {"shape": [128, 128, 48]},
        "slide_5000": {"size": 3000, "tissue_px": 800},
        "slide_20000": {"size": 6000, "tissue_px": 800},
        "slide_tissue": {"size": 2000, "tissue_px": 1800},
        "train_input": {"steps": 4, "bundles": ["liver_ct_unet_segmentation"]},
        "networks": {"size": 128, "batch": 2, "repeat": 1},
        "pathsegdiff_features": {"seeds": [0], "n_test": 10},
    },
    "tiny": {
        "ct_liver": {"shape": [32, 32, 16], "overrides": {"spatial_size": [32, 32]}},
        "ct_tumor": {"shape": [48, 48, 24], "overrides": {"liver#roi_size": [32, 32, 16],
                                                          "tumor#roi_size": [32, 32, 16]}},
        "networks": {"size": 64, "batch": 1, "repeat": 1},
    },
}
#: the GPU rows: mixed precision, and channels-last for the 2D networks
CUDA_OPTIONS = {
    "ct_liver": {"amp": True, "channels_last": True},
    "ct_tumor": {"amp": True},
    "slide_5000": {"amp": True, "channels_last": True},
    "slide_20000": {"amp": True, "channels_last": True},
    "slide_tissue": {"amp": True, "channels_last": True},
    "networks": {"amp": True, "channels_last": True, "batch": 16},
}
DEVICE_SCENARIOS = {"ct_liver", "ct_tumor", "slide_5000", "slide_20000", "slide_tissue", "train_input", "networks"}


def scenario_kwargs(name: str, preset: str = "full", device: str = "cpu") -> dict:
    if name.startswith("claim:"):
        return {"name": name.split(":", 1)[1], "preset": "gpu" if device.startswith("cuda") else "cpu"}
    if name.startswith("peer:"):
        return {"name": name.split(":", 1)[1]}
    kwargs = dict(PRESETS[preset].get(name, PRESETS["full"].get(name, {})))
    if name in DEVICE_SCENARIOS:
        kwargs["device"] = device
        if device.startswith("cuda"):
            kwargs.update(CUDA_OPTIONS.get(name, {}))
    return kwargs


def run_scenario_process(name: str, work: Path, kwargs: dict, timeout: float = 3600) -> dict:
    """Run one scenario in a fresh interpreter and return its result (or its error)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "tools.bench", name, "--work", str(work), "--json", str(out),
               "--kwargs", json.dumps(kwargs)]
        t = time.time()
        load = load_average()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s", "kwargs": kwargs}
        common = {"kwargs": kwargs, "wall_s": round(time.time() - t, 1), "load_average_before": load,
                  "load_average_after": load_average(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or ["no output"]
            return {"error": f"exit {proc.returncode}: {tail[0]}", **common}
        return {**json.loads(out.read_text()), **common}


def merge_results(path: Path, machine: dict, command: str, results: dict[str, dict]) -> dict:
    """Add ``results`` under ``machine['key']`` in ``path`` (other machines and scenarios are kept)."""
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.setdefault("schema", 1)
    runs = data.setdefault("runs", {})
    run = runs.setdefault(machine["key"], {"scenarios": {}})
    run["machine"] = machine
    run["command"] = command
    run["scenarios"].update(results)
    return data


def run_bench(out: str | os.PathLike = "bench", only: list[str] | str | None = None, quality: bool = False,
              device: str = "cpu", preset: str = "full", docs: str | os.PathLike | None = None,
              work: str | os.PathLike | None = None, command: str | None = None) -> Path:
    """Run the scenarios, merge them into ``OUT/results.json`` and rewrite ``docs`` (Markdown).

    Args:
        out: folder of ``results.json``.
        only: scenario names (a list or comma-separated); default the speed group, plus the quality
            group with ``quality=True``.
        quality: also run the quality scenarios (they train: hours on 2 CPU cores, see the README).
        device: ``cpu`` or ``cuda`` (GPU rows: AMP, channels-last).
        preset: ``full`` (the issue's sizes), ``small`` or ``tiny`` (see :data:`PRESETS`).
        docs: the Markdown file to write; default ``docs/benchmarks.md`` of the repository.
        work: scratch folder (data, bundle copies, outputs); default ``OUT/tmp``.
        command: the command line recorded with the results.
    """
    from liverseg_monai.errors import InputError
    from tools.bench.report import write_markdown

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(work) if work else out / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    if isinstance(only, str):
        only = [s for s in only.split(",") if s]
    names = list(only) if only else GROUPS["speed"] + (GROUPS["quality"] if quality else [])
    if "claims" in names:  # every claim, in the order of tools.bench.claims.CLAIMS
        names = [n for n in names if n != "claims"] + [n for n in scenario_names() if n.startswith("claim:")]
    unknown = [n for n in names if n not in scenario_names()]
    if unknown:
        raise InputError("bench", f"unknown scenario(s) {unknown}; choose from {scenario_names()}")
    if preset not in PRESETS:
        raise InputError("bench", f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    from tools.bench.claims import SESSION_ENV

    os.environ.setdefault(SESSION_ENV, f"{os.getpid()}-{time.time_ns()}")  # claims of this command share runs
    machine = machine_info(device)
    command = command or f"python -m tools bench --out {out} --device {device} --preset {preset}"
    results = {}
    for name in names:
        kwargs = scenario_kwargs(name, preset, device)
        print(f"bench: {name} {json.dumps(kwargs)} ...", flush=True)
        result = run_scenario_process(name, work.resolve(), kwargs, timeout=3 * 3600)
        result.setdefault("preset", preset)  # a claim records its own (cpu or gpu)
        result["command"] = command
        results[name] = result
        print(json.dumps({k: v for k, v in result.items() if not isinstance(v, list | dict)}, default=str), flush=True)
        data = merge_results(out / "results.json", machine, command, {name: result})
        (out / "results.json").write_text(json.dumps(data, indent=2, default=float) + "\n")
    data = json.loads((out / "results.json").read_text())
    write_markdown(data, Path(docs) if docs else REPO / "docs" / "benchmarks.md")
    if any(n.startswith(("claim:", "peer:")) or n == "pathsegdiff_features" for n in names):
        from tools.bench.claims import write_claims_markdown

        write_claims_markdown(data, (Path(docs).parent if docs else REPO / "docs") / "claims.md")
    return out / "results.json"


def scenario_names() -> list[str]:
    """Every scenario ``--only`` accepts: :data:`SCENARIOS`, ``claim:NAME`` for each claim and ``peer:NAME``
    for each nnU-Net peer (:mod:`tools.bench.peer`)."""
    from tools.bench.claims import CLAIMS
    from tools.bench.peer import PEERS

    return sorted(SCENARIOS) + [f"claim:{name}" for name in CLAIMS] + [f"peer:{name}" for name in PEERS]


def run_scenario(name: str, work: str | os.PathLike, kwargs: dict) -> dict:
    """Run one scenario in this process (what the subprocess does)."""
    if name.startswith(("claim:", "peer:")):
        module, func = {"claim": ("tools.bench.claims", "scenario_claim"), "peer": ("tools.bench.peer", "scenario_peer")}[
            name.split(":", 1)[0]]
    else:
        module, func = SCENARIOS[name].split(":")
    result = getattr(importlib.import_module(module), func)(Path(work), **kwargs)
    from tools.bench.common import peak_rss_mb

    result.setdefault("process_peak_rss_mb", peak_rss_mb())
    return result
