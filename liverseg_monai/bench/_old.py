"""``make bench``: speed, memory and quality side by side, ratios taken in one run.

Each scenario runs in its own subprocess (``python -m liverseg_monai.bench SCENARIO --json OUT``) so
that its peak resident memory (``ru_maxrss``) is its own. Results go to ``bench/results.json`` and a
Markdown table in ``docs/benchmarks.md`` stating the machine, versions and command. Scenarios that
cannot run (a bundle or package missing) are recorded with the reason instead of failing the rest.

Scenarios (issue 11):
- ``ct_liver``: the liver bundle's inference config end to end (load, preprocess, slice inference,
  invert, connected components, save) on a synthetic 512x512x128 CT, against the network's forward
  passes alone on the same slices; peak RSS.
- ``ct_tumor``: the tumour pipeline end to end with active contours on and off (its share).
- ``slides``: DeepLab whole-slide inference on synthetic 5000^2 and 20000^2 slides: tiles/s against
  the forward-only rate on the same tiles, and peak RSS of each.
- ``train_input``: share of each training step spent waiting for data, with the bundle's loaders.
- ``networks``: forward time and parameter counts against segmentation_models_pytorch
  ``Unet``/``DeepLabV3Plus`` (ResNet-50 encoders, random weights, same input).
- ``quality``: held-out metrics of every bundle from the ``make demo`` recipes (synthetic data).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _timeit(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


# --------------------------------------------------------------------------- scenarios (in a subprocess)


def scenario_ct_liver(shape=(512, 512, 128), device: str = "cpu") -> dict:
    import nibabel as nib
    from monai.bundle import ConfigParser

    from liverseg_monai.data.synth.phantom import FOV_MM, make_ct_phantom, phantom_affine

    bundle = REPO / "bundles" / "liver_ct_unet_segmentation"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spacing = tuple(f / s for f, s in zip(FOV_MM, shape))
        affine = phantom_affine(shape, spacing, "LPS")
        ph = make_ct_phantom(shape, affine, np.random.default_rng(0))
        nib.save(nib.Nifti1Image(ph.ct, affine), str(tmp / "ct.nii.gz"))
        del ph
        (tmp / "dataset.json").write_text(json.dumps({"testing": ["ct.nii.gz"]}))
        parser = ConfigParser()
        parser.read_config(str(bundle / "configs" / "inference.json"))
        parser.update({"bundle_root": str(bundle), "dataset_dir": str(tmp), "output_dir": str(tmp / "out"),
                       "initialize": [], "device": f"$torch.device('{device}')"})
        parser["handlers"] = []
        evaluator = parser.get_parsed_content("evaluator")
        net = parser.get_parsed_content("network").eval()
        rss0 = _peak_rss_mb()
        t0 = time.perf_counter()
        evaluator.run()
        e2e = time.perf_counter() - t0
        # forward passes alone on the same slices (the preprocessed volume's axial slices, same batch)
        data = parser.get_parsed_content("preprocessing")({"image": str(tmp / "ct.nii.gz")})["image"]
        slices = torch.as_tensor(data).permute(3, 0, 1, 2).contiguous().to(device)  # (D, C, H, W)
        bs = int(parser.get_parsed_content("inferer").sw_batch_size)

        def forward_only():
            with torch.no_grad():
                for i in range(0, slices.shape[0], bs):
                    net(slices[i : i + bs])

        fwd = _timeit(forward_only)
        return {"scenario": "ct_liver", "shape": list(shape), "end_to_end_s": e2e, "forward_only_s": fwd,
                "ratio": e2e / fwd, "goal_ratio": 1.25, "peak_rss_mb": _peak_rss_mb(), "rss_before_run_mb": rss0,
                "goal_peak_rss_mb": 3072, "device": device}


def _bundle_network(bundle: str):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(REPO / "bundles" / bundle)
    return parser.get_parsed_content("network_def")


def scenario_networks(size: int = 256, batch: int = 4) -> dict:
    """Our bundles' networks (as their inference configs build them) against segmentation_models_pytorch."""
    import segmentation_models_pytorch as smp  # the bench extra

    rows = []
    specs = [
        ("U-Net ResNet-50 (liver_ct_unet_segmentation)", "liver_ct_unet_segmentation",
         lambda: smp.Unet("resnet50", encoder_weights=None, in_channels=1, classes=2), 1),
        ("DeepLabV3+ ResNet-50, deformable ASPP (liver_pathology_deeplab_segmentation)",
         "liver_pathology_deeplab_segmentation",
         lambda: smp.DeepLabV3Plus("resnet50", encoder_weights=None, in_channels=3, classes=7), 3),
    ]
    with torch.no_grad():
        for name, bundle, make_ref, channels in specs:
            try:
                ours, ref = _bundle_network(bundle).eval(), make_ref().eval()
            except Exception as err:  # a bundle missing or configured differently: say so
                rows.append({"network": name, "error": f"{type(err).__name__}: {err}"})
                continue
            x = torch.randn(batch, channels, size, size)
            ours(x), ref(x)  # warm-up
            t_ours = _timeit(lambda: ours(x), 3)  # noqa: B023
            t_ref = _timeit(lambda: ref(x), 3)  # noqa: B023
            rows.append({"network": name, "input": [batch, channels, size, size], "ours_s": t_ours, "smp_s": t_ref,
                         "time_ratio": t_ours / t_ref,
                         "ours_params_m": sum(p.numel() for p in ours.parameters()) / 1e6,
                         "smp_params_m": sum(p.numel() for p in ref.parameters()) / 1e6})
    return {"scenario": "networks", "rows": rows}


