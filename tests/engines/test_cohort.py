"""``run_cohort``: the next case is read while the current one runs; a failed read is that case's failure."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
import torch

from liverseg_monai.engines.cohort import run_cohort
from liverseg_monai.errors import InputError


class _Cases:
    """A dataset whose reads take ``read_s`` and are logged (case, thread, start, end); ``broken`` cases raise."""

    def __init__(self, n: int, read_s: float = 0.0, broken: tuple[int, ...] = ()):
        self.data = [{"image": f"case{i}.nii.gz"} for i in range(n)]
        self.read_s, self.broken, self.log = read_s, broken, []

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        start = time.perf_counter()
        time.sleep(self.read_s)
        if i in self.broken:
            raise InputError(self.data[i]["image"], "not a CT volume")
        self.log.append((i, threading.current_thread().name, start, time.perf_counter()))
        return {"image": torch.full((1, 2, 2), float(i))}


class _Evaluator:
    """What run_cohort uses of a MONAI evaluator: data_loader, state.epoch_length, run()."""

    def __init__(self, run_s: float = 0.0):
        self.state = SimpleNamespace(epoch_length=None)
        self.run_s, self.runs, self._internal_run_generator = run_s, [], None

    def run(self):
        (batch,) = list(self.data_loader)
        start = time.perf_counter()
        time.sleep(self.run_s)
        self.runs.append((int(batch["image"][0, 0, 0, 0]), start, time.perf_counter()))


def test_next_case_is_read_in_the_background_while_the_current_one_runs(tmp_path):
    cases, evaluator = _Cases(3, read_s=0.2), _Evaluator(run_s=0.3)
    assert run_cohort(evaluator, cases, tmp_path) == []
    assert [r[0] for r in evaluator.runs] == [0, 1, 2]  # in order, each case once, batched as a loader would
    reads = {i: (thread, start, end) for i, thread, start, end in cases.log}
    assert all(thread != threading.main_thread().name for thread, _, _ in reads.values())
    for i, _, run_end in evaluator.runs[:-1]:
        next_read_start = reads[i + 1][1]
        assert next_read_start < run_end  # case i + 1 was being read while case i ran


def test_without_prefetch_cases_are_read_one_at_a_time(tmp_path):
    cases, evaluator = _Cases(3, read_s=0.05), _Evaluator(run_s=0.05)
    run_cohort(evaluator, cases, tmp_path, prefetch=False)
    reads = {i: start for i, _, start, _ in cases.log}
    for i, _, run_end in evaluator.runs[:-1]:
        assert reads[i + 1] >= run_end


@pytest.mark.parametrize("prefetch", [True, False])
def test_a_failed_read_is_that_case_alone(tmp_path, prefetch):
    cases, evaluator = _Cases(4, broken=(1,)), _Evaluator()
    failures = run_cohort(evaluator, cases, tmp_path, prefetch=prefetch)
    assert [r[0] for r in evaluator.runs] == [0, 2, 3]
    assert len(failures) == 1 and failures[0]["case"] == "case1.nii.gz"
    assert "case1.nii.gz" in failures[0]["error"] and "not a CT volume" in failures[0]["error"]
    assert (tmp_path / "failed_cases.csv").is_file()


def test_on_error_raise_stops_at_the_failed_case(tmp_path):
    cases, evaluator = _Cases(4, broken=(1,)), _Evaluator()
    with pytest.raises(InputError, match="case1.nii.gz"):
        run_cohort(evaluator, cases, tmp_path, on_error="raise")
    assert [r[0] for r in evaluator.runs] == [0]


def test_every_case_failing_is_an_error(tmp_path):
    with pytest.raises(InputError, match="every case failed"):
        run_cohort(_Evaluator(), _Cases(2, broken=(0, 1)), tmp_path)
