import logging

import pytest
import torch
from monai.losses import DiceCELoss

from liverseg_monai.losses.vae import SegVAELoss
from liverseg_monai.losses.weak_supervision import (
    ClinicalTumorFractionLoss,
    attach_count_log,
    predicted_tumor_fraction,
)


def logits_with_fraction(frac: float, n: int = 1000) -> torch.Tensor:
    """Logits over a 10x10x10 liver whose first ``frac`` voxels are (almost surely) tumour."""
    lg = torch.full((1, 2, n), -10.0)
    lg[0, 0] = 10.0
    k = int(frac * n)
    lg[0, 1, :k], lg[0, 0, :k] = 10.0, -10.0
    return lg.reshape(1, 2, 10, 10, 10)


def test_predicted_fraction_counts_only_the_liver():
    lg = logits_with_fraction(0.3)
    liver = torch.ones(1, 1, 10, 10, 10)
    assert predicted_tumor_fraction(lg, liver).item() == pytest.approx(0.3, abs=1e-3)
    liver[:, :, 5:] = 0  # tumour voxels are the first 300 of the flattened volume (i < 3): all in the half kept
    assert predicted_tumor_fraction(lg, liver).item() == pytest.approx(0.6, abs=1e-3)


def test_loss_is_the_gaussian_nll_of_the_fraction():
    loss = ClinicalTumorFractionLoss(weight=2.0)
    value = loss(logits_with_fraction(0.3), torch.ones(1, 1, 10, 10, 10), torch.tensor([0.1]), torch.tensor([0.05]))
    assert value.item() == pytest.approx(2.0 * ((0.3 - 0.1) / 0.05) ** 2 / 2, rel=1e-2)
    assert loss(logits_with_fraction(0.1), torch.ones(1, 1, 10, 10, 10), torch.tensor([0.1]), torch.tensor([0.05])).item() < 1e-3


def test_gradient_moves_prediction_toward_the_group_expectation():
    torch.manual_seed(0)
    lg = torch.randn(2, 2, 6, 6, 6, requires_grad=True)
    liver = torch.ones(2, 1, 6, 6, 6)
    prior = torch.tensor([0.05, 0.95])
    loss = ClinicalTumorFractionLoss(weight=1.0)
    before = predicted_tumor_fraction(lg, liver).detach()
    opt = torch.optim.SGD([lg], lr=1.0)
    for _ in range(20):
        opt.zero_grad()
        loss(lg, liver, prior, torch.tensor([0.1, 0.1])).backward()
        opt.step()
    after = predicted_tumor_fraction(lg, liver).detach()
    assert (after - prior).abs().max() < (before - prior).abs().min()


def test_patients_without_clinical_data_are_skipped_and_counted(caplog):
    loss = ClinicalTumorFractionLoss(weight=1.0)
    lg = torch.cat([logits_with_fraction(0.5), logits_with_fraction(0.0)])
    liver = torch.ones(2, 1, 10, 10, 10)
    only_first = loss(lg, liver, torch.tensor([0.1, float("nan")]), torch.tensor([0.1, float("nan")]))
    alone = ClinicalTumorFractionLoss(weight=1.0)(lg[:1], liver[:1], torch.tensor([0.1]), torch.tensor([0.1]))
    assert only_first.item() == pytest.approx(alone.item())
    assert (loss.n_used, loss.n_skipped) == (1, 1)
    none = loss(lg, liver, torch.tensor([float("nan")] * 2))
    assert none.item() == 0.0
    with caplog.at_level(logging.INFO):
        loss.log_counts()
    assert "3 skipped" in caplog.text and loss.n_skipped == 0


def test_zero_weight_switches_the_term_off():
    loss = ClinicalTumorFractionLoss(weight=0.0)
    assert loss(logits_with_fraction(0.9), torch.ones(1, 1, 10, 10, 10), torch.tensor([0.0])).item() == 0.0