def scenario_train_input(steps: int = 20) -> dict:
    """Data-wait share of training steps for the liver bundle's train.json loaders."""
    from monai.bundle import ConfigParser

    from liverseg_monai.data.synth.lits import synth_lits

    bundle = REPO / "bundles" / "liver_ct_unet_segmentation"
    with tempfile.TemporaryDirectory() as tmp:
        synth_lits(tmp, seed=0, n=8, size=(256, 256, 64))
        parser = ConfigParser()
        parser.read_config(str(bundle / "configs" / "train.json"))
        parser.update({"bundle_root": str(bundle), "dataset_dir": tmp, "num_workers": 2})
        loader = parser.get_parsed_content("train#dataloader")
        net = parser.get_parsed_content("network")
        opt = parser.get_parsed_content("optimizer")
        loss_fn = parser.get_parsed_content("loss")
        wait = compute = 0.0
        n = 0
        while n < steps:
            it = iter(loader)
            while n < steps:
                t0 = time.perf_counter()
                try:
                    batch = next(it)
                except StopIteration:
                    break
                t1 = time.perf_counter()
                opt.zero_grad()
                loss = loss_fn(net(batch["image"]), batch["label"])
                loss.backward()
                opt.step()
                t2 = time.perf_counter()
                if n > 0:  # the first batch includes worker start-up
                    wait += t1 - t0
                    compute += t2 - t1
                n += 1
        return {"scenario": "train_input", "bundle": "liver_ct_unet_segmentation", "steps": steps - 1,
                "data_wait_share": wait / (wait + compute), "goal_share": 0.10,
                "mean_step_s": (wait + compute) / (steps - 1), "num_workers": 2, "dataset": "CacheDataset"}


SCENARIOS = {"ct_liver": scenario_ct_liver, "networks": scenario_networks, "train_input": scenario_train_input}


# --------------------------------------------------------------------------- driver


def _run_scenario(name: str, timeout: float = 3600) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    t = time.time()
    proc = subprocess.run([sys.executable, "-m", "liverseg_monai.bench", name, "--json", out],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return {"scenario": name, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    result = json.loads(Path(out).read_text())
    result["wall_s"] = time.time() - t
    return result


def _machine() -> dict:
    import monai

    return {"machine": platform.machine(), "processor": platform.processor() or "", "cpus": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def render(results: dict) -> str:
    m = results["machine"]
    lines = ["# Benchmarks", "", "Command: `make bench` (`python -m liverseg_monai bench --out bench`).  ",
             f"Machine: {m['machine']}, {m['cpus']} CPU cores, GPU: {m['gpu']}; Python {m['python']}, "
             f"torch {m['torch']}, MONAI {m['monai']}; measured {m['date']}.", "",
             "Ratios are taken within one run so machine noise cancels. Synthetic data throughout.", ""]
    for r in results["scenarios"]:
        lines += [f"## {r['scenario']}", ""]
        if "error" in r:
            lines += [f"Not measured: {r['error']}", ""]
            continue
        if r["scenario"] == "networks":
            lines += ["| network | input | ours (s) | smp (s) | time ratio | params ours (M) | params smp (M) |",
                      "|---|---|---|---|---|---|---|"]
            for row in r["rows"]:
                if "error" in row:
                    lines.append(f"| {row['network']} | not measured: {row['error']} | | | | | |")
                    continue
                lines.append(f"| {row['network']} | {row['input']} | {row['ours_s']:.3f} | {row['smp_s']:.3f} | "
                             f"{row['time_ratio']:.2f} | {row['ours_params_m']:.1f} | {row['smp_params_m']:.1f} |")
        else:
            lines += ["| measure | value |", "|---|---|"]
            for k, v in r.items():
                if k != "scenario":
                    lines.append(f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def run_bench(out: str | os.PathLike = "bench", only: str | None = None) -> Path:
    """Run the scenarios (or ``only`` one) and write OUT/results.json and docs/benchmarks.md."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = [only] if only else list(SCENARIOS)
    results = {"machine": _machine(), "scenarios": []}
    for name in names:
        print(f"bench: {name} ...", flush=True)
        results["scenarios"].append(_run_scenario(name))
        print(json.dumps(results["scenarios"][-1], default=str), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (REPO / "docs" / "benchmarks.md").write_text(render(results))
    return out / "results.json"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m liverseg_monai.bench")
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--json", required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    result = SCENARIOS[args.scenario]()
    Path(args.json).write_text(json.dumps(result, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
