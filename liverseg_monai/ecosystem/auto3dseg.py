"""The code behind the ``auto3dseg/segresnetvae`` Auto3DSeg algorithm template.

Auto3DSeg (``monai.apps.auto3dseg``) copies an algorithm template per fold, fills
``configs/hyper_parameters.yaml`` from the data statistics (``SegresnetvaeAlgo.fill_template_config``),
runs ``scripts/train.py run --config_file ... --KEY VALUE``, reads the best validation Dice from
``{ckpt_path}/progress.yaml`` and ensembles with ``scripts/infer.py``'s ``InferClass``. The template's
scripts only call the functions here:

* :func:`fill_hyper_parameters` - the template values that follow from the data statistics;
* :func:`train` - parse the filled config and run its ``train#trainer`` (MONAI ``SupervisedTrainer``
  on a ``SegResNetVAE`` with the VAE-regularised loss; validation keeps the best ``model.pt``);
* :class:`ProgressWriter` - the ``progress.yaml`` Auto3DSeg scores algorithms by;
* :class:`Predictor` - probabilities for one image in its original space (what ``InferClass.infer``
  returns to the ensembler).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from monai.auto3dseg.utils import datafold_read
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.engines import Workflow
from monai.transforms import Invertd

from liverseg_monai.errors import ConfigError
from liverseg_monai.io.atomic import atomic_write_text

ROI_MULTIPLE = 16  # SegResNetVAE with 4 levels: the VAE branch needs sizes divisible by 2 ** 4


def fold_datalists(datalist_file: str | os.PathLike, dataroot: str | os.PathLike, fold: int) -> tuple[list, list]:
    """``(training, validation)`` items of an Auto3DSeg datalist for ``fold`` (items with ``fold == fold`` validate)."""
    datalist = ConfigParser.load_config_file(str(datalist_file))
    train, val = datafold_read(datalist=datalist, basedir=str(dataroot), fold=int(fold), key="training")
    if not train or not val:
        raise ConfigError(f"{datalist_file}: fold {fold} leaves {len(train)} training and {len(val)} validation items; "
                          "each needs at least one")
    return train, val


def _roi_from_size(size_vox: Sequence[float], cap: Sequence[int]) -> list[int]:
    """Largest multiple of ``ROI_MULTIPLE`` not above the image size (at least one multiple), capped."""
    return [max(ROI_MULTIPLE, min(int(c), ROI_MULTIPLE * math.floor(float(s) / ROI_MULTIPLE))) for s, c in zip(size_vox, cap)]


def fill_hyper_parameters(data_stats: Mapping[str, Any] | ConfigParser, input_config: Mapping[str, Any],
                          bundle_root: str, fold: int) -> dict[str, Any]:
    """Template values from Auto3DSeg's data statistics and the user's ``input.yaml``.

    Args:
        data_stats: the DataAnalyzer report (``datastats.yaml`` content, ``stats_summary#...`` keys).
        input_config: the AutoRunner input (``dataroot``, ``datalist``, ``modality``; optional
            ``resample_resolution``, ``roi_size``, ``roi_size_max``, ``init_filters``, ``intensity_bounds``).
        bundle_root: the generated algorithm folder.
        fold: the cross-validation fold it trains.

    Returns:
        key -> value to write into ``configs/hyper_parameters.yaml``.
    """
    stats = data_stats if isinstance(data_stats, ConfigParser) else ConfigParser(dict(data_stats), globals=False)
    modality = str(input_config.get("modality", "ct")).lower()
    labels = stats["stats_summary#label_stats#labels"]
    spacing = input_config.get("resample_resolution") or [float(s) for s in stats["stats_summary#image_stats#spacing#median"]]
    if "intensity_bounds" in input_config:
        bounds = [float(b) for b in input_config["intensity_bounds"]]
    else:
        bounds = [float(stats["stats_summary#image_foreground_stats#intensity#percentile_00_5"]),
                  float(stats["stats_summary#image_foreground_stats#intensity#percentile_99_5"])]
    size_mm = np.asarray(stats["stats_summary#image_stats#sizemm#median"], dtype=float)
    roi = input_config.get("roi_size") or _roi_from_size(size_mm / np.asarray(spacing, float),
                                                          input_config.get("roi_size_max", [128, 128, 96]))
    if any(int(r) % ROI_MULTIPLE for r in roi):
        raise ConfigError(f"roi_size {list(roi)} must be multiples of {ROI_MULTIPLE} for SegResNetVAE's VAE branch")
    filled = {
        "bundle_root": str(bundle_root),
        "data_file_base_dir": os.path.abspath(str(input_config["dataroot"])),
        "data_list_file_path": os.path.abspath(str(input_config["datalist"])),
        "fold": int(fold),
        "modality": modality,
        "input_channels": int(stats["stats_summary#image_stats#channels#max"]),
        "output_classes": len(labels),
        "resample_resolution": [float(s) for s in spacing],
        "intensity_bounds": bounds,
        "roi_size": [int(r) for r in roi],
    }
    for key in ("init_filters", "class_names", "learning_rate", "vae_weight"):
        if key in input_config:
            filled[key] = input_config[key]
    return filled


class ProgressWriter:
    """Writes ``progress.yaml`` after each validation: a list whose last entry holds ``best_avg_dice_score``.

    Auto3DSeg's ``BundleAlgo.get_score`` reads that value to rank and ensemble the trained algorithms.
    Attach it to the evaluator (``validate#handlers``); a ``ValidationHandler`` runs the evaluator with
    the trainer's epoch number, so ``epoch`` is the training epoch.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def attach(self, engine: Workflow) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Workflow) -> None:
        epoch = int(engine.state.epoch)
        metric = engine.state.metrics.get(engine.state.key_metric_name, float("nan"))
        entry = {"epoch": epoch, "avg_dice_score": float(metric),
                 "best_avg_dice_score": float(max(engine.state.best_metric, 0.0)),
                 "best_epoch": int(engine.state.best_metric_epoch)}
        history = yaml.safe_load(self.path.read_text()) if self.path.is_file() else []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, yaml.safe_dump([*(history or []), entry], sort_keys=False))


def _parser(config_file: str | Sequence[str], override: Mapping[str, Any]) -> ConfigParser:
    files = [config_file] if isinstance(config_file, str) else list(config_file)
    parser = ConfigParser()
    parser.read_config([f for f in files if str(f).endswith((".yaml", ".yml", ".json"))])
    for key, value in override.items():
        parser[key] = value
    return parser


def train(config_file: str | Sequence[str], **override: Any) -> None:
    """Run ``train#trainer`` of the filled template (``scripts/train.py run``); ``override``: ``key=value``."""
    parser = _parser(config_file, override)
    parser.parse()
    Path(parser.get_parsed_content("ckpt_path")).mkdir(parents=True, exist_ok=True)
    parser.get_parsed_content("train#trainer").run()


class Predictor:
    """Softmax probabilities ``(C, *original spatial)`` of one image from the trained ``{ckpt_path}/model.pt``.

    Args:
        config_file: the algorithm's config file(s).
        override: config ``key=value`` overrides; keys the config does not have (Auto3DSeg passes
            ensemble settings such as ``rank``) are ignored.
    """

    def __init__(self, config_file: str | Sequence[str], **override: Any):
        probe = _parser(config_file, {})
        known = {k: v for k, v in override.items() if k in probe}
        self.parser = _parser(config_file, known)
        self.parser.parse()
        self.device = self.parser.get_parsed_content("device")
        self.network = self.parser.get_parsed_content("network")
        ckpt = Path(self.parser.get_parsed_content("ckpt_path")) / "model.pt"
        if not ckpt.is_file():
            raise ConfigError(f"{ckpt}: no trained model (run training first)")
        self.network.load_state_dict(torch.load(ckpt, map_location=self.device, weights_only=True))
        self.network.eval()
        self.preprocessing = self.parser.get_parsed_content("infer#preprocessing")
        self.inferer = self.parser.get_parsed_content("infer#inferer")
        self.invert = Invertd(keys="pred", transform=self.preprocessing, orig_keys="image", nearest_interp=False,
                              to_tensor=True)

    @torch.no_grad()
    def __call__(self, image: str | os.PathLike | Mapping[str, Any]) -> MetaTensor:
        item = dict(image) if isinstance(image, Mapping) else {"image": str(image)}
        data = self.preprocessing({"image": item["image"]})
        x = data["image"].unsqueeze(0).to(self.device)
        prob = torch.softmax(self.inferer(x, self.network), dim=1)[0].cpu()
        data["pred"] = prob
        return self.invert(data)["pred"]


def validate(config_file: str | Sequence[str], **override: Any) -> float:
    """Mean validation Dice of ``{ckpt_path}/model.pt`` on the fold's validation items (``scripts/validate.py run``)."""
    parser = _parser(config_file, override)
    parser.parse()
    network = parser.get_parsed_content("network")
    ckpt = Path(parser.get_parsed_content("ckpt_path")) / "model.pt"
    if not ckpt.is_file():
        raise ConfigError(f"{ckpt}: no trained model (run training first)")
    network.load_state_dict(torch.load(ckpt, map_location=parser.get_parsed_content("device"), weights_only=True))
    evaluator = parser.get_parsed_content("validate#evaluator")
    evaluator.run()
    return float(evaluator.state.metrics[evaluator.state.key_metric_name])
