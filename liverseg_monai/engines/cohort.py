"""Batch inference over a cohort that reports a failed case and goes on with the others."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from monai.data import DataLoader
from torch.utils.data import Subset

from liverseg_monai.engines.distributed import gather_lists, is_main_process
from liverseg_monai.errors import InputError, find_error
from liverseg_monai.io.tables import write_table

logger = logging.getLogger(__name__)


def run_cohort(evaluator, dataset, output_dir: str | os.PathLike, on_error: str = "continue") -> list[dict]:
    """Run ``evaluator`` case by case over ``dataset``.

    Args:
        evaluator: a MONAI ``SupervisedEvaluator`` (its handlers and post-processing run per case).
        dataset: the inference dataset (a datalist with its preprocessing).
        output_dir: where ``failed_cases.csv`` goes when a case fails.
        on_error: ``"continue"``: log the failure, record it and go on with the next case;
            ``"raise"``: stop at the first failure (the error names the file).

    Returns:
        the failures, ``[{"case": ..., "error": ...}]``; raises if every case failed. Under ``torchrun``
        (each rank given its own cases) the failures and the count are those of all ranks, and rank 0
        writes the one ``failed_cases.csv``.
    """
    if on_error not in ("continue", "raise"):
        raise ValueError(f"on_error must be 'continue' or 'raise', got {on_error!r}")
    failures = []
    for i in range(len(dataset)):
        item = dataset.data[i] if hasattr(dataset, "data") else {}
        name = item.get("image", f"case {i}") if isinstance(item, dict) else str(item)
        evaluator.data_loader = DataLoader(Subset(dataset, [i]), batch_size=1, num_workers=0)
        evaluator.state.epoch_length = 1
        evaluator._internal_run_generator = None  # a previous case's failure leaves ignite's generator spent
        try:
            evaluator.run()
        except Exception as err:
            if on_error == "raise":
                raise
            found = find_error(err)
            message = str(found) if found is not None else f"{type(err).__name__}: {err}"
            logger.error("case failed, going on with the others: %s", message)
            failures.append({"case": str(name), "error": message})
    # under torchrun each rank ran its own cases: one report of every rank's failures, written by rank 0
    failures = gather_lists(failures)
    total = sum(gather_lists([len(dataset)]))
    if failures:
        if is_main_process():
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            write_table(Path(output_dir) / "failed_cases.csv", failures)
        logger.warning("%d of %d cases failed; see %s", len(failures), total, Path(output_dir) / "failed_cases.csv")
        if len(failures) == total:
            raise _all_failed(failures)
    return failures


def _all_failed(failures: list[dict]) -> InputError:
    return InputError([f["case"] for f in failures], "every case failed: " + "; ".join(f["error"] for f in failures))
