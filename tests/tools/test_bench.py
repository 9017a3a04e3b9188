"""``make bench`` plumbing: one scenario at a tiny size through the subprocess driver, the merged
results file and the Markdown writer (the figures themselves come from ``make bench``)."""

from __future__ import annotations

import json

import pytest

from liverseg_monai.errors import InputError
from tools.bench import merge_results, run_bench
from tools.bench.report import render_markdown


def test_ct_liver_tiny_run_merges_and_renders(tmp_path):
    out, docs = tmp_path / "bench", tmp_path / "benchmarks.md"
    path = run_bench(out, only="ct_liver", preset="tiny", docs=docs, work=tmp_path / "work", command="pytest")
    data = json.loads(path.read_text())
    assert data["schema"] == 1 and len(data["runs"]) == 1
    (key, run), = data["runs"].items()
    assert run["machine"]["key"] == key and run["command"] == "pytest"
    r = run["scenarios"]["ct_liver"]
    assert "error" not in r, r
    assert r["shape"] == [32, 32, 16] and r["preset"] == "tiny"
    assert r["geometry_kept"] is True
    assert r["end_to_end_s"] > r["forward_only_s"] > 0
    assert r["ratio"] == pytest.approx(r["end_to_end_s"] / r["forward_only_s"])
    assert 0 < r["network_in_run_s"] < r["end_to_end_s"]  # the forward-only passes are not counted in it
    assert r["forward_calls_end_to_end"] == r["forward_calls_forward_only"] == 1  # 16 slices, batch 16
    assert r["read_s"] > 0 and r["write_s"] > 0
    assert r["read_forward_write_s"] == pytest.approx(r["read_s"] + r["forward_only_s"] + r["write_s"])
    assert r["ratio_to_read_forward_write"] == pytest.approx(r["end_to_end_s"] / r["read_forward_write_s"])
    assert r["peak_rss_mb"] >= r["rss_before_run_mb"] > 0
    assert len(r["load_average_before"]) == 3
    md = docs.read_text()
    assert f"## {key}" in md and "| ct_liver (liver_ct_unet_segmentation) | 32x32x16 CT" in md
    assert "Last command: `pytest`" in md and ", `pytest`, " in md  # per machine and per scenario

    # another machine's results are added next to these, not over them
    other = {**run["machine"], "key": "cuda | Some GPU", "device": "cuda", "gpu": "Some GPU"}
    merged = merge_results(path, other, "gpu run", {"ct_liver": {**r, "amp": True}})
    assert set(merged["runs"]) == {key, "cuda | Some GPU"}
    md = render_markdown(merged)
    assert "## cuda | Some GPU" in md and md.count("| ct_liver (liver_ct_unet_segmentation)") == 2


def test_ct_tumor_tiny_run_times_both_stages_and_keeps_geometry(tmp_path):
    """The tumour row runs the bundle's own cascade (its crop included) at a tiny size."""
    out = tmp_path / "bench"
    path = run_bench(out, only="ct_tumor", preset="tiny", docs=tmp_path / "b.md", work=tmp_path / "work",
                     command="pytest")
    (run,) = json.loads(path.read_text())["runs"].values()
    r = run["scenarios"]["ct_tumor"]
    assert "error" not in r, r
    assert r["shape"] == [48, 48, 24] and r["geometry_kept"] is True
    assert r["end_to_end_s"] > r["forward_only_s"] > 0
    assert r["ratio"] == pytest.approx(r["end_to_end_s"] / r["forward_only_s"])
    assert r["ratio_to_read_forward_write"] == pytest.approx(r["end_to_end_s"] / r["read_forward_write_s"])
    assert r["stage_calls_end_to_end"][0] == 1 and r["realistic_lesions"] >= 1
    assert 0 < r["network_in_run_s"] < r["end_to_end_s"]


