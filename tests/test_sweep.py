"""Sweeps over seeds and layers: the aggregate's numbers (biosae.studies.aggregate) on constructed metrics,
then a tiny 2-seed x 2-layer sweep through the real Snakemake engine, and what adding a seed or a
layer reruns."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from biosae.methods.causal_variants import VARIANTS as CAUSAL_VARIANTS
from biosae.studies.aggregate import (
    EMERGENCE_CRITERIA,
    SUMMARY_COLUMNS,
    SweepRun,
    emergence,
    headline_values,
    layer_label,
    per_run_values,
    render_summary,
    summarize,
    write_figures,
)
from tests.conftest import copy_run, planned_jobs, run_snakemake

pytestmark = pytest.mark.slow

CELLS = ["train", "ood_template", "ood_person", "ood_both", "hard_seen_person", "hard_unseen_person"]
SEEDS = [0, 1]
LAYERS = [1, -1]
N_LAYER = 2  # tiny_config's model


def fake_metrics(slot: float, cells=("train", "ood_both"), swap: dict | None = None, **overrides) -> dict:
    """A metrics.json with the headline sections only; every number derived from ``slot``."""
    metrics = {
        "cells": list(cells),
        "slot_accuracy": {cell: slot for cell in cells},
        "baselines": {cell: {"untrained_lm_sae": 0.5, "bag_of_words": 1.0} for cell in cells},
        "margins": {cell: {"over_untrained_lm": slot - 0.5, "over_bag_of_words": slot - 1.0} for cell in cells},
        "lm_qa_accuracy": {cell: {"first_token": 0.9} for cell in cells},
        "ablation": {
            mode: {cell: {"selectivity": slot / 2} for cell in cells}
            for mode in ("slot", "direction", "random_direction")
        },
        "swap": swap if swap is not None else {"alpha=1.0": {cell: {"mean_off_diagonal": slot / 4} for cell in cells}},
    }
    metrics.update(overrides)
    return metrics


def row_of(rows, metric, cell, layer):
    matches = [row for row in rows if (row["metric"], row["cell"], row["layer"]) == (metric, cell, layer)]
    assert len(matches) == 1, (metric, cell, layer, matches)
    return matches[0]


# ---------------------------------------------------------------------------------------------
# biosae.studies.aggregate on constructed metrics


def test_headline_values_name_every_metric_per_cell():
    values = headline_values(
        fake_metrics(
            0.8,
            swap={
                "alpha=1.0": {"train": {"mean_off_diagonal": 0.2}},
                "alpha=2.0": {"train": {"mean_off_diagonal": 0.3}},
            },
        )
    )
    assert values[("slot_accuracy", "ood_both")] == 0.8
    assert values[("untrained_lm_slot_accuracy", "train")] == 0.5
    assert values[("margin_over_untrained_lm", "train")] == pytest.approx(0.3)
    assert values[("margin_over_bag_of_words", "train")] == pytest.approx(-0.2)
    assert values[("lm_first_token_accuracy", "train")] == 0.9
    assert values[("direction_ablation_selectivity", "train")] == 0.4
    assert values[("slot_ablation_selectivity", "train")] == 0.4
    assert values[("random_direction_ablation_selectivity", "train")] == 0.4
    assert values[("swap_success_alpha=1.0", "train")] == 0.2
    assert values[("swap_success_alpha=2.0", "train")] == 0.3
    assert ("swap_success_alpha=2.0", "ood_both") not in values  # not measured there: no key, not None


def test_mean_std_n_across_seeds_per_layer():
    runs = [
        SweepRun(0, 1, fake_metrics(0.2)),
        SweepRun(1, 1, fake_metrics(0.4)),
        SweepRun(2, 1, fake_metrics(0.9)),
        SweepRun(0, -1, fake_metrics(0.95)),
        SweepRun(1, -1, fake_metrics(0.97)),
    ]
    rows = summarize(runs, n_layer=4)
    shallow = row_of(rows, "slot_accuracy", "ood_both", 1)
    assert shallow["n"] == 3
    assert shallow["mean"] == pytest.approx(np.mean([0.2, 0.4, 0.9]))
    assert shallow["std"] == pytest.approx(np.std([0.2, 0.4, 0.9], ddof=1))
    last = row_of(rows, "slot_accuracy", "ood_both", -1)
    assert (last["n"], last["blocks"]) == (2, 4)
    assert last["mean"] == pytest.approx(0.96) and last["std"] == pytest.approx(np.std([0.95, 0.97], ddof=1))
    assert row_of(rows, "swap_success_alpha=1.0", "train", -1)["mean"] == pytest.approx(0.96 / 4)
    # metric order, then cell order of the runs, then depth (-1 = 4 blocks after layer 1)
    keys = [(row["metric"], row["cell"], row["layer"]) for row in rows]
    assert keys[:4] == [
        ("slot_accuracy", "train", 1),
        ("slot_accuracy", "train", -1),
        ("slot_accuracy", "ood_both", 1),
        ("slot_accuracy", "ood_both", -1),
    ]
    assert set(rows[0]) == set(SUMMARY_COLUMNS)


def test_missing_values_are_left_out_not_counted_as_zero():
    no_swap = fake_metrics(0.6)
    del no_swap["swap"]
    null_margin = fake_metrics(0.8)
    null_margin["margins"]["ood_both"]["over_untrained_lm"] = None
    nan_slot = fake_metrics(0.7)
    nan_slot["slot_accuracy"]["ood_both"] = float("nan")
    runs = [
        SweepRun(0, 2, fake_metrics(0.5)),
        SweepRun(1, 2, no_swap),
        SweepRun(2, 2, null_margin),
        SweepRun(3, 2, nan_slot),
    ]
    rows = summarize(runs, n_layer=None)
    swap = row_of(rows, "swap_success_alpha=1.0", "ood_both", 2)
    assert swap["n"] == 3 and swap["mean"] == pytest.approx(np.mean([0.5, 0.8, 0.7]) / 4)
    margin = row_of(rows, "margin_over_untrained_lm", "ood_both", 2)
    assert margin["n"] == 3 and margin["mean"] == pytest.approx(np.mean([0.0, 0.1, 0.2]))
    slot = row_of(rows, "slot_accuracy", "ood_both", 2)
    assert slot["n"] == 3 and slot["mean"] == pytest.approx(np.mean([0.5, 0.6, 0.8]))

    one_seed = summarize([SweepRun(0, 2, fake_metrics(0.5))])
    assert row_of(one_seed, "slot_accuracy", "train", 2)["std"] is None  # no spread from one seed, not 0
    only_null = fake_metrics(0.5)
    only_null["slot_accuracy"]["train"] = None
    row = row_of(summarize([SweepRun(0, 2, only_null)]), "slot_accuracy", "train", 2)
    assert (row["mean"], row["std"], row["n"]) == (None, None, 0)


def test_emergence_is_computed_from_the_means():
    runs = [
        SweepRun(seed, layer, fake_metrics(slot))
        for seed in (0, 1)
        for layer, slot in ((0, 0.3), (1, 0.85 + 0.01 * seed), (2, 0.95), (-1, 0.99))
    ]
    rows = summarize(runs, n_layer=3)
    slot_criterion = next(c for c in EMERGENCE_CRITERIA if c.metric == "slot_accuracy")
    found = emergence(rows, slot_criterion)
    assert found["first"]["layer"] == 2 and not found["lowest_swept"]
    assert [row["layer"] for row in found["curve"]] == [0, 1, 2, -1]
    summary = render_summary(rows, runs, n_layer=3)
    assert (
        "SAE slot accuracy on ood_both (mean over seeds), bar > 0.9 (seed's OOD bar): first passed at "
        "layer 2, 0.950 ± 0.000 (n=2). By layer: 0: 0.300, 1: 0.855, 2: 0.950, 3 (-1): 0.990."
    ) in summary
    assert "100% at layer 6" in summary and "| cell | layer 0 | layer 1 | layer 2 | layer 3 (-1) |" in summary

    never = summarize([SweepRun(0, layer, fake_metrics(0.5)) for layer in (1, -1)], n_layer=2)
    assert "not passed at any layer swept (highest 0.500 at layer 1)" in render_summary(never, [], n_layer=2)
    always = summarize([SweepRun(0, layer, fake_metrics(0.99)) for layer in (1, -1)], n_layer=2)
    assert "already at the lowest layer swept" in render_summary(always, [], n_layer=2)


def test_method_table_gives_the_sae_gap_to_the_best_other_method():
    from biosae.studies.aggregate import method_winner_lines

    iia = {
        (1, "sae_slot"): 0.80,
        (1, "das"): 0.75,
        (1, "probe"): 0.70,
        (1, "random"): 0.95,
        (-1, "sae_slot"): 0.30,
        (-1, "das"): 0.34,
        (-1, "probe"): 0.20,
        (-1, "random"): 0.05,
    }
    rows = [
        {"metric": f"iia:{method}", "cell": cell, "layer": layer, "blocks": 2, "mean": value, "n": 1}
        for (layer, method), value in iia.items()
        for cell in ("ood_person", "hard_unseen_person")
    ]
    rows.append(
        {"metric": "iia:sae_slot", "cell": "train", "layer": 1, "blocks": 1, "mean": 0.0, "n": 1}
    )  # not held out
    text = "\n".join(
        method_winner_lines(rows, [1, -1], {1: "1", -1: "2 (-1)"}, ["train", "ood_person", "hard_unseen_person"])
    )
    # Where the SAE wins, its lead over the next method (never +0.000); where it trails, how far.
    # The random control is never the winner, whatever its score.
    assert "| layer 1 | 0.800 | 0.750 | 0.700 | 0.950 | **sae_slot** | +0.050 |" in text
    assert "| layer 2 (-1) | 0.300 | 0.340 | 0.200 | 0.050 | **das** | -0.040 |" in text
    assert "sae_slot − best other" in text


def test_layer_labels_stay_honest():
    assert layer_label(-1, 12) == "12 (-1)"
    assert layer_label(-1, None) == "-1 (last block)"
    assert layer_label(3, 12) == "3"


def test_figures_are_pngs_and_per_run_table_is_long(tmp_path):
    runs = [
        SweepRun(seed, layer, fake_metrics(0.5 + 0.1 * seed + 0.05 * layer, cells=CELLS))
        for seed in SEEDS
        for layer in (0, 1, -1)
    ]
    rows = summarize(runs, n_layer=None)  # unknown block count: -1 still drawn last
    written = write_figures(rows, tmp_path, n_layer=None)
    assert set(written.values()) == {
        "slot_accuracy_by_layer.png",
        "margin_over_untrained_lm_by_layer.png",
        "direction_ablation_selectivity_by_layer.png",
        "swap_success_alpha1.0_by_layer.png",
    }
    for name in written.values():
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    assert len(per_run_values(runs)) == len(runs) * len(CELLS) * 9


# ---------------------------------------------------------------------------------------------
# end to end: a tiny sweep through Snakemake


PER_RUN_RULES = ("evaluate",)
PER_SEED_RULES = (
    "train_lm",
    "lm_qa_accuracy",
    "untrained_lm",
    "activations",
    "untrained_activations",
    "train_sae",
    "untrained_sae",
    "train_das",
    "train_unsupervised_sae",
    "train_causal_sae",
    "evaluate_methods",
)  # an LM's method jobs train (and test) every layer


@pytest.fixture(scope="module")
def tiny_sweep(tiny_pipeline, tmp_path_factory) -> SimpleNamespace:
    """The tiny default run (seed 0, every layer of a 2-layer model) turned into a 2-seed x 2-layer
    sweep (seeds 0, 1 x layers 1, -1) and run: the default run's jobs are reused, not redone.
    ``planned`` is the dry run's job count per rule before the sweep ran."""
    directory = copy_run(tiny_pipeline, tmp_path_factory.mktemp("tiny_sweep") / "run", seeds=SEEDS, layers=LAYERS)
    planned = planned_jobs(directory)
    run_snakemake(directory, "--cores", "2", timeout=1800)
    return SimpleNamespace(path=directory, planned=planned)


