"""CT pipelines end to end against their networks' forward passes alone (issue 11, item 1).

``ct_liver``: the liver bundle's ``inference.json`` as ``monai.bundle run`` runs it (load, orient,
window, resize, slice-wise inference, softmax, invert, argmax, largest component, save NIfTI and
overlay PNG) on one synthetic CT; ``ct_tumor``: the tumour bundle's two-stage ``inference.json``
(load, resample, stage 1 on the whole volume, stage 2 on the liver box, active contours, overlay,
invert, save). Both against the forward passes of the same networks on the same inputs, against read +
forward passes + write (the floor of any pipeline: MONAI's ``LoadImage`` of the input and ``SaveImage`` of
a mask of its shape, timed in the same process after the run), and the peak resident memory of the process.

The networks are randomly initialised with a fixed seed (speed does not depend on the weights).
The active-contour cost does depend on the predicted lesions, so ``ct_tumor`` also times the
bundle's own ``refine`` transform on the phantom's ground-truth labels (realistic lesions) and
reports the share both ways.
"""

from __future__ import annotations

import json
import time
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


def write_ct_case(folder: str | Path, shape=(512, 512, 128), seed: int = 0) -> Path:
    """Write ``ct.nii.gz``, ``label.nii.gz`` and ``dataset.json`` of one synthetic phantom into ``folder``."""
    import nibabel as nib

    from liverseg_monai.data.synth.phantom import FOV_MM, make_ct_phantom, phantom_affine

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(s) for s in shape)
    affine = phantom_affine(shape, tuple(f / s for f, s in zip(FOV_MM, shape)), "LPS")
    ph = make_ct_phantom(shape, affine, np.random.default_rng(seed))
    nib.save(nib.Nifti1Image(ph.ct, affine), str(folder / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(ph.lits_label(), affine), str(folder / "label.nii.gz"))
    (folder / "dataset.json").write_text(json.dumps({"testing": [{"image": "ct.nii.gz"}]}))
    return folder


def ensure_ct_case(data_root: str | Path, shape=(512, 512, 128), seed: int = 0) -> Path:
    """A synthetic CT (int16 HU, LPS NIfTI, 400 x 400 x 240 mm) with its LiTS-style labels, made once.

    ``<data_root>/ct_<X>x<Y>x<Z>_seed<S>/`` (see :func:`write_ct_case`). Volumes above a million voxels
    are made by a helper process, so that the phantom's own memory stays out of the scenario's peak.
    """
    shape = tuple(int(s) for s in shape)
    folder = Path(data_root) / f"ct_{'x'.join(map(str, shape))}_seed{seed}"
    if not (folder / "dataset.json").is_file():
        if np.prod(shape) <= 1_000_000:
            write_ct_case(folder, shape, seed)
        else:
            run_python(f"from tools.bench.ct import write_ct_case; write_ct_case({str(folder)!r}, {shape!r}, {seed})")
    return folder


def _count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]

    def hook(*_):
        calls[0] += 1

    module.register_forward_hook(hook)
    return calls


def _output_geometry(output_dir: Path, image: Path) -> dict:
    """The saved mask's shape and affine against the input's (geometry must be kept)."""
    import nibabel as nib

    segs = sorted(output_dir.glob("*_seg.nii.gz"))
    if not segs:
        return {"output": None, "geometry_kept": False}
    a, b = nib.load(str(segs[0])), nib.load(str(image))
    same = a.shape == b.shape and np.allclose(a.affine, b.affine, atol=1e-4)
    return {"output": segs[0].name, "geometry_kept": bool(same), "output_shape": list(a.shape)}


def read_write_s(image: Path, out_dir: Path) -> dict:
    """Seconds to read the input CT and to write a label mask of its shape, with MONAI's I/O as the bundles use it.

    The floor any pipeline pays around its forward passes: ``LoadImage`` (nibabel reader) of the input,
    and ``SaveImage`` of a uint8 mask of the input's shape and affine to ``.nii.gz`` (a copy of the saved
    mask, so the compressed size is a real one).
    """
    from monai.transforms import LoadImage, SaveImage

    t = time.perf_counter()
    img = LoadImage(image_only=True)(str(image))
    t_read = time.perf_counter() - t
    segs = sorted(out_dir.glob("*_seg.nii.gz"))
    mask = LoadImage(image_only=True)(str(segs[0])) if segs else img.new_zeros(img.shape)
    mask.meta["filename_or_obj"] = str(image)
    folder = out_dir.parent / "read_write"
    t = time.perf_counter()
    SaveImage(output_dir=str(folder), output_postfix="seg", output_ext=".nii.gz", output_dtype=np.uint8,
              separate_folder=False, print_log=False, resample=False)(mask[None].to(torch.uint8))
    t_write = time.perf_counter() - t
    return {"read_s": t_read, "write_s": t_write}