def test_error_rows_and_unknown_scenarios(tmp_path):
    data = {"runs": {"k": {"machine": {"device": "cpu", "gpu": "none", "cpu": "x", "cpus": 2, "torch_threads": 2,
                                       "omp_num_threads": "2", "python": "3.11", "torch": "t", "monai": "m",
                                       "platform": "p"},
                           "command": "c", "scenarios": {"ct_tumor": {"error": "exit 1: boom"},
                                                         "networks": {"error": "exit 1: no smp"}}}}}
    md = render_markdown(data)
    assert "not measured: exit 1: boom" in md and "Not measured: exit 1: no smp" in md
    with pytest.raises(InputError, match="unknown scenario"):
        run_bench(tmp_path, only="nope", docs=tmp_path / "x.md")


def test_train_input_repeats_a_small_dataset_to_a_real_epoch_length(tmp_path):
    """The loader is rebuilt over the bundle's dataset repeated until an epoch has the asked-for number of
    batches (same loader class and settings), so epoch starts weigh as in a real epoch."""
    from tools.bench.training import scenario_train_input

    r = scenario_train_input(tmp_path, steps=6, bundles=["liver_ct_unet_segmentation"], min_epoch_steps=20)
    plain, fast = r["rows"]  # the stage has the fast_path switch: measured without, then with it
    assert (plain["fast_path"], fast["fast_path"]) == (False, True)
    assert (plain["loader"]["loader"], fast["loader"]["loader"]) == ("DataLoader", "ThreadDataLoader")
    assert fast["loader"]["num_workers"] == 0 < plain["loader"]["num_workers"]
    for row in (plain, fast):
        assert "error" not in row, row
        assert row["dataset_repeats"] > 1 and row["epoch_length"] >= 20
        assert row["loader"]["items"] * row["dataset_repeats"] >= 20 * row["loader"]["batch_size"]
        assert row["steps"] == 6 and row["epoch_starts"] == 0  # 6 steps of a 20-step epoch
        assert 0 <= row["data_wait_share_steady"] <= row["data_wait_share"] + 1e-9 <= 1
        assert row["mean_epoch_start_wait_s"] is None


def test_pathsegdiff_ablation_dataset_and_scores(tmp_path):
    """The feature ablation's datalist (the demo's labelled split, a larger held-out set) and its per-tile reader."""
    import json

    from tools.bench import GROUPS, SCENARIOS
    from tools.bench.pathsegdiff import make_dataset, per_tile_iou

    assert GROUPS["quality"] == ["claims", "pathsegdiff_features"] and "pathsegdiff_features" in SCENARIOS
    assert make_dataset(tmp_path / "d", n_train=4, n_val=2, n_test=5, size=32, seed=0) == tmp_path / "d"
    lists = json.loads((tmp_path / "d" / "dataset.json").read_text())
    assert [len(lists[k]) for k in ("training", "validation", "testing")] == [4, 2, 5]
    names = [it["image"] for k in ("training", "validation", "testing") for it in lists[k]]
    assert len(set(names)) == 11 and all((tmp_path / "d" / n).is_file() for n in names)
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "per_case.csv").write_text("case,mean_iou,mean_dice\r\ntile_0006,0.5,0.6\r\ntile_0007,,0.1\r\n")
    scores = per_tile_iou(tmp_path / "e")
    assert scores["tile_0006"] == 0.5 and scores["tile_0007"] != scores["tile_0007"]  # NaN for an undefined score


def test_pathsegdiff_ablation_scores_held_out_tiles():
    """Each arm is scored on the testing tiles, not on the validation tiles that chose its checkpoint."""
    from tools.bench.pathsegdiff import _stages, seeded_stage

    stages = _stages()
    evaluate = seeded_stage(stages["evaluate"], 3)
    assert "'testing'" in evaluate["overrides"]["datalist"] and evaluate["overrides"]["seed"] == 3
    train = seeded_stage(stages["train"], 3)
    assert "datalist" not in train["overrides"] and train["overrides"]["seed"] == 3