def test_seg_vae_loss_adds_the_terms():
    torch.manual_seed(0)
    seg_loss = DiceCELoss(to_onehot_y=True, softmax=True)
    weak = ClinicalTumorFractionLoss(weight=0.5)
    lg = torch.randn(2, 2, 8, 8, 8)
    label = torch.randint(0, 2, (2, 1, 8, 8, 8)).float()
    liver = torch.ones(2, 1, 8, 8, 8)
    prior, std = torch.tensor([0.2, 0.3]), torch.tensor([0.1, 0.1])
    vae = torch.tensor(0.7)
    total = SegVAELoss(seg_loss, vae_weight=0.1, weak_loss=weak)(
        (lg, vae), {"label": label, "liver": liver, "tumor_fraction_prior": prior, "tumor_fraction_std": std})
    expected = seg_loss(lg, label) + 0.1 * vae + ClinicalTumorFractionLoss(weight=0.5)(lg, liver, prior, std)
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    # plain logits and a plain label: just the segmentation loss (the validation path)
    assert SegVAELoss(seg_loss)(lg, label).item() == pytest.approx(seg_loss(lg, label).item())


def test_weight_is_off_then_ramps_up_then_full():
    import math

    loss = ClinicalTumorFractionLoss(weight=0.1, start_epoch=5, rampup_epochs=4)
    lg, liver = logits_with_fraction(0.3), torch.ones(1, 1, 10, 10, 10)
    prior, std = torch.tensor([0.1]), torch.tensor([0.05])
    full = 0.1 * ((0.3 - 0.1) / 0.05) ** 2 / 2
    expected = {0: 0.0, 4: 0.0, 5: 0.1 * math.exp(-5), 7: 0.1 * math.exp(-5 * 0.25), 9: 0.1, 30: 0.1}
    for epoch, weight in expected.items():
        loss.set_epoch(epoch)
        assert loss.current_weight() == pytest.approx(weight)
        assert loss(lg, liver, prior, std).item() == pytest.approx(full * weight / 0.1, rel=1e-2, abs=1e-9)
    assert ClinicalTumorFractionLoss(weight=0.1).current_weight() == 0.1  # no schedule: full weight at once


def test_attach_rampup_follows_the_trainer_epoch_also_after_a_resume():
    from ignite.engine import Engine

    from liverseg_monai.losses.weak_supervision import attach_rampup

    loss = ClinicalTumorFractionLoss(weight=1.0, start_epoch=2, rampup_epochs=2)
    seen = []
    engine = Engine(lambda e, b: seen.append((e.state.epoch, loss.epoch, loss.current_weight())))
    attach_rampup(engine, loss)
    attach_rampup(engine, None)  # stage 1 has no weak term: nothing attached, no error
    engine.run([0], max_epochs=3)
    assert [(e, w) for e, w, _ in seen] == [(1, 0.0), (2, 1.0), (3, 2.0)]
    assert [c for *_, c in seen][:2] == [0.0, 0.0]
    # a resumed run (state restored at epoch 3) continues the schedule where it stopped
    loss.set_epoch(0)
    engine.state.max_epochs = 5
    engine.run([0], max_epochs=5)
    assert [w for _, w, _ in seen[-2:]] == [3.0, 4.0] and seen[-1][2] == pytest.approx(1.0)


def test_attach_count_log_logs_and_resets_every_epoch(caplog):
    from ignite.engine import Engine, Events

    loss = ClinicalTumorFractionLoss()
    trainer = Engine(lambda e, b: None)
    attach_count_log(trainer, loss)
    attach_count_log(trainer, None)  # no weak-supervision term: nothing attached
    assert len(trainer._event_handlers[Events.EPOCH_COMPLETED]) == 1
    loss.n_used, loss.n_skipped = 3, 2
    with caplog.at_level(logging.INFO, logger="liverseg_monai.losses.weak_supervision"):
        trainer.run([0], max_epochs=1)
    assert "3 patient samples used, 2 skipped" in caplog.text
    assert loss.n_used == loss.n_skipped == 0
