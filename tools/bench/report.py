"""``docs/benchmarks.md`` from ``bench/results.json``: one section per machine, one table per scenario group."""

from __future__ import annotations

from pathlib import Path

HEADER = """# Benchmarks

Written by `make bench` (`python -m tools bench --out bench`) from `bench/results.json`; do not
edit by hand. `make bench-quality` adds the quality rows (the papers' claims with seeds and ci95, see
[claims.md](claims.md); they train), `--device cuda` adds GPU rows.
Results of several machines are merged by machine key. Synthetic data throughout; ratios are taken
within one run so that machine noise cancels. Peak memory is each scenario process's `ru_maxrss`
(the interpreter, torch and MONAI included). Goals are those of issue 19 (:data:`GOALS`, by device);
**met** / **missed** says which were reached, and a missed goal says by what factor.
"""

#: issue 19 point 6, by device type: CPU goals are ratios within one run, GPU goals seconds for 512x512x128
GOALS = {
    "cpu": {"ct_liver_ratio": 1.25, "ct_tumor_ratio": 1.5, "slide_rate_ratio": 0.8, "deformable_vs_smp": 1.5,
            "train_wait": 0.10, "peak_rss_mb": 3072},
    "cuda": {"ct_liver_s": 1.5, "ct_tumor_s": 2.5, "slide_rate_ratio": 0.8, "train_wait": 0.10, "peak_rss_mb": 3072},
}


def _device(run_or_machine: dict) -> str:
    machine = run_or_machine.get("machine", run_or_machine)
    return "cuda" if str(machine.get("device", "cpu")).startswith("cuda") else "cpu"


def _within(value, limit, upper: bool = True) -> str:
    """`` **met**`` or `` **missed** (x1.53 the goal)`` for ``value`` against an upper (or lower) ``limit``."""
    if value is None or limit is None:
        return ""
    ok = value <= limit if upper else value >= limit
    if ok:
        return " **met**"
    factor = value / limit if upper else limit / max(value, 1e-12)
    return f" **missed** (x{factor:.2f} {'over' if upper else 'short of'} the goal)"


