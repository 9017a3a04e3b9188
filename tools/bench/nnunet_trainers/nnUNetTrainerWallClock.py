"""nnU-Net v2's default trainer stopped by wall clock, for comparisons at equal training time (issue 17 point 2).

nnU-Net finds this class through its ``nnUNet_extTrainer`` environment variable (this folder); the
benchmark (:mod:`tools.bench.peer`) runs ``nnUNetv2_train DATASET CONFIG 0 -tr nnUNetTrainerWallClock``.
Everything is nnU-Net's default (network, plans, augmentation, loss, SGD with poly learning rate, deep
supervision) except:

- training stops at the first iteration that ends past ``LIVERSEG_NNUNET_BUDGET_S`` seconds (counted from
  the start of ``run_training``: data unpacking and loader start-up included, as a bundle's stage time
  includes its own), the last epoch cut short there, so nnU-Net trains for the whole budget and at most
  one training iteration and that epoch's validation iterations more;
- an epoch is ``LIVERSEG_NNUNET_ITERS`` iterations (default 10, nnU-Net's is 250) so that the stop is
  fine-grained, and the poly schedule's length is re-estimated after each epoch from the epochs that
  still fit, so the learning rate decays towards zero at the budget as it does at nnU-Net's epoch 1000;
- ``LIVERSEG_NNUNET_SKIP_VALIDATION=1`` skips nnU-Net's final prediction of the validation cases (its
  own bookkeeping: the benchmark predicts the held-out cases with ``nnUNetv2_predict`` instead);
- ``LIVERSEG_NNUNET_SEED`` seeds Python, NumPy and torch (nnU-Net itself does not seed; its augmentation
  workers still draw their own random states, so a seed is an independent replicate, not a bit-exact run).

Why a subclass and not nnU-Net's ``nnUNetTrainer_Xepochs`` variants: those fix the epoch count, and the
comparison the issue asks for is at equal wall clock on the machine at hand.
"""

from __future__ import annotations

import os
import random
import time

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainerWallClock(nnUNetTrainer):  # noqa: N801 (nnU-Net's naming)
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.budget_s = float(os.environ.get("LIVERSEG_NNUNET_BUDGET_S", "inf"))
        self.num_iterations_per_epoch = int(os.environ.get("LIVERSEG_NNUNET_ITERS", "10"))
        self.num_val_iterations_per_epoch = max(1, self.num_iterations_per_epoch // 5)
        seed = os.environ.get("LIVERSEG_NNUNET_SEED")
        if seed is not None:
            random.seed(int(seed))
            np.random.seed(int(seed))
            torch.manual_seed(int(seed))
        self.epoch_seconds: list[float] = []
        self.iterations = 0

    def perform_actual_validation(self, save_probabilities: bool = False):
        if os.environ.get("LIVERSEG_NNUNET_SKIP_VALIDATION") == "1":
            self.print_to_log_file("final validation skipped (LIVERSEG_NNUNET_SKIP_VALIDATION=1)")
            return
        super().perform_actual_validation(save_probabilities)

    def run_training(self):
        start = time.perf_counter()
        self.on_train_start()
        while True:
            t = time.perf_counter()
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = []
            for _ in range(self.num_iterations_per_epoch):
                train_outputs.append(self.train_step(next(self.dataloader_train)))
                if time.perf_counter() - start >= self.budget_s:
                    break  # the budget ends inside this epoch: a short last epoch
            self.on_train_epoch_end(train_outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [self.validation_step(next(self.dataloader_val))
                               for _ in range(self.num_val_iterations_per_epoch)]
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()  # increments current_epoch
            self.iterations += len(train_outputs)
            self.epoch_seconds.append(time.perf_counter() - t)
            left = self.budget_s - (time.perf_counter() - start)
            if left <= 0:
                break
            # the poly schedule ends where the budget does (at least one more epoch, maybe a short one)
            per_epoch = float(np.mean(self.epoch_seconds[-3:]))
            self.num_epochs = self.current_epoch + max(1, int(np.ceil(left / per_epoch)))
            self.lr_scheduler.max_steps = self.num_epochs + 1
        self.num_epochs = self.current_epoch
        self.print_to_log_file(f"wall-clock budget {self.budget_s:.0f} s: stopped after {self.current_epoch} epochs, "
                               f"{self.iterations} iterations, {time.perf_counter() - start:.0f} s")
        self.on_train_end()
