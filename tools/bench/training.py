"""Training input pipeline: the share of each training step spent waiting for data (issue 11, item 3).

Every training stage of every bundle's ``make demo`` recipe runs through its own ``train#trainer``
(the bundle's dataset, transforms and ``DataLoader`` settings: ``CacheDataset``, ``cache_rate``,
``num_workers`` as the config sets them; the recipe's demo overrides keep the networks small, except
its ``num_workers``/``cache_rate`` overrides, which are dropped so the bundle's own loader settings
apply). Ignite's ``GET_BATCH_STARTED``/``GET_BATCH_COMPLETED`` events bracket the wait for the next
batch, ``ITERATION_STARTED``/``ITERATION_COMPLETED`` the step (device copy, forward, backward,
optimizer). The first iteration (cache fill and worker start-up) is left out; ``steady`` also leaves
out the first iteration of later epochs (worker restart, which a long real epoch amortises).

Epoch length: the demo datasets hold a few items, so their epochs are 3-6 steps long and the one-batch
wait when an epoch starts (the loader's workers are created anew every epoch, which keeps per-epoch
re-seeding and so resumed runs exact) would be a third of the measurement; a real dataset's epoch is
hundreds to thousands of steps. The measured loader therefore iterates the bundle's own dataset
repeated (``ConcatDataset`` of the same cached dataset: the same items, transforms and per-sample cost)
until an epoch has at least ``min_epoch_steps`` batches, with the loader's own settings. The
per-epoch start cost is reported too (``mean_epoch_start_wait_s``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from tools.runner import config_parser

LOADER_KEYS = ("num_workers", "cache_rate")


def _measure(trainer, steps: int) -> dict:
    from ignite.engine import Events

    rec = {"wait": [], "step": [], "epoch_start": []}
    marks: dict[str, float] = {}

    def on(event):
        def deco(fn):
            trainer.add_event_handler(event, fn)
            return fn

        return deco

    @on(Events.GET_BATCH_STARTED)
    def _(engine):
        marks["get"] = time.perf_counter()

    @on(Events.GET_BATCH_COMPLETED)
    def _(engine):
        rec["wait"].append(time.perf_counter() - marks["get"])
        rec["epoch_start"].append(engine.state.iteration % max(1, engine.state.epoch_length or 1) == 0)

    @on(Events.ITERATION_STARTED)
    def _(engine):
        marks["step"] = time.perf_counter()

    @on(Events.ITERATION_COMPLETED)
    def _(engine):
        rec["step"].append(time.perf_counter() - marks["step"])
        if len(rec["step"]) >= steps + 1:
            engine.terminate()

    trainer.state.max_epochs = 10_000  # stop by iterations, whatever the epoch length
    trainer.run()
    wait, step, first = rec["wait"][1:], rec["step"][1:], rec["epoch_start"][1:]
    n = min(len(wait), len(step))
    wait, step, first = wait[:n], step[:n], first[:n]
    steady = [i for i in range(n) if not first[i]]
    starts = [wait[i] for i in range(n) if first[i]]
    total = sum(wait) + sum(step)
    s_wait, s_step = sum(wait[i] for i in steady), sum(step[i] for i in steady)
    return {"steps": n, "epoch_starts": n - len(steady), "data_wait_share": sum(wait) / total if total else None,
            "mean_epoch_start_wait_s": sum(starts) / len(starts) if starts else None,
            "data_wait_share_steady": s_wait / (s_wait + s_step) if steady else None,
            "mean_wait_s": sum(wait) / n if n else None, "mean_step_s": sum(step) / n if n else None,
            "epoch_length": trainer.state.epoch_length}


def _with_epoch_length(trainer, min_steps: int) -> int:
    """Give ``trainer`` a loader over its dataset repeated ``k`` times so an epoch has at least ``min_steps``
    batches (same loader class and settings); returns ``k`` (1: the loader is left as it is)."""
    from torch.utils.data import ConcatDataset, RandomSampler

    loader = trainer.data_loader
    if len(loader) >= min_steps:
        return 1
    k = math.ceil(min_steps / max(len(loader), 1))
    repeated = ConcatDataset([loader.dataset] * k)
    trainer.data_loader = type(loader)(
        repeated, batch_size=loader.batch_size, shuffle=isinstance(loader.sampler, RandomSampler),
        num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
        drop_last=loader.drop_last, persistent_workers=loader.persistent_workers, worker_init_fn=loader.worker_init_fn)
    trainer.state.epoch_length = len(trainer.data_loader)
    return k


def _describe_loader(trainer) -> dict:
    """The loader the trainer iterates, as built from the config."""
    loader = trainer.data_loader
    dataset = getattr(loader, "dataset", None)
    cached = getattr(dataset, "cache_num", None)
    return {"dataset": type(dataset).__name__, "cached_items": cached, "items": len(dataset) if dataset is not None else None,
            "loader": type(loader).__name__, "num_workers": getattr(loader, "num_workers", None),
            "persistent_workers": getattr(loader, "persistent_workers", None),
            "batch_size": getattr(loader, "batch_size", None)}


def measure_stage(stage: dict, root: Path, data: Path, out: Path, steps: int, device: str,
                  min_epoch_steps: int = 1, fast_path: bool | None = None) -> dict:
    """One training stage's data-wait share; ``fast_path`` sets the config's switch (``None``: left as the
    config has it, for stages without one)."""
    import monai

    overrides = {k: v for k, v in (stage.get("overrides") or {}).items() if k.split("#")[-1] not in LOADER_KEYS}
    dropped = sorted(set(stage.get("overrides") or {}) - set(overrides))
    if fast_path is not None:
        overrides["fast_path"] = bool(fast_path)
    parser = config_parser(root, stage["config"], {"dataset_dir": str(data), "output_dir": str(out),
                                                   "device": f"$torch.device('{device}')", **overrides})
    for key in ("val_interval",):  # no validation inside the measured steps
        if key in parser:
            parser[key] = 10_000
    monai.utils.set_determinism(seed=0)
    t = time.perf_counter()
    trainer = parser.get_parsed_content("train#trainer")
    setup_s = time.perf_counter() - t
    loader = _describe_loader(trainer)
    repeats = _with_epoch_length(trainer, min_epoch_steps)
    result = _measure(trainer, steps)
    return {"stage": stage["name"], "configs": stage["config"], "fast_path": fast_path, "loader": loader,
            "dataset_repeats": repeats,
            "demo_overrides_kept": overrides, "demo_overrides_dropped": dropped, "setup_s": setup_s,
            "goal_share_max": 0.10, **result}


def scenario_train_input(work: str | Path, steps: int = 10, bundles: list[str] | None = None,
                         device: str = "cpu", min_epoch_steps: int = 1) -> dict:
    """Data-wait share of the training steps of every bundle's training stages (epochs of at least
    ``min_epoch_steps`` batches, see the module docstring); stages with the ``fast_path`` switch once
    without and once with it (on a GPU: device cache, ThreadDataLoader, AMP, channels-last)."""
    from tools.recipes import list_recipes, load_recipe, synthesize
    from tools.runner import copy_bundle

    work = Path(work) / "train_input"
    rows = []
    for bundle in bundles or list_recipes():
        demo = load_recipe(bundle).get("demo") or {}
        stages = [s for s in demo.get("stages", []) if any(Path(c).name.startswith("train") for c in s["config"])]
        if not stages:
            continue
        try:
            data = work / bundle / "data"
            if not (data / "dataset.json").is_file():
                synthesize(demo["synth"], data)
            root = copy_bundle(bundle, work / bundle / "bundle")
        except Exception as err:  # a bundle that cannot be set up is reported, the others still run
            rows.append({"bundle": bundle, "error": f"{type(err).__name__}: {str(err).splitlines()[0]}"})
            continue
        for stage in stages:
            # stages whose config has the fast_path switch are measured both ways (plain, then fast path)
            arms = (False, True) if "fast_path" in config_parser(root, stage["config"]) else (None,)
            for fast in arms:
                try:
                    rows.append({"bundle": bundle, **measure_stage(stage, root, data, work / bundle / stage["name"],
                                                                   steps, device, min_epoch_steps, fast)})
                except Exception as err:
                    rows.append({"bundle": bundle, "stage": stage["name"], "fast_path": fast,
                                 "error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"})
    return {"rows": rows, "steps_per_stage": steps, "min_epoch_steps": min_epoch_steps, "device": device,
            "data": "each recipe's demo synthetic data (tools/recipes/*.yaml)"}