def test_a_default_run_becomes_a_sweep_without_redoing_it(tiny_sweep):
    # Seed 0's runs at layers 1 and -1 are the default run's; dropping its layer 0 reruns nothing.
    # The default run's evaluate reruns, cheaply, for one reason: its summary.md opens with seed 0's
    # layer profile, whose set of layers changed.
    new_seeds = len(SEEDS) - 1
    expected = {
        **{rule: new_seeds for rule in PER_SEED_RULES},
        **{rule: new_seeds * len(LAYERS) for rule in PER_RUN_RULES},
        "aggregate": 1,
        "all": 1,
    }
    expected["evaluate"] += 1
    assert tiny_sweep.planned == expected


def run_metrics(sweep_dir: Path, seed: int, layer: int) -> dict:
    prefix = "" if (seed, layer) == (0, -1) else f"sweep/seed_{seed}/layer_{layer}/"
    return json.loads((sweep_dir / "results" / prefix / "eval" / "metrics.json").read_text())


def test_sweep_paths_default_flat_others_nested(tiny_sweep):
    root = tiny_sweep.path
    results = root / "results"
    assert (results / "lm/final/config.json").is_file() and (results / "eval/metrics.json").is_file()
    assert (results / "sweep/seed_1/lm/final/config.json").is_file()
    assert (results / "sweep/seed_1/baselines/untrained_lm/model/config.json").is_file()
    assert not (results / "sweep/seed_0/lm").exists()  # seed 0's other layer reuses the default LM
    for lm_results in (results, results / "sweep/seed_1"):  # one activations job per LM, a file per layer
        for layer in LAYERS:
            assert (lm_results / f"activations/layer_{layer}.safetensors").is_file()
            assert (lm_results / f"baselines/untrained_lm/activations/layer_{layer}.safetensors").is_file()
        assert (lm_results / "activations/index.csv").is_file()
    for seed, layer in ((0, 1), (1, 1), (1, -1)):
        run = results / f"sweep/seed_{seed}/layer_{layer}"
        for relative in ("eval/metrics.json", "eval/summary.md"):
            assert (run / relative).is_file(), (run, relative)
        lm_results = results / ("" if seed == 0 else f"sweep/seed_{seed}")
        for relative in (
            f"sae/layer_{layer}/sae.safetensors",
            f"baselines/untrained_lm/sae/layer_{layer}/sae.safetensors",
        ):
            assert (lm_results / relative).is_file(), (lm_results, relative)
        assert not (run / "activations").exists()
        assert run_metrics(root, seed, layer)["layer"] == layer
        assert (root / f"logs/sweep/seed_{seed}/layer_{layer}/evaluate.log").is_file()
    assert (root / "logs/aggregate.log").is_file() and (root / "benchmarks/aggregate.tsv").is_file()


