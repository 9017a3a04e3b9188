"""The training configs' ``fast_path`` switch (MONAI's fast-training recipe for a GPU).

``fast_path: true`` caches the deterministic part of the training chain on ``@device``
(an ``EnsureTyped(device=@data_device)`` right before the first random transform, so ``CacheDataset``
keeps device tensors and the random transforms run there), loads with ``ThreadDataLoader`` and no
worker processes, turns on AMP where CUDA is present, and places the 2D convolutional networks
(U-Net, DeepLab) channels-last. ``false`` (the default) is the plain CPU-friendly path. The same
configs run on a CPU with the switch on: the device is the CPU and AMP stays off.
"""

from __future__ import annotations

import pytest
import torch
from monai.data import DataLoader, ThreadDataLoader
from monai.transforms import EnsureTyped, RandomizableTrait, Transform

from tools.recipes import load_recipe, synthesize
from tools.runner import bundles_dir, config_parser, copy_bundle, run_stage

TRAIN = {  # bundle -> recipe stage whose configs hold the training chain
    "liver_ct_unet_segmentation": "train",
    "liver_pathology_deeplab_segmentation": "train",
    "liver_steatosis_maskrcnn": "train",
    "liver_tumor_ct_segresnetvae": "train_tumor",
    "pathology_pathsegdiff_segmentation": "train",
}
CHANNELS_LAST = {"liver_ct_unet_segmentation", "liver_pathology_deeplab_segmentation"}


def _parser(bundle: str, fast: bool):
    stage = {s["name"]: s for s in load_recipe(bundle)["stages"]}[TRAIN[bundle]]
    return config_parser(bundles_dir() / bundle, stage["config"], {"fast_path": fast})


def _train_chain(parser) -> list:
    return list(parser.get_parsed_content("train#preprocessing", instantiate=True).transforms)


@pytest.mark.parametrize("bundle", sorted(TRAIN))
def test_fast_path_switch_resolves(bundle):
    fast, plain = _parser(bundle, True), _parser(bundle, False)
    device = fast.get_parsed_content("device")

    assert fast.get_parsed_content("train#dataloader#_target_") is ThreadDataLoader
    assert fast.get_parsed_content("loader_workers") == 0
    assert fast.get_parsed_content("use_amp") == torch.cuda.is_available()
    assert plain.get_parsed_content("train#dataloader#_target_") is DataLoader
    assert plain.get_parsed_content("loader_workers") == plain.get_parsed_content("num_workers") > 0
    assert plain.get_parsed_content("use_amp") is False

    # the device move sits right before the first random transform: everything cached is on the device
    for parser, target in ((fast, torch.device(device)), (plain, torch.device("cpu"))):
        chain = _train_chain(parser)
        # what CacheDataset caches: the chain up to its first random or non-Transform element (a nested Compose
        # counts as random, so it would stop the cache at its own position)
        first_random = next(i for i, t in enumerate(chain) if isinstance(t, RandomizableTrait) or not isinstance(t, Transform))
        mover = chain[first_random - 1]
        assert isinstance(mover, EnsureTyped), [type(t).__name__ for t in chain]
        assert torch.device(mover.converter.device) == target
        assert not any(isinstance(t, EnsureTyped) and t.converter.device is not None for t in chain[:first_random - 1])

    if bundle in CHANNELS_LAST:
        assert fast.get_parsed_content("memory_format") is torch.channels_last
        assert plain.get_parsed_content("memory_format") is torch.preserve_format


@pytest.mark.parametrize("bundle", ["liver_ct_unet_segmentation", "liver_pathology_deeplab_segmentation"])
def test_fast_path_trains_on_cpu(bundle, tmp_path):
    """The same configs run on a CPU with the switch on (smoke size, one epoch): weights are written and
    the network's 4D weights are channels-last."""
    recipe = load_recipe(bundle)
    stage = {s["name"]: s for s in recipe["stages"]}["train"]
    data = synthesize(recipe["synth"], tmp_path / "data")
    root = copy_bundle(bundle, tmp_path / "bundle")
    stage = {**stage, "overrides": {**(stage.get("overrides") or {}), "fast_path": True}}
    run_stage(stage, root, data, tmp_path)
    state = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    convs = [v for v in state.values() if v.ndim == 4 and v.shape[-1] > 1 and v.shape[1] > 1]
    assert convs and all(v.is_contiguous(memory_format=torch.channels_last) for v in convs)
