"""``make demo``: every bundle end to end on synthetic data, with a Markdown report.

For each recipe's ``demo`` section (``tools/recipes/<bundle>.yaml``): synthesize the data,
copy the bundle to ``OUT/<bundle>/bundle`` (the repository's bundles are never written to), run the
stages (short training, inference, evaluation) with ``python -m monai.bundle run`` showing their
progress, and collect the evaluation summary and overlay PNGs into ``OUT/report.md``.
"""

from __future__ import annotations

import glob
import json
import os
import platform
import shutil
import time
from pathlib import Path

import torch
from tqdm import tqdm

from liverseg_monai.io.atomic import atomic_write_text
from tools.recipes import list_recipes, load_recipe, synthesize
from tools.runner import copy_bundle, run_stage


def _flatten(metrics: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if k == "metrics" and isinstance(v, dict) and not prefix:  # the summary.json layout
            out.update(_flatten(v))
        elif isinstance(v, dict):
            if "mean" in v and isinstance(v["mean"], int | float):
                out[f"{prefix}{k}"] = v["mean"]
            else:
                out.update(_flatten(v, f"{prefix}{k}."))
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = v
    return out


def run_bundle_demo(bundle: str, out: Path, overrides: dict[str, dict] | None = None) -> dict:
    """One bundle's demo; ``overrides`` maps a stage name to config overrides added to the recipe's."""
    recipe = load_recipe(bundle)
    demo = recipe.get("demo")
    if not demo:
        return {"bundle": bundle, "status": "no demo section in recipe"}
    work = out / bundle
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    t0 = time.time()
    data = synthesize(demo["synth"], work / "data")
    root = copy_bundle(bundle, work / "bundle")
    timings = {"synth": time.time() - t0}
    overrides = overrides or {}
    unknown = set(overrides) - {stage["name"] for stage in demo["stages"]}
    if unknown:
        raise ValueError(f"{bundle}: no demo stage {', '.join(sorted(unknown))} "
                         f"(stages: {', '.join(s['name'] for s in demo['stages'])})")
    for stage in demo["stages"]:
        if stage["name"] in overrides:
            stage = {**stage, "overrides": {**(stage.get("overrides") or {}), **overrides[stage["name"]]}}
        t = time.time()
        print(f"[{bundle}] {stage['name']} ...", flush=True)
        run_stage(stage, root, data, work, capture=False)
        timings[stage["name"]] = time.time() - t
    report = demo.get("report") or {}
    metrics = {}
    if report.get("metrics"):
        path = work / report["metrics"]
        metrics = _flatten(json.loads(path.read_text())) if path.is_file() else {"missing": str(path)}
    overlays = sorted(glob.glob(str(work / report.get("overlays", "__none__"))))[: report.get("max_overlays", 2)]
    return {"bundle": bundle, "status": "ok", "metrics": metrics, "overlays": overlays, "timings": timings,
            "training": demo.get("budget", ""), "data": demo["synth"]}


def render_report(results: list[dict], out: Path, seconds: float) -> str:
    lines = [
        "# liverseg-monai demo report",
        "",
        "Every bundle trained briefly and evaluated on **synthetic** data made by "
        "`python -m liverseg_monai synth`. These figures show the pipelines work end to end; they are "
        "not comparable with the papers' figures on real data.",
        "",
        f"Command: `make demo` · machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, {'CUDA' if torch.cuda.is_available() else 'CPU only'} · total {seconds / 60:.1f} min",
        "",
    ]
    for r in results:
        lines += [f"## {r['bundle']}", ""]
        if r["status"] != "ok":
            lines += [f"Status: {r['status']}", ""]
            continue
        synth = r["data"]
        lines += [f"Data: synthetic `{synth['kind']}`, n={synth.get('n', 'default')}, seed={synth.get('seed', 0)}, "
                  f"options {synth.get('options', {})}.  ",
                  *([f"Training budget: {r['training']}.  "] if r.get("training") else []),
                  "Stage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in r["timings"].items()), ""]
        if r["metrics"]:
            lines += ["| metric (mean over held-out cases) | value |", "|---|---|"]
            lines += [f"| {k} | {v:.4f} |" for k, v in r["metrics"].items()]
            lines.append("")
        for png in r["overlays"]:
            rel = os.path.relpath(png, out)
            lines += [f"![{os.path.basename(png)}]({rel})", ""]
    return "\n".join(lines) + "\n"


def run_demo(out: str | os.PathLike = "demo_out", bundles: list[str] | None = None,
             overrides: dict[str, dict] | None = None) -> Path:
    """Run the demo for ``bundles`` (default: all with a recipe); returns the report path.

    ``overrides``: stage name -> config overrides, applied in every bundle that has that stage.
    """
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    names = bundles or list_recipes()
    stages = {b: {st["name"] for st in (load_recipe(b).get("demo") or {}).get("stages", [])} for b in names}
    unknown = set(overrides or {}) - set().union(*stages.values())
    if unknown:
        raise ValueError(f"no demo stage named {', '.join(sorted(unknown))} in {', '.join(names)}")
    t0 = time.time()
    results = []
    for bundle in tqdm(names, desc="demo bundles", unit="bundle"):
        try:
            results.append(run_bundle_demo(bundle, out, {k: v for k, v in (overrides or {}).items() if k in stages[bundle]}))
        except Exception as err:  # report and go on with the other bundles
            results.append({"bundle": bundle, "status": f"FAILED: {str(err).splitlines()[0]}"})
            print(f"[{bundle}] failed: {err}", flush=True)
    report = out / "report.md"
    atomic_write_text(report, render_report(results, out, time.time() - t0))
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    failed = [r["bundle"] for r in results if r["status"].startswith("FAILED")]
    if failed:
        raise SystemExit(f"demo failed for: {', '.join(failed)} (see {report})")
    return report
