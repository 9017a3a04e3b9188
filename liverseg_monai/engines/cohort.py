"""Batch inference over a cohort that reports a failed case and goes on with the others.

The next case is read and preprocessed in a background thread while the current one runs through the
network and its post-processing (writing included), so reading and writing overlap with compute across
cases (issue 19 point 1). Ours rather than MONAI's ``ThreadDataLoader``: its ``ThreadBuffer`` ends the
iteration silently when the reading thread raises, so a case whose file is broken would end the run
without a word about it or the cases after it; here each case's preprocessing is a future whose error
is raised, named, for that case alone.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from monai.data import list_data_collate

from liverseg_monai.engines.distributed import gather_lists, is_main_process
from liverseg_monai.errors import InputError, find_error
from liverseg_monai.io.tables import write_table

logger = logging.getLogger(__name__)


def run_cohort(evaluator, dataset, output_dir: str | os.PathLike, on_error: str = "continue",
               prefetch: bool = True) -> list[dict]:
    """Run ``evaluator`` case by case over ``dataset``.

    Args:
        evaluator: a MONAI ``SupervisedEvaluator`` (its handlers and post-processing run per case).
        dataset: the inference dataset (a datalist with its preprocessing).
        output_dir: where ``failed_cases.csv`` goes when a case fails.
        on_error: ``"continue"``: log the failure, record it and go on with the next case;
            ``"raise"``: stop at the first failure (the error names the file).
        prefetch: read and preprocess the next case in a background thread while this one runs (one
            more preprocessed case in memory, on the preprocessing's device); ``False``: one at a time.

    Returns:
        the failures, ``[{"case": ..., "error": ...}]``; raises if every case failed. Under ``torchrun``
        (each rank given its own cases) the failures and the count are those of all ranks, and rank 0
        writes the one ``failed_cases.csv``.
    """
    if on_error not in ("continue", "raise"):
        raise ValueError(f"on_error must be 'continue' or 'raise', got {on_error!r}")
    failures = []
    n = len(dataset)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cohort-read") as pool:
        pending: Future | None = None
        for i in range(n):
            item = dataset.data[i] if hasattr(dataset, "data") else {}
            name = item.get("image", f"case {i}") if isinstance(item, dict) else str(item)
            current = pending if pending is not None else _read(pool, dataset, i, prefetch)
            pending = _read(pool, dataset, i + 1, prefetch) if prefetch and i + 1 < n else None
            try:
                evaluator.data_loader = [list_data_collate([current.result()])]
                evaluator.state.epoch_length = 1
                evaluator._internal_run_generator = None  # a failed case leaves ignite's generator spent
                evaluator.run()
            except Exception as err:
                if on_error == "raise":
                    if pending is not None:
                        pending.cancel()
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


def _read(pool: ThreadPoolExecutor, dataset, i: int, background: bool) -> Future:
    """Case ``i`` of ``dataset`` (read and preprocessed) as a future: in ``pool``, or here and now."""
    if background:
        return pool.submit(dataset.__getitem__, i)
    done: Future = Future()
    try:
        done.set_result(dataset[i])
    except Exception as err:  # raised by .result(), inside the case's try, like a background read
        done.set_exception(err)
    return done


def _all_failed(failures: list[dict]) -> InputError:
    return InputError([f["case"] for f in failures], "every case failed: " + "; ".join(f["error"] for f in failures))