def _read_forward_write(row: dict, io: dict) -> dict:
    total = io["read_s"] + row["forward_only_s"] + io["write_s"]
    return {**io, "read_forward_write_s": total, "ratio_to_read_forward_write": row["end_to_end_s"] / total}


def _device_overrides(device: str, amp: bool) -> dict:
    return {"device": f"$torch.device('{device}')", "evaluator#amp": bool(amp)}


def scenario_ct_liver(work: str | Path, shape=(512, 512, 128), device: str = "cpu", amp: bool = False,
                      channels_last: bool = False, seed: int = 0, overrides: dict | None = None) -> dict:
    """Liver bundle end to end vs its network's forward passes on the same preprocessed slices."""
    work = Path(work)
    data = ensure_ct_case(work / "data", shape, seed)
    root = bundle_with_random_weights("liver_ct_unet_segmentation", work / "ct_liver" / "bundle",
                                      {"model.pt": "network_def"}, seed=seed)
    out_dir = work / "ct_liver" / "out"
    parser = config_parser(root, ["inference.json"], {"dataset_dir": str(data), "output_dir": str(out_dir),
                                                      **_device_overrides(device, amp), **(overrides or {})})
    net = parser.get_parsed_content("network")
    if channels_last:
        net.to(memory_format=torch.channels_last)
    inferer = parser.get_parsed_content("inferer")
    bs = int(inferer.sw_batch_size)
    size = [int(s) for s in parser.get_parsed_content("spatial_size")]
    channels = int(parser.get_parsed_content("in_channels"))
    net.eval()
    with torch.no_grad(), autocast(device, amp):  # warm-up (kernel selection), outside both timings
        net(torch.zeros(bs, channels, *size, device=device))
    calls = _count_calls(net)
    pre, steps = _instrument(parser, device)
    net_timer = NetTimer(net, device)
    rss_before = peak_rss_mb()
    t_e2e, _ = timed(lambda: run_parsed(parser), device)
    net_timer.remove()  # the forward-only passes below must not add to the in-run network time
    rss_e2e = peak_rss_mb()
    e2e_calls = calls[0]
    breakdown = _breakdown(t_e2e, pre, {"FlexibleUNet": net_timer}, steps)
    # forward passes alone: the same preprocessed volume, its axial slices in SliceInferer's batches
    image = parser.get_parsed_content("preprocessing")({"image": str(data / "ct.nii.gz")})["image"]
    slices = torch.as_tensor(image).as_subclass(torch.Tensor).permute(3, 0, 1, 2).contiguous().to(device)
    if channels_last:
        slices = slices.contiguous(memory_format=torch.channels_last)

    def forward_only():
        with torch.no_grad(), autocast(device, amp):
            for i in range(0, slices.shape[0], bs):
                net(slices[i : i + bs])

    calls[0] = 0
    t_fwd, _ = timed(forward_only, device)
    io = read_write_s(data / "ct.nii.gz", out_dir)
    row = {
        "bundle": "liver_ct_unet_segmentation", "config": "configs/inference.json", "shape": list(shape),
        "weights": f"random init (seed {seed})", "device": device, "amp": amp, "channels_last": channels_last,
        "config_overrides": overrides or {}, "end_to_end_s": t_e2e, "forward_only_s": t_fwd, "ratio": t_e2e / t_fwd, "goal_ratio_max": 1.25,
        "forward_calls_end_to_end": e2e_calls, "forward_calls_forward_only": calls[0],
        "slices": int(slices.shape[0]), "slice_size": size, "sw_batch_size": bs, "breakdown_s": breakdown,
        "network_in_run_s": net_timer.seconds, "ratio_to_network_in_run": t_e2e / net_timer.seconds,
        "peak_rss_mb": rss_e2e, "rss_before_run_mb": rss_before, "goal_peak_rss_mb_max": 3072,
        **_output_geometry(out_dir, data / "ct.nii.gz"),
    }
    return {**row, **_read_forward_write(row, io)}