def _f(v, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _goal(ok: bool | None) -> str:
    return "" if ok is None else (" **met**" if ok else " **missed**")


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _run_line(r: dict) -> str:
    command = f", `{r['command']}`" if r.get("command") else ""
    return (f"preset `{r.get('preset')}`, {r.get('date', '?')}{command}, {r.get('wall_s', '?')} s, load average "
            f"{r.get('load_average_before')} before / {r.get('load_average_after')} after")


def _ct(scen: dict, device: str = "cpu") -> list[str]:
    rows = [(n, scen[n]) for n in ("ct_liver", "ct_tumor") if n in scen]
    if not rows:
        return []
    goals = GOALS[device]
    lines = ["### CT pipelines: end to end vs forward passes alone", "",
             "*Forward only* replays the networks on the same inputs after the run; *network in run* is the time "
             "inside the networks' forward passes during the run itself (hooks), so both sides of that ratio "
             "share the machine's load at the moment.", "",
             ("Goals (issue 19): end to end ≤ 1.5 s (liver) and ≤ 2.5 s (tumour) for 512x512x128." if device == "cuda"
              else "Goals (issue 19): liver ratio ≤ 1.25, tumour ratio ≤ 1.5 with the contour on real-sized lesions "
              "(the phantom's), peak RSS ≤ 3072 MiB."), "",
             "*Read + forward + write* adds MONAI's `LoadImage` of the input and `SaveImage` of a mask of its shape "
             "to the forward passes: the floor of any pipeline on this machine.", "",
             "| pipeline | input | end to end (s) | forward only (s) | ratio | read + forward + write (s), ratio "
             "| network in run (s), ratio | peak RSS MiB | active contour share |",
             "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for name, r in rows:
        if "error" in r:
            lines.append(f"| {name} | not measured: {r['error']} | | | | | | | |")
            continue
        rfw = (f"{_f(r['read_forward_write_s'])}, {_f(r['ratio_to_read_forward_write'])}"
               if r.get("read_forward_write_s") else "-")
        ac = ""
        if name == "ct_tumor":
            share = r["active_contour_share_realistic"]
            ac = (f"{_pct(share)} on the phantom's lesions; "
                  f"{_pct(r['active_contour_share_in_run'])} in this run (random weights: "
                  f"{r['predicted_tumor_voxels']} tumour voxels predicted)")
            notes.append(f"`ct_tumor`: working grid {r['working_grid']}; with the contour step timed on the phantom's "
                         f"{r['realistic_lesions']} lesion(s) ({r['realistic_lesion_voxels']} voxels) the end-to-end "
                         f"ratio is {_f(r['ratio_realistic'])}.")
        full_size = list(r["shape"]) == [512, 512, 128]
        seconds_goal = _within(r["end_to_end_s"], goals.get(f"{name}_s")) if full_size else ""
        ratio = r.get("ratio_realistic") if name == "ct_tumor" and r.get("ratio_realistic") else r["ratio"]
        ratio_goal = _within(ratio, goals.get(f"{name}_ratio"))
        ratio_text = (f"{_f(r['ratio'])}; {_f(ratio)} with the contour on the phantom's lesions{ratio_goal}"
                      if name == "ct_tumor" and r.get("ratio_realistic") else f"{_f(r['ratio'])}{ratio_goal}")
        lines.append(f"| {name} ({r['bundle']}) | {'x'.join(map(str, r['shape']))} CT, {r['weights']}"
                     f"{', AMP' if r.get('amp') else ''} | {_f(r['end_to_end_s'])}{seconds_goal} | {_f(r['forward_only_s'])} | "
                     f"{ratio_text} | {rfw} | "
                     f"{_f(r.get('network_in_run_s'))}, {_f(r.get('ratio_to_network_in_run'))} | "
                     f"{_f(r['peak_rss_mb'], 0)}{_within(r['peak_rss_mb'], goals['peak_rss_mb'])} | {ac} |")
        notes.append(f"`{name}`: {_run_line(r)}; output geometry kept: {r.get('geometry_kept')}.")
        if r.get("breakdown_s"):
            notes.append(f"`{name}` end-to-end seconds by part: "
                         + ", ".join(f"{k} {v:.2f}" for k, v in r["breakdown_s"].items()) + ".")
    return lines + [""] + [f"- {n}" for n in notes] + [""]


def _slides(scen: dict) -> list[str]:
    rows = [(n, scen[n]) for n in ("slide_5000", "slide_20000", "slide_tissue") if n in scen]
    if not rows:
        return []
    lines = ["### Whole slides (DeepLab `inference_slide.json`): tiles/s vs forward only", "",
             "*Forward only* replays the recorded patch batches through the network after the run; *network in run* "
             "is the network's own time during the run (hooks), which shares the machine's load at the moment.", "",
             "| slide | tissue | tiles | end to end tiles/s | forward-only tiles/s | ratio (goal ≥ 0.8, issue 19) | network-in-run tiles/s, "
             "ratio | peak RSS MiB | vs the first slide (goal ≤ 1.20) |", "|---|---|---|---|---|---|---|---|---|"]
    base = None
    notes = []
    for name, r in rows:
        if "error" in r:
            lines.append(f"| {name} | not measured: {r['error']} | | | | | | | |")
            continue
        rel = ""
        if base is None:
            base = r["peak_rss_mb"]
        else:
            q = r["peak_rss_mb"] / base
            rel = f"{q:.2f}{_goal(q <= 1.2)}"
        size = "x".join(map(str, r["slide_px"]))
        share = f"{r['tissue_fraction']:.0%}" if r.get("tissue_fraction") is not None else "-"
        lines.append(f"| {size} px, tissue disc {r['tissue_disc_px']} px{', AMP' if r.get('amp') else ''} | {share} | "
                     f"{r['tiles']} | "
                     f"{_f(r['tiles_per_s_end_to_end'])} | {_f(r['tiles_per_s_forward_only'])} | "
                     f"{_f(r['rate_ratio'])}{_within(r['rate_ratio'], GOALS['cpu']['slide_rate_ratio'], upper=False)} | "
                     f"{_f(r.get('tiles_per_s_network_in_run'))}, {_f(r.get('rate_ratio_to_network_in_run'))} | "
                     f"{_f(r['peak_rss_mb'], 0)} | {rel} |")
        notes.append(f"`{name}`: {r['patch_px']}-px patches, batch {r['batch_size']}, {r['weights']}, network "
                     f"overrides {r['network_overrides'] or 'none (ResNet-50, as configured)'}; {_run_line(r)}.")
    return lines + [""] + [f"- {n}" for n in notes] + [""]


def _fast(row: dict) -> str:
    return {True: "on", False: "off"}.get(row.get("fast_path"), "-")


def _train(r: dict) -> list[str]:
    lines = ["### Training input: share of each step spent waiting for data", ""]
    if "error" in r:
        return lines + [f"Not measured: {r['error']}", ""]
    min_epoch = r.get("min_epoch_steps", 1)
    epochs = (f" Each loader iterates its dataset repeated until an epoch has at least {min_epoch} batches "
              "(the demo datasets give 3-6-step epochs; a real dataset's are hundreds of steps): same items, "
              "transforms and loader settings." if min_epoch > 1 else "")
    lines += [f"{r['steps_per_stage']} steps per stage after the first; {r['data']}; {_run_line(r)}. "
              "*All* includes the first step of each later epoch (DataLoader workers restart); *steady* leaves "
              f"those out; *epoch start* is that first step's wait.{epochs}", "",
              "*fast path*: the config's `fast_path` switch (device cache, ThreadDataLoader, AMP and channels-last "
              "on a GPU; on a CPU only the loader changes); `-`: a stage without the switch.", "",
              "| bundle | stage | fast path | dataset / loader | steps (epoch starts) | data wait, all (goal ≤ 10%) | steady | "
              "epoch start (s) | mean step (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        if "error" in row:
            lines.append(f"| {row['bundle']} | {row.get('stage', '')} | {_fast(row)} | not measured: {row['error']} "
                         "| | | | | |")
            continue
        ld = row["loader"]
        cache = f", {ld['cached_items']}/{ld['items']} cached" if ld.get("cached_items") is not None else ""
        repeats = f" x {row['dataset_repeats']}" if row.get("dataset_repeats", 1) > 1 else ""
        loader = (f"{ld['dataset']}({ld['items']} items{cache}){repeats}, {ld['loader']}(batch_size={ld['batch_size']}, "
                  f"num_workers={ld['num_workers']}, persistent_workers={ld['persistent_workers']})")
        share = row["data_wait_share"]
        lines.append(f"| {row['bundle']} | {row['stage']} | {_fast(row)} | {loader} | {row['steps']} ({row['epoch_starts']}) | "
                     f"{_pct(share)}{_within(share, GOALS['cpu']['train_wait'])} | "
                     f"{_pct(row['data_wait_share_steady'])} | {_f(row.get('mean_epoch_start_wait_s'), 3)} | "
                     f"{_f(row['mean_step_s'], 3)} |")
    return lines + [""]


def _networks(r: dict, device: str = "cpu") -> list[str]:
    lines = ["### Networks vs segmentation_models_pytorch (ResNet-50 encoders, random weights)", ""]
    if "error" in r:
        return lines + [f"Not measured: {r['error']}", ""]
    lines += [f"smp {r.get('smp')}, best of {r['repeat']} after a warm-up{', AMP + channels-last' if r.get('amp') else ''}; "
              f"{_run_line(r)}.", "",
              "Goal (issue 19, CPU): DeepLabV3+ with deformable ASPP ≤ 1.5x smp's DeepLabV3+ time.", "",
              "| network | reference | input | ours (s) | smp (s) | time ratio | params ours (M) | params smp (M) |",
              "|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        if "error" in row:
            lines.append(f"| {row['network']} | not measured: {row['error']} | | | | | | |")
            continue
        lines.append(f"| {row['network']} | {row['reference']} | {row['input']} | {_f(row['ours_s'], 3)} | "
                     f"{_f(row['smp_s'], 3)} | {_f(row['time_ratio'])}"
                     f"{_within(row['time_ratio'], GOALS[device].get('deformable_vs_smp')) if 'deformable' in row['network'] else ''} | "
                     f"{_f(row['ours_params_m'], 1)} | "
                     f"{_f(row['smp_params_m'], 1)} |")
    return lines + [""]


def _ablation(r: dict, title: str) -> list[str]:
    """Rows with a mean and a bootstrap ci95 over held-out cases and seeds, and the paired difference."""
    lines = [f"### {title}", ""]
    if "error" in r:
        return lines + [f"Not measured: {r['error']}", ""]
    lines += [f"{_run_line(r)}. Budget: {r['budget']}. Interval: 95 % percentile bootstrap over seeds and "
              "held-out tiles (`liverseg_monai.metrics.bootstrap`).", "",
              "| arm | metric | mean | ci95 | held-out n | seeds | verdict |", "|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lo, hi = row["ci95"]
        lines.append(f"| {row['arm']} | {row['metric']} | {_f(row['mean'], 3)} | [{_f(lo, 3)}, {_f(hi, 3)}] | "
                     f"{row['n_held_out']} | {len(row['seeds'])} | {row.get('verdict', '')} |")
    return lines + [""]


def render_markdown(data: dict) -> str:
    lines = [HEADER]
    for key, run in data.get("runs", {}).items():
        m = run["machine"]
        scen = run["scenarios"]
        lines += [f"## {key}", "",
                  f"Device `{m['device']}` (GPU: {m['gpu']}); CPU {m['cpu']}, {m['cpus']} cores, torch threads "
                  f"{m['torch_threads']} (OMP_NUM_THREADS={m['omp_num_threads']}); Python {m['python']}, torch "
                  f"{m['torch']}, MONAI {m['monai']}; {m['platform']}.  ", f"Last command: `{run['command']}`", ""]
        device = _device(run)
        lines += _ct(scen, device) + _slides(scen)
        if "train_input" in scen:
            lines += _train(scen["train_input"])
        if "networks" in scen:
            lines += _networks(scen["networks"], device)
        if any(name.startswith("claim:") for name in scen):
            from tools.bench.claims import floor_lines

            lines += ["### Quality floors (claims protocol; details in [claims.md](claims.md))", ""] + floor_lines(scen)
        for name in sorted(n for n in scen if n.startswith("peer:") and "rows" in scen[n]):
            from tools.bench.claims import peer_table

            lines += [f"### nnU-Net v2 beside the bundle (`{name}`, equal training wall clock; details in "
                      "[claims.md](claims.md))", ""] + peer_table(scen[name]) + [""]
        if "pathsegdiff_features" in scen:
            lines += _ablation(scen["pathsegdiff_features"], "PathSegDiff: head on diffusion features vs on DINO "
                               "features vs on a random extractor (`make bench-quality`)")
    return "\n".join(lines).rstrip() + "\n"


def write_markdown(data: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_markdown(data))
    return path