def test_sweep_aggregate_has_n_seeds_per_metric_cell_layer(tiny_sweep):
    aggregate = tiny_sweep.path / "results" / "aggregate"
    with open(aggregate / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == SUMMARY_COLUMNS
    by_key = {(row["metric"], row["cell"], int(row["layer"])): row for row in rows}
    assert len(by_key) == len(rows)
    assert {row["metric"] for row in rows} == {
        "slot_accuracy",
        "untrained_lm_slot_accuracy",
        "margin_over_untrained_lm",
        "margin_over_bag_of_words",
        "lm_first_token_accuracy",
        "slot_ablation_selectivity",
        "direction_ablation_selectivity",
        "random_direction_ablation_selectivity",
        "swap_success_alpha=1.0",
        "swap_success_alpha=2.0",
        *(
            f"{test}:{method}"
            for test in ("iia", "ablation_selectivity", "isolate", "disentanglement")
            for method in ("sae_slot", "diffmean", "probe", "das", "sae_unsupervised", "random", *CAUSAL_VARIANTS)
        ),
        *(
            f"{test}:{method}"
            for test in ("steering", "faithfulness")
            for method in ("sae_slot", "diffmean", "probe", "sae_unsupervised", *CAUSAL_VARIANTS)
        ),
    }
    assert {row["cell"] for row in rows} == set(CELLS)
    assert {row["blocks"] for row in rows if row["layer"] == "-1"} == {str(N_LAYER)}
    # Every (metric, cell, layer) has both seeds. The tiny LM barely answers, so the causal tests'
    # normalized drops can be null (a rate over zero correct prompts): n counts the values present.
    paths = {
        "slot_accuracy": ("slot_accuracy", "{cell}"),
        "untrained_lm_slot_accuracy": ("baselines", "{cell}", "untrained_lm_sae"),
        "lm_first_token_accuracy": ("lm_qa_accuracy", "{cell}", "first_token"),
        "direction_ablation_selectivity": ("ablation", "direction", "{cell}", "selectivity"),
        "swap_success_alpha=1.0": ("swap", "alpha=1.0", "{cell}", "mean_off_diagonal"),
    }
    for layer in LAYERS:
        for metric, path in paths.items():
            for cell in CELLS:
                values = []
                for seed in SEEDS:
                    value = run_metrics(tiny_sweep.path, seed, layer)
                    for key in path:
                        value = value[key.format(cell=cell)]
                    values.append(value)
                present = [value for value in values if value is not None]
                row = by_key[(metric, cell, layer)]
                assert int(row["n"]) == len(present), (metric, cell, layer)
                if present:
                    assert float(row["mean"]) == pytest.approx(np.mean(present), abs=1e-9)
                if metric in ("slot_accuracy", "untrained_lm_slot_accuracy", "lm_first_token_accuracy"):
                    assert row["n"] == "2", row  # correlational: every row of every cell, never null
                    assert float(row["std"]) == pytest.approx(np.std(values, ddof=1), abs=1e-9)

    summary = (aggregate / "summary.md").read_text()
    assert "## Where the separation appears" in summary and "layer 2 (-1)" in summary
    for name in (
        "slot_accuracy_by_layer.png",
        "margin_over_untrained_lm_by_layer.png",
        "direction_ablation_selectivity_by_layer.png",
        "swap_success_alpha1.0_by_layer.png",
        "swap_success_alpha2.0_by_layer.png",
    ):
        assert (aggregate / "figures" / name).read_bytes()[:4] == b"\x89PNG", name
        assert f"(figures/{name})" in summary
    with open(aggregate / "per_run.csv", newline="") as handle:
        assert {(row["seed"], row["layer"]) for row in csv.DictReader(handle)} == {
            (str(seed), str(layer)) for seed in SEEDS for layer in LAYERS
        }


def test_nothing_to_do_after_a_complete_sweep(tiny_sweep, tmp_path):
    assert planned_jobs(copy_run(tiny_sweep.path, tmp_path / "run")) == {}


def test_adding_a_seed_runs_only_that_seeds_jobs_and_the_aggregate(tiny_sweep, tmp_path):
    run = copy_run(tiny_sweep.path, tmp_path / "run", seeds=[*SEEDS, 2])
    expected = {
        **{rule: 1 for rule in PER_SEED_RULES},
        **{rule: len(LAYERS) for rule in PER_RUN_RULES},
        "aggregate": 1,
        "all": 1,
    }
    assert planned_jobs(run) == expected
    result = run_snakemake(run, "-n")
    output = result.stdout + result.stderr
    wildcards = [line.split(":", 1)[1].strip() for line in output.splitlines() if line.strip().startswith("wildcards:")]
    assert len(wildcards) == sum(expected.values()) - 2  # every job but aggregate and all has wildcards ...
    assert all("seed_2/" in line for line in wildcards), wildcards  # ... and they are the new seed's


def test_adding_a_layer_reuses_every_trained_lm(tiny_sweep, tmp_path):
    """Seed 0 still has layer 0 from the default run: nothing of it reruns. Seed 1 lacks its file:
    its one activations pass runs again, rewriting every layer's file, so its two SAE jobs and its
    DAS and TopK SAE jobs (each trains every layer) and every layer's evaluation of seed 1 follow;
    no LM is retrained."""
    run = copy_run(tiny_sweep.path, tmp_path / "run", layers=[*LAYERS, 0])
    layers = len(LAYERS) + 1
    expected = {
        "activations": 1,
        "untrained_activations": 1,
        "train_sae": 1,
        "untrained_sae": 1,
        "train_das": 1,
        "train_unsupervised_sae": 1,
        "train_causal_sae": 1,
        "evaluate_methods": 1,
        **{rule: layers for rule in PER_RUN_RULES},
        "aggregate": 1,
        "all": 1,
    }
    expected["evaluate"] += 1  # seed 0's default run: its summary's layer profile gains layer 0
    assert planned_jobs(run) == expected


def test_report_includes_the_aggregate_figures(tiny_sweep, tmp_path):
    run = copy_run(tiny_sweep.path, tmp_path / "run")
    run_snakemake(run, "--report", str(run / "report.html"))
    html = (run / "report.html").read_text(errors="replace")
    for name in (
        "slot_accuracy_by_layer.png",
        "direction_ablation_selectivity_by_layer.png",
        "swap_success_alpha1.0_by_layer.png",
        "summary.csv",
    ):
        assert name in html, name