@pytest.mark.slow
def test_pathsegdiff_ablation_runs_the_dino_arm_on_the_same_held_out_tiles(tmp_path):
    """Issue 17 point 3: the head on DINO features beside the head on diffusion features, each trained and
    scored through the bundle (one seed, one epoch per stage: plumbing, not quality)."""
    import json

    import torch

    from tools.bench.pathsegdiff import ARMS, dino_pretrain_stage, feature_ablation

    pretrain = dino_pretrain_stage(0, 32)
    # as many DINO crops as the autoencoder (20 epochs) and diffusion (20 epochs) stages' 4 crops per tile
    assert pretrain["overrides"]["max_epochs"] == round((20 + 20) * 4 / 7)
    assert pretrain["overrides"]["datalist_keys"] == ["training", "validation"]
    one = {"max_epochs": 1, "batch_size": 2, "patches_per_tile": 1, "val_interval": 1}
    # the random arm is the diffusion arm's head stages on other weights: left out to keep the test short
    result = feature_ablation(tmp_path, seeds=[0], n_train=2, n_val=1, n_test=3, size=64, arms=["dino_encoder"],
                              stage_overrides={
        "train_autoencoder": {"autoencoder#max_epochs": 1}, "train_diffusion": {"diffusion#max_epochs": 1},
        "train": one, "dino_pretrain": {"max_epochs": 1, "batch_size": 4, "patches_per_image": 2}},
        log=lambda msg: None)
    arms = {row["arm"]: row for row in result["rows"]}
    assert set(arms) == {"diffusion", "dino_encoder", "diffusion - dino_encoder"} and "random_encoder" in ARMS
    assert all(row["n_held_out"] == 3 and row["seeds"] == [0] for row in arms.values())
    assert "verdict" in arms["diffusion - dino_encoder"] and "DINO arm" in result["budget"]
    # the DINO arm's head was trained on the DINO backbone: its model.pt holds those weights, frozen
    from liverseg_monai.networks.weights import read_backbone_file

    backbone = read_backbone_file(tmp_path / "seed0" / "dino_encoder" / "dino_bundle" / "models" / "backbone.pt")
    model = torch.load(tmp_path / "seed0" / "dino_encoder" / "bundle" / "models" / "model.pt", map_location="cpu",
                       weights_only=True)
    for key in ("conv1.weight", "layer1.0.conv1.weight", "layer2.1.conv2.weight"):
        torch.testing.assert_close(model["extractor.features." + key], backbone[key])
    per_case = [json.loads((tmp_path / "seed0" / arm / "eval" / "summary.json").read_text())
                for arm in ("diffusion", "dino_encoder")]
    assert all("mean_iou" in s for s in per_case)


def test_realistic_slide_is_mostly_tissue_with_over_a_thousand_patches():
    """Issue 19 point 5: beside the mostly-glass slides, one with at least 30 % tissue and at least 1000
    tissue patches at the inference level (the DeepLab slide config's 256-px patches, overlap 0.25)."""
    from liverseg_monai.inferers.slide import patch_starts
    from tools.bench import GROUPS, PRESETS, SCENARIOS
    from tools.bench.slides import TissueDisc, tissue_fraction

    assert "slide_tissue" in SCENARIOS and "slide_tissue" in GROUPS["speed"]
    size, disc = PRESETS["full"]["slide_tissue"]["size"], PRESETS["full"]["slide_tissue"]["tissue_px"]
    assert tissue_fraction(size, disc) >= 0.3
    assert tissue_fraction(5000, 2000) == pytest.approx(3.14159 * 1000**2 / 5000**2, rel=0.01)
    inside = TissueDisc(size, size, disc)
    starts = patch_starts(size, 256, 192)
    centred = sum(bool(inside(y + 128, x + 128)) for y in starts for x in starts)
    assert centred >= 1000  # patches whose centre is tissue: a lower bound of the tissue-filtered grid


def test_slide_rows_show_the_tissue_share():
    base = {"slide_px": [8000, 8000], "tissue_disc_px": 7000, "tissue_fraction": 0.6, "tiles": 1100,
            "tiles_per_s_end_to_end": 5.0, "tiles_per_s_forward_only": 5.5, "rate_ratio": 0.91,
            "tiles_per_s_network_in_run": 5.4, "rate_ratio_to_network_in_run": 0.93, "peak_rss_mb": 1800.0,
            "patch_px": 256, "batch_size": 4, "weights": "random init (seed 0)", "network_overrides": {},
            "device": "cpu"}
    from tools.bench.report import _slides

    md = "\n".join(_slides({"slide_tissue": base}))
    assert "| 8000x8000 px, tissue disc 7000 px | 60% | 1100 |" in md
