"""The PathSegDiff model card's stage figures, measured on a trained demo folder.

    python -m tools research pathsegdiff_stage_figures demo_out/pathology_pathsegdiff_segmentation

Prints, on the folder's held-out (testing) tiles: the autoencoder's reconstruction PSNR and that of the
tiles' mean colour; the denoising MSE of the trained and of the untrained diffusion model (same noise and
timesteps); and the mIoU of a linear probe on the frozen diffusion features, on the untrained extractor's
features and on the raw RGB pixels. The computations are the stage-check tests' own
(``tests/bundles/test_pathology_pathsegdiff_segmentation.py``), here with the values printed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from monai.inferers import LatentDiffusionInferer

from liverseg_monai.engines.diffusion import diffusion_loss, load_module_weights, load_stage_weights
from tests.bundles import test_pathology_pathsegdiff_segmentation as checks


def main(folder: Path) -> None:
    root, data = folder / "bundle", folder / "data"
    models = root / "models"
    x, _ = checks.tiles(data, "testing")
    ae = checks.bundle_part(root, checks.demo_overrides("train_autoencoder"), "autoencoder_def")
    load_module_weights(ae, models / "autoencoder.pt")
    with torch.no_grad():
        psnr = -10 * torch.log10(torch.mean((ae.eval().reconstruct(x).clamp(0, 1) - x) ** 2))
        mean_colour = -10 * torch.log10(torch.mean((x.mean((0, 2, 3), keepdim=True) - x) ** 2))
    print(f"held-out PSNR {float(psnr):.2f} dB; mean colour {float(mean_colour):.2f} dB")

    overrides = checks.demo_overrides("train_diffusion")
    trained = checks.bundle_part(root, overrides, "extractor")
    load_stage_weights(trained, models / "autoencoder.pt", models / "diffusion.pt")
    initial = checks.bundle_part(root, overrides, "diffusion_def")
    initial.scale_factor.copy_(trained.diffusion.scale_factor)
    for name, diffusion in (("trained", trained.diffusion), ("untrained", initial)):
        torch.manual_seed(1)
        inferer = LatentDiffusionInferer(checks.bundle_part(root, overrides, "scheduler"))
        with torch.no_grad():
            mse = float(diffusion_loss(diffusion.eval(), trained.autoencoder, inferer, x[..., :64, :64])[0])
        print(f"denoising MSE, {name}: {mse:.4f}")

    overrides = checks.demo_overrides("train")
    n_classes = len(overrides["class_names"])
    train_x, train_y = checks.tiles(data, "training")
    random = checks.bundle_part(root, overrides, "extractor")
    for name, extract in (("diffusion features", trained), ("untrained extractor", random), ("raw RGB", None)):
        with torch.no_grad():
            f_train = train_x if extract is None else torch.cat([extract(train_x[i : i + 8]) for i in range(0, len(train_x), 8)])
            f_test = x if extract is None else torch.cat([extract(x[i : i + 8]) for i in range(0, len(x), 8)])
        _, test_y = checks.tiles(data, "testing")
        print(f"linear probe mIoU, {name}: {checks.linear_probe_miou(f_train, train_y, f_test, test_y, n_classes):.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