class _Timed:
    """A transform wrapped to add up the seconds spent in it (the active-contour share)."""

    def __init__(self, transform, device: str):
        self.transform, self.device, self.seconds, self.calls = transform, device, 0.0, 0

    def __call__(self, data):
        sync(self.device)
        t = time.perf_counter()
        out = self.transform(data)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return out


def _instrument(parser, device: str) -> tuple[_Timed, list[tuple[str, _Timed]]]:
    """Time the dataset's preprocessing and each post-processing transform of a parsed bundle config.

    The ``Invertd`` transforms keep the original preprocessing ``Compose`` (only the dataset's
    reference is wrapped), so inversion is unaffected.
    """
    dataset = parser.get_parsed_content("dataset")
    pre = _Timed(dataset.transform, device)
    dataset.transform = pre
    post = parser.get_parsed_content("postprocessing")
    steps = [(type(t).__name__, _Timed(t, device)) for t in post.transforms]
    post.transforms = tuple(timer for _, timer in steps)
    return pre, steps


def _breakdown(total: float, pre: _Timed, nets: dict[str, NetTimer], steps: list[tuple[str, _Timed]]) -> dict:
    """Seconds per part of an end-to-end run; ``other`` is the rest (inferer, engine, handlers)."""
    out = {"preprocessing (load, orient, resample/resize, window)": pre.seconds}
    out.update({f"network: {name}": timer.seconds for name, timer in nets.items()})
    for name, timer in steps:
        key = f"post: {name}"
        while key in out:
            key += "'"
        out[key] = timer.seconds
    out["other (inferer, engine, handlers)"] = total - sum(out.values())
    return out


