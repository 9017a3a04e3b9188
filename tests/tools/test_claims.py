"""The claims protocol (``tools/bench/claims.py``): held-out re-split, rows with seeds and intervals,
stage overrides, and the generated ``docs/claims.md`` (the figures themselves come from the bench)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tools.bench import scenario_kwargs, scenario_names
from tools.bench.claims import (
    CLAIM_INDEX,
    CLAIMS,
    FLOORS,
    Claim,
    Run,
    _stage,
    claim_rows,
    floor_lines,
    resplit,
    write_claims_markdown,
)


def test_resplit_holds_out_labelled_cases(tmp_path):
    from liverseg_monai.data.synth.histo import synth_histo

    synth_histo(tmp_path, seed=3, n=12, size=32)
    content = resplit(tmp_path, 6, 2, 4)
    sections = [[it["image"] for it in content[s]] for s in ("training", "validation", "testing")]
    assert [len(s) for s in sections] == [6, 2, 4]
    assert len(set(sum(sections, []))) == 12  # no case in two sections
    assert all(it.get("label") for it in content["testing"])  # held-out cases carry their reference
    assert [it["fold"] for it in content["training"]] == [0, 1, 2, 3, 4, 0]
    on_disk = json.loads((tmp_path / "dataset.json").read_text())
    assert [it["image"] for it in on_disk["testing"]] == sections[2]
    with pytest.raises(ValueError, match="12 labelled cases"):
        resplit(tmp_path, 10, 2, 4)


def _claim(**kw) -> Claim:
    base = dict(bundle="b", claim="a beats b", data={"kind": "histo"}, split=(4, 1, 30),
                runs={"x": Run(), "y": Run()}, arms={"A": ("x", "{metric}"), "B": ("y", "{metric}")},
                metrics=("dice",), effect=("A", "B"), seeds=(0, 1, 2))
    return Claim(**{**base, **kw})


def _tables(shift: float, noise: float = 0.02, seeds: int = 3, cases: int = 30):
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 0.8, size=cases)
    table = {}
    for run, offset in (("x", shift), ("y", 0.0)):
        table[run] = [{f"c{i:02d}": {"dice": float(base[i] + offset + rng.normal(0, noise))} for i in range(cases)}
                      for _ in range(seeds)]
    return table


def test_claim_rows_carry_the_protocol_and_a_verdict():
    rows = claim_rows("demo", _claim(), _tables(0.1), "2 epochs")
    arms = {r["arm"]: r for r in rows}
    assert set(arms) == {"A", "B", "A - B"}
    for r in rows:
        assert r["n_held_out"] == 30 and r["seeds"] == [0, 1, 2] and r["budget"] == "2 epochs"
        assert r["ci95"][0] <= r["mean"] <= r["ci95"][1]
    assert arms["A - B"]["mean"] == pytest.approx(0.1, abs=0.02) and arms["A - B"]["verdict"] == "shown"
    assert claim_rows("demo", _claim(), _tables(0.0), "b")[-1]["verdict"] == "not shown"
    assert claim_rows("demo", _claim(), _tables(-0.1), "b")[-1]["verdict"] == "reversed"
    # lower is better (an error): the effect is baseline - arm, so a smaller error is "shown"
    error = claim_rows("demo", _claim(lower_is_better=("dice",)), _tables(-0.1), "b")[-1]
    assert error["arm"] == "B - A" and error["verdict"] == "shown" and error["mean"] == pytest.approx(0.1, abs=0.02)
    with pytest.raises(KeyError, match="column 'dice' missing"):
        claim_rows("demo", _claim(), {"x": _tables(0.1)["x"], "y": [{c: {} for c in _tables(0)["y"][0]}] * 3}, "b")
    # a metric no held-out case has a value for (a lesion-size bin without lesions): one undefined row, no effect
    empty = {run: [{c: {"dice": float("nan")} for c in per_seed[0]}] * 3 for run, per_seed in _tables(0.1).items()}
    (row,) = claim_rows("demo", _claim(), empty, "b")
    assert row["mean"] is None and row["ci95"] is None and row["verdict"].startswith("undefined")


def test_stage_overrides_stack_configs_and_seed():
    stages = {"train": {"name": "train", "config": ["inference.json", "train.json"], "overrides": {"max_epochs": 2, "lr": 1}}}
    run = Run(overrides={"*": {"+configs": ["baseline.json"], "lr": 2}, "train": {"max_epochs": 3}})
    stage = _stage(stages, "train", run, {"train": {"max_epochs": 9}}, seed=7)
    assert stage["config"] == ["inference.json", "train.json", "baseline.json"]
    assert stage["overrides"] == {"max_epochs": 9, "lr": 2, "seed": 7}
    assert stages["train"]["overrides"] == {"max_epochs": 2, "lr": 1}  # the recipe is not modified


def test_claims_are_bench_scenarios_and_match_their_bundles():
    from tools.recipes import load_recipe

    for name, claim in CLAIMS.items():
        assert f"claim:{name}" in scenario_names()
        assert scenario_kwargs(f"claim:{name}", device="cuda") == {"name": name, "preset": "gpu"}
        stages = {s["name"] for s in load_recipe(claim.bundle)["demo"]["stages"]}
        for run in claim.runs.values():
            assert set(run.stages or claim.stages) <= stages, name
            assert run.after is None or run.after in claim.runs
        assert {run for run, _ in claim.arms.values()} <= set(claim.runs) and set(claim.effect or ()) <= set(claim.arms)
        assert len(claim.seeds) >= 3 and claim.split[2] >= (20 if claim.data["kind"] in ("hcc", "lits") else 100)
        assert claim.data["options"]["realism"] == "full"


def test_claims_markdown_lists_measured_and_missing_claims(tmp_path):
    rows = claim_rows("maskrcnn_vs_clump_splitting", _claim(), _tables(0.1), "28 epochs")
    results = {"runs": {"cpu | X": {"scenarios": {"claim:maskrcnn_vs_clump_splitting": {
        "rows": rows, "budget": "28 epochs", "date": "2026-12-03", "command": "python -m tools bench", "seconds": 12}}}}}
    text = write_claims_markdown(results, tmp_path / "claims.md").read_text()
    assert text.count("## ") == len(CLAIM_INDEX) + 2  # and nnU-Net beside the CT bundles, the quality floors
    assert "| AP50 on touching droplets, Mask R-CNN minus clump splitting | 0.1 | | " in text  # metric not in rows
    section = text.split("## Mask R-CNN vs clump splitting")[1].split("## ")[0]
    assert "| A - B | dice, paired difference |" in section and "| shown | 30 | 3 |" in section
    assert "Budget: 28 epochs" in section and "cpu | X" in section
    assert "Not run yet (`python -m tools bench --out bench --only claim:deeplab_deformable_aspp`)" in text
    assert "Not run yet (`python -m tools bench --out bench --only claim:dino_init_10pct_labels`)" in \
        text.split("## DINO vs random")[1].split("## ")[0]

    # a section with one of its claims measured names the others as not run
    results["runs"]["cpu | X"]["scenarios"]["claim:dino_init_10pct_labels"] = {
        "rows": rows, "budget": "b", "date": "d", "command": "c", "seconds": 1}
    dino = write_claims_markdown(results, tmp_path / "claims.md").read_text().split("## DINO vs random")[1]
    dino = dino.split("## ")[0]
    assert "`claim:dino_init_25pct_labels`: not run yet" in dino and "`claim:dino_init_100pct_labels`: not run yet" in dino
    assert "`claim:dino_init_10pct_labels`: not run" not in dino and "Tried: Only the CPU preset" in dino


def test_floors_point_at_rows_the_claims_write():
    for _, scenario, arm, metric, _ in FLOORS:
        claim = CLAIMS[scenario.split(":", 1)[1]]
        base = metric.split(", paired difference")[0]
        assert base in claim.metrics
        assert arm in claim.arms or arm == " - ".join(claim.effect or ())
    rows = claim_rows("liver_ct_quality", _claim(arms={"liver bundle": ("x", "{metric}")}, effect=None), _tables(0.1), "b")
    assert [r["arm"] for r in rows] == ["liver bundle"]  # no comparison: no difference row
    lines = floor_lines({"claim:liver_ct_quality": {"rows": rows}})
    liver = next(line for line in lines if line.startswith("| liver Dice"))
    assert "| 30 | 3 | missed by 0.1" in liver  # mean about 0.75 against 0.95
    assert "not measured (`--only claim:deeplab_deformable_aspp`)" in "\n".join(lines)


def test_runs_shared_by_claims_train_once_per_bench_command(tmp_path, monkeypatch):
    """The tumour claims share their first run: within one command it trains once; ``after`` runs start
    from its weights without its training-state checkpoints; a new command trains again."""
    import tools.bench.claims as claims
    import tools.runner as runner

    calls = []

    def fake_copy(bundle, dest):
        (dest / "models").mkdir(parents=True)
        return dest

    def fake_stage(stage, root, data, run_dir, **kw):
        calls.append((run_dir.parent.name, run_dir.name, stage["name"], stage["overrides"].get("weak_supervision#weight")))
        models = root / "models"
        if stage["name"].startswith("train"):
            # as the bundle does, a stage resumes from its own checkpoint if it finds one: it must not
            assert not list(models.glob(f"{stage['name']}_checkpoint_epoch=*")), "the stage would resume, not train"
            (models / f"{stage['name']}_checkpoint_epoch=2.pt").write_text("state")
            (models / f"model_{stage['name']}.pt").write_text(str(stage["overrides"]))
        if stage["name"] == "evaluate":
            (run_dir / "eval").mkdir(parents=True, exist_ok=True)
            weak = "weight" in (models / "model_train_tumor.pt").read_text()
            bins = ("10to20mm", "ge20mm")  # and lt10mm: no lesion of that size in any case (empty cells)
            header = ["case", "tumor_dice", "tumor_dice_no_ac", "tumor_lesion_dice_lt10mm", "tumor_lesion_dice_lt10mm_no_ac"]
            header += [f"tumor_lesion_dice_{b}{s}" for b in bins for s in ("", "_no_ac")]
            rows = [",".join(header)] + [f"c{i}," + ",".join([f"{0.5 + 0.01 * i - 0.1 * weak},0.4,,"] + ["0.6,0.5"] * 2)
                                         for i in range(4)]
            (run_dir / "eval" / "per_case.csv").write_text("\n".join(rows) + "\n")

    monkeypatch.setattr(runner, "copy_bundle", fake_copy)
    monkeypatch.setattr(runner, "run_stage", fake_stage)
    monkeypatch.setattr(claims, "make_claim_data", lambda claim, out: out)
    monkeypatch.setenv(claims.SESSION_ENV, "command-1")
    ac = claims.run_claim("tumour_active_contour", tmp_path, seeds=[0, 1], log=lambda m: None)
    ws = claims.run_claim("tumour_weak_supervision", tmp_path, seeds=[0, 1], log=lambda m: None)
    stages = [c[2] for c in calls]
    # two seeds of the shared pipeline (3 stages) + two seeds of the weak-supervision-off run (2 stages)
    assert stages.count("train_liver") == 2 and stages.count("train_tumor") == 4 and stages.count("evaluate") == 4
    assert [c[3] for c in calls if c[2] == "train_tumor"].count(0.0) == 2
    effects = {r["metric"]: r for r in ac["rows"] if "difference" in r["metric"] or r["mean"] is None}
    assert effects["dice, paired difference"]["verdict"] == "shown"  # 0.5.. vs 0.4 on every case
    assert effects["lesion_dice_lt10mm"]["verdict"].startswith("undefined")
    assert effects["lesion_dice_ge20mm, paired difference"]["mean"] == pytest.approx(0.1, abs=1e-6)
    on_off = {r["arm"]: r["mean"] for r in ws["rows"]}
    assert on_off["weak supervision on - weak supervision off"] == pytest.approx(0.1, abs=1e-6)
    monkeypatch.setenv(claims.SESSION_ENV, "command-2")
    claims.run_claim("tumour_active_contour", tmp_path, seeds=[0], log=lambda m: None)
    assert [c[2] for c in calls[len(stages):]] == ["train_liver", "train_tumor", "evaluate"]  # trained again


def test_diagnostics_average_the_arm_columns():
    from tools.bench.claims import claim_diagnostics

    claim = _claim(arms={"A": ("x", "t_{metric}"), "B": ("x", "t_{metric}_no_ac")}, diagnostics=("vol", "missing"))
    tables = {"x": [{"c1": {"t_vol": 1.0, "t_vol_no_ac": 3.0}, "c2": {"t_vol": 2.0, "t_vol_no_ac": float("nan")}}] * 2}
    assert claim_diagnostics(claim, tables) == {"A": {"t_vol": 1.5}, "B": {"t_vol_no_ac": 3.0}}


def test_dino_claims_pretrain_once_and_only_the_dino_arm_takes_the_weights(tmp_path, monkeypatch):
    """The three label fractions share one DINO pretraining per bench command (on training + validation
    tiles, never the held-out ones); the DINO arm's train stage gets its weights, the random arm none; both
    arms see the same label subset and the same number of steps."""
    import tools.bench.claims as claims
    import tools.runner as runner

    calls = []

    def fake_copy(bundle, dest):
        (dest / "models").mkdir(parents=True)
        return dest

    def fake_stage(stage, root, data, run_dir, **kw):
        calls.append((run_dir, stage["name"], dict(stage["overrides"])))
        if stage["name"] == "train" and "datalist_keys" in stage["overrides"]:  # the DINO bundle
            (root / "models" / "backbone.pt").write_text("weights")
        if stage["name"] == "evaluate":
            (run_dir / "eval").mkdir(parents=True, exist_ok=True)
            dino = any(c[2].get("pretrained_weights") for c in calls if c[0] == run_dir and c[1] == "train")
            rows = ["case,mean_iou,mean_dice"] + [f"t{i},{0.5 + 0.1 * dino + 0.01 * i},0.6" for i in range(4)]
            (run_dir / "eval" / "per_case.csv").write_text("\n".join(rows) + "\n")

    monkeypatch.setattr(runner, "copy_bundle", fake_copy)
    monkeypatch.setattr(runner, "run_stage", fake_stage)
    monkeypatch.setattr(claims, "make_claim_data", lambda claim, out: out)
    monkeypatch.setenv(claims.SESSION_ENV, "command-1")
    results = {f: claims.run_claim(f"dino_init_{f}pct_labels", tmp_path, seeds=[0, 1], log=lambda m: None)
               for f in (10, 25, 100)}
    pretrain = [c for c in calls if "datalist_keys" in c[2]]
    assert len(pretrain) == 1 and pretrain[0][2]["datalist_keys"] == ["training", "validation"]
    trains = [c for c in calls if c[1] == "train" and "datalist_keys" not in c[2]]
    assert len(trains) == 3 * 2 * 2  # fractions x arms x seeds
    weights = {c[2].get("pretrained_weights") for c in trains}
    assert weights == {None, str(pretrain[0][0] / "bundle" / "models" / "backbone.pt")}
    steps = {c[2]["train#dataset#data"].rsplit("[", 1)[1]: c[2]["max_epochs"] for c in trains}
    # the label subset, listed about 48 / n times, for the recipe's 24 epochs (about equal steps)
    assert steps == {":5] * 10": 24, ":12] * 4": 24, ":48] * 1": 24}
    for f, res in results.items():
        effect = res["rows"][2]
        assert effect["arm"] == "DINO init - random init" and effect["verdict"] == "shown", f
        assert "pretraining: pathology_dino_pretraining" in res["budget"]
    assert "run dino: encoder=resnet18" in results[10]["budget"] and "max_epochs=24" in results[10]["budget"]
    assert "[:5] * 10" in results[10]["budget"]
    with pytest.raises(ValueError, match="no pretrain"):
        claims._stage({"train": {"name": "train", "config": ["train.json"], "overrides": {}}}, "train",
                      claims.Run(overrides={"train": {"pretrained_weights": claims.PRETRAINED}}), {}, 0)
