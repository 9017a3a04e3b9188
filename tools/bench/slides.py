"""Whole-slide inference throughput and memory against the network alone (issue 11, item 2).

The DeepLab bundle's ``inference_slide.json`` (merged onto ``inference.json``, as its model card runs
it) segments one synthetic pyramidal H&E slide: thumbnail and tissue detection, patch grid, batched
patch reads, network, Gaussian blending by row bands, label TIFF, overlay PNG and area CSV. The
patch batches the network receives are recorded to disk as they pass (the recording time is
measured and taken out) and then run again through the network alone: tiles per second end to end
against the forward-only rate on exactly the same batches.

To keep a 20000 x 20000 slide affordable on a few CPU cores, ``slide_5000`` and ``slide_20000`` are glass
with one disc of tissue of a fixed size (``tissue_px`` across, the same for every slide size): tissue
detection skips the glass, so both slides run the same number of tiles and the peak memory compares what
grows with the slide's size (thumbnail, tissue mask, strips, label map writing). ``slide_tissue`` is the
realistic case beside them (issue 19 point 5): an 8000 x 8000 slide that is 60 % tissue (a 7000-px disc),
about 1100 tissue patches at the inference level, so the rate is measured over a long run of patches.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from tools.bench.common import (
    NetTimer,
    autocast,
    bundle_with_random_weights,
    peak_rss_mb,
    run_python,
    sync,
    timed,
)
from tools.runner import config_parser, run_parsed


class TissueDisc:
    """``f(y, x) -> bool``: a disc of tissue of ``diameter`` pixels centred on the slide."""

    def __init__(self, height: int, width: int, diameter: float):
        self.cy, self.cx, self.r2 = height / 2.0, width / 2.0, (diameter / 2.0) ** 2

    def __call__(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return (np.asarray(y) - self.cy) ** 2 + (np.asarray(x) - self.cx) ** 2 < self.r2


def write_bench_slide(out: str | Path, size: int, tissue_px: int, mpp: float = 0.5, seed: int = 0) -> Path:
    """A pyramidal synthetic H&E slide ``size`` x ``size``, glass except for one tissue disc; returns the folder.

    Built from :mod:`liverseg_monai.data.synth.slide`'s renderer and
    :func:`liverseg_monai.io.slide.write_pyramid` (tile by tile, bounded memory); no label slide.
    """
    from liverseg_monai.data.datalist import write_datalist
    from liverseg_monai.data.synth.histo import HistoField, Stain
    from liverseg_monai.data.synth.slide import SlideRenderer
    from liverseg_monai.io.slide import write_pyramid

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    field = HistoField(seed=int(rng.integers(0, 2**31 - 1)), scale=1.0 / mpp, region_px=250.0 / mpp,
                       region_probs=(0.03, 0.64, 0.33), tissue=TissueDisc(size, size, tissue_px))
    render = SlideRenderer(field, Stain.jittered(rng, 0.7), int(rng.integers(0, 2**31 - 1)), None, size)
    write_pyramid(out / "slide.tiff", render, mpp=mpp, shape=(size, size, 3), dtype=np.uint8, tile_size=256,
                  compression="jpeg", quality=90, description={"synthetic": "tools.bench.slides"})
    return write_datalist(out, {"training": [], "validation": [], "testing": [{"image": "slide.tiff"}], "mpp": mpp})


def ensure_slide(data_root: str | Path, size: int, tissue_px: int, seed: int = 0) -> Path:
    folder = Path(data_root) / f"slide_{size}_tissue{tissue_px}_seed{seed}"
    if not (folder / "dataset.json").is_file():
        run_python("from tools.bench.slides import write_bench_slide\n"
                   f"write_bench_slide({str(folder)!r}, {int(size)}, {int(tissue_px)}, seed={int(seed)})")
    return folder


class _BatchRecorder:
    """Forward pre-hook writing each input batch to disk; its own time is added up to be taken out."""

    def __init__(self, folder: Path):
        self.folder, self.files, self.seconds = folder, [], 0.0
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, module, args):
        import time

        t = time.perf_counter()
        path = self.folder / f"batch_{len(self.files):05d}.pt"
        torch.save(args[0].detach().cpu(), path)
        self.files.append(path)
        self.seconds += time.perf_counter() - t


def scenario_slide(work: str | Path, size: int = 5000, tissue_px: int = 2000, device: str = "cpu",
                   amp: bool = False, channels_last: bool = False, overrides: dict | None = None,
                   seed: int = 0) -> dict:
    """DeepLab whole-slide inference on a ``size`` x ``size`` slide: tiles/s vs forward-only, peak RSS."""
    work = Path(work)
    data = ensure_slide(work / "data", size, tissue_px, seed)
    bench = work / f"slide_{size}"
    overrides = dict(overrides or {})
    root = bundle_with_random_weights("liver_pathology_deeplab_segmentation", bench / "bundle",
                                      {"model.pt": "network_def"}, overrides=overrides, seed=seed)
    out_dir = bench / "out"
    parser = config_parser(root, ["inference.json", "inference_slide.json"],
                           {"dataset_dir": str(data), "output_dir": str(out_dir),
                            "device": f"$torch.device('{device}')", **overrides})
    net = parser.get_parsed_content("network").eval()
    if channels_last:
        net.to(memory_format=torch.channels_last)
    if amp:  # the slide runner calls the network directly: autocast around its forward
        forward = net.forward

        def amp_forward(*args, **kwargs):
            with autocast(device, True):
                return forward(*args, **kwargs)

        net.forward = amp_forward
    patch = int(parser.get_parsed_content("patch_size")[0])
    batch_size = int(parser.get_parsed_content("slide#batch_size"))
    with torch.inference_mode():  # warm-up
        net(torch.zeros(batch_size, 3, patch, patch, device=device))
    recorder = _BatchRecorder(bench / "batches")
    for f in recorder.folder.glob("*.pt"):
        f.unlink()
    handle = net.register_forward_pre_hook(recorder)
    net_timer = NetTimer(net, device)  # registered after the recorder: the recording is not counted
    rss_before = peak_rss_mb()
    t_e2e, _ = timed(lambda: run_parsed(parser), device)
    rss_e2e = peak_rss_mb()
    handle.remove()
    net_timer.remove()
    summary = json.loads((out_dir / "slides.json").read_text())[0]
    tiles = int(summary["predicted_patches"])

    def forward_only() -> float:  # only the network time, batch by batch from disk
        total = 0.0
        with torch.inference_mode():
            for path in recorder.files:
                x = torch.load(path, weights_only=True).to(device)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                sync(device)
                seconds, _ = timed(lambda x=x: net(x), device)
                total += seconds
        return total

    t_fwd = forward_only()
    t_run = t_e2e - recorder.seconds
    rate_e2e, rate_fwd = tiles / t_run, tiles / t_fwd
    return {
        "bundle": "liver_pathology_deeplab_segmentation", "config": "configs/inference.json + inference_slide.json",
        "slide_px": [size, size], "tissue_disc_px": tissue_px, "tissue_fraction": tissue_fraction(size, tissue_px),
        "weights": f"random init (seed {seed})",
        "network_overrides": overrides, "device": device, "amp": amp, "channels_last": channels_last,
        "patch_px": patch, "batch_size": batch_size, "tiles": tiles, "grid_patches": summary["patches"],
        "batches": len(recorder.files), "end_to_end_s": t_run, "recording_s_taken_out": recorder.seconds,
        "forward_only_s": t_fwd, "tiles_per_s_end_to_end": rate_e2e, "tiles_per_s_forward_only": rate_fwd,
        "rate_ratio": rate_e2e / rate_fwd, "goal_rate_ratio_min": 0.8,
        "network_in_run_s": net_timer.seconds, "tiles_per_s_network_in_run": tiles / net_timer.seconds,
        "rate_ratio_to_network_in_run": net_timer.seconds / t_run,
        "peak_rss_mb": rss_e2e, "rss_before_run_mb": rss_before,
    }


def tissue_fraction(size: int, tissue_px: int) -> float:
    """Share of a ``size`` x ``size`` slide covered by the centred tissue disc of ``tissue_px`` (area of the
    disc clipped to the slide, computed on a 1-px grid of ``min(size, 2000)`` samples per side)."""
    n = min(int(size), 2000)
    centres = (np.arange(n) + 0.5) * (size / n)
    yy, xx = np.meshgrid(centres, centres, indexing="ij")
    return float(TissueDisc(size, size, tissue_px)(yy, xx).mean())


def scenario_slide_small(work, **kwargs) -> dict:
    return scenario_slide(work, **{"size": 5000, **kwargs})


def scenario_slide_large(work, **kwargs) -> dict:
    return scenario_slide(work, **{"size": 20000, **kwargs})


def scenario_slide_tissue(work, **kwargs) -> dict:
    """The realistic slide: mostly tissue, over a thousand tissue patches (issue 19 point 5)."""
    return scenario_slide(work, **{"size": 8000, "tissue_px": 7000, **kwargs})