def _labels_on_grid(data: Path, spacing) -> torch.Tensor:
    """The phantom's ground-truth labels on the tumour bundle's working grid (nearest neighbour)."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd, Spacingd

    load = Compose([LoadImaged(keys="label", image_only=True), EnsureChannelFirstd(keys="label"),
                    Orientationd(keys="label", axcodes="RAS"), Spacingd(keys="label", pixdim=spacing, mode="nearest")])
    return load({"label": str(data / "label.nii.gz")})["label"]


def scenario_ct_tumor(work: str | Path, shape=(512, 512, 128), device: str = "cpu", amp: bool = False,
                      seed: int = 0, overrides: dict | None = None) -> dict:
    """Tumour bundle (two stages + active contours) end to end vs the two networks' forward passes."""
    from liverseg_monai.networks.two_stage import resize, window

    work = Path(work)
    data = ensure_ct_case(work / "data", shape, seed)
    root = bundle_with_random_weights(
        "liver_tumor_ct_segresnetvae", work / "ct_tumor" / "bundle",
        {"model_liver.pt": "liver#network_def", "model_tumor.pt": "tumor#network_def"}, overrides=overrides,
        seed=seed)
    out_dir = work / "ct_tumor" / "out"
    parser = config_parser(root, ["inference.json"], {"dataset_dir": str(data), "output_dir": str(out_dir),
                                                      **_device_overrides(device, amp), **(overrides or {})})
    segmenter = parser.get_parsed_content("network")
    refine = parser.get_parsed_content("refine")
    pre, steps = _instrument(parser, device)
    timed_refine = next(timer for _, timer in steps if timer.transform is refine)
    liver_net, tumor_net = segmenter.liver_net.eval(), segmenter.tumor_net.eval()
    liver_in = torch.zeros(1, 1, *segmenter.liver_size, device=device)
    tumor_in = torch.zeros(1, 1, *segmenter.tumor_size, device=device)
    with torch.no_grad(), autocast(device, amp):  # warm-up
        liver_net(liver_in), tumor_net(tumor_in)
    liver_calls, tumor_calls = _count_calls(liver_net), _count_calls(tumor_net)
    nets = {"stage 1 (liver)": NetTimer(liver_net, device), "stage 2 (tumour)": NetTimer(tumor_net, device)}
    whole = NetTimer(segmenter, device)
    rss_before = peak_rss_mb()
    t_e2e, _ = timed(lambda: run_parsed(parser), device)
    for timer in (*nets.values(), whole):  # the forward-only passes below must not add to them
        timer.remove()
    rss_e2e = peak_rss_mb()
    breakdown = _breakdown(t_e2e, pre, nets, steps)
    glue = whole.seconds - sum(t.seconds for t in nets.values())
    breakdown["two-stage glue (window, resize, softmax, liver clean-up, crop)"] = glue
    breakdown["other (inferer, engine, handlers)"] -= glue
    stage_calls = [liver_calls[0], tumor_calls[0]]

    # the pipeline's output: how much tumour the random networks predicted (drives the contour cost)
    import nibabel as nib

    geometry = _output_geometry(out_dir, data / "ct.nii.gz")
    pred_tumor_voxels = None
    if geometry["output"]:
        pred_tumor_voxels = int((np.asarray(nib.load(str(out_dir / geometry["output"])).dataobj) == 2).sum())

    # forward passes alone on the same preprocessed volume: stage 1 on the whole volume, stage 2 on the
    # ground-truth liver box (both are resized to fixed grids, so their cost does not depend on the box)
    image = parser.get_parsed_content("preprocessing")({"image": str(data / "ct.nii.gz")})["image"]
    img = torch.as_tensor(image).as_subclass(torch.Tensor)[None].float().to(device)
    spacing = parser.get_parsed_content("spacing")
    labels = _labels_on_grid(data, spacing)
    x0, x1, y0, y1, z0, z1 = segmenter.crop(torch.as_tensor(labels)[0] > 0)  # the bundle's own crop
    x_liver = resize(window(img, *segmenter.liver_window), segmenter.liver_size)
    x_tumor = resize(window(img[..., x0:x1, y0:y1, z0:z1], *segmenter.tumor_window), segmenter.tumor_size)

    def forward_only():
        with torch.no_grad(), autocast(device, amp):
            liver_net(x_liver)
            tumor_net(x_tumor)

    t_fwd, _ = timed(forward_only, device)

    # the active contour on realistic lesions: the phantom's own tumours, through the bundle's transform
    item = {"image": image, "pred": torch.as_tensor(labels).float()}
    t_ac_real, refined = timed(lambda: refine(dict(item)), "cpu")
    from scipy import ndimage

    n_lesions = int(ndimage.label(np.asarray(labels[0]) == 2)[1])
    t_other = t_e2e - timed_refine.seconds  # the pipeline without its contour step
    io = read_write_s(data / "ct.nii.gz", out_dir)
    row = {
        "bundle": "liver_tumor_ct_segresnetvae", "config": "configs/inference.json", "shape": list(shape),
        "working_grid": list(image.shape[1:]), "weights": f"random init (seed {seed})", "device": device, "amp": amp,
        "end_to_end_s": t_e2e, "forward_only_s": t_fwd, "ratio": t_e2e / t_fwd, "goal_ratio_max": 1.25,
        "network_in_run_s": sum(t.seconds for t in nets.values()),
        "ratio_to_network_in_run": t_e2e / sum(t.seconds for t in nets.values()),
        "stage_calls_end_to_end": stage_calls, "breakdown_s": breakdown, "predicted_tumor_voxels": pred_tumor_voxels,
        "active_contour_s_in_run": timed_refine.seconds, "active_contour_share_in_run": timed_refine.seconds / t_e2e,
        "active_contour_s_realistic": t_ac_real, "realistic_lesions": n_lesions,
        "realistic_lesion_voxels": int((np.asarray(labels[0]) == 2).sum()),
        "active_contour_share_realistic": t_ac_real / (t_other + t_ac_real), "goal_ac_share_max": 0.15,
        "ratio_realistic": (t_other + t_ac_real) / t_fwd,
        "peak_rss_mb": rss_e2e, "rss_before_run_mb": rss_before, "goal_peak_rss_mb_max": 3072,
        "note": "realistic = the pipeline time with its contour step replaced by the bundle's refine transform "
                "timed on the phantom's ground-truth labels",
        **geometry,
    }
    return {**row, **_read_forward_write(row, io)}


if __name__ == "__main__":  # pragma: no cover - manual check
    import sys

    print(json.dumps(scenario_ct_liver(sys.argv[1], shape=(64, 64, 32)), indent=1))
