"""summary.md and the figures: built from a metrics dict shaped like a tiny run's metrics.json."""

import json

import numpy as np
import pytest

from biosae.errors import BiosaeError
from biosae.evaluation import metrics as m
from biosae.evaluation import plots
from biosae.evaluation.figures import write_figures
from biosae.evaluation.report import render_summary, write_summary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_metrics():
    cells = ["train", "ood_template", "ood_person", "ood_both", "hard_unseen_person"]
    rules = np.repeat(np.arange(6), 10)
    identity_ablation = m.ablation_matrix(rules, np.ones(60, bool), np.stack([rules != k for k in range(6)]))
    asked = np.repeat(np.arange(6), 10)
    answered = asked.copy()
    answered[10:14] = 5  # birth_city questions answered with the work city 4/10 times
    answered[20:30] = m.ANSWERED_NONE  # university questions answered with nothing of the person's
    metrics = {
        "cells": cells,
        "n_prompts": {cell: 60 for cell in cells},
        "slot_accuracy": {
            "train": 0.99,
            "ood_template": 0.97,
            "ood_person": 0.96,
            "ood_both": 0.85,
            "hard_unseen_person": 0.55,
        },
        "confusion": {"train": m.confusion_matrix(rules, rules)},
        "lm_qa_accuracy": {
            "train": m.lm_answer_accuracy(np.ones(60, bool), rules, np.zeros(60, int)),
            "hard_unseen_person": m.lm_answer_accuracy(asked == answered, asked, np.arange(60) % 3),
        },
        "ablation": {"slot": {"train": identity_ablation}, "random_direction": {"train": identity_ablation}},
        "swap": {"alpha=2.0": {"train": m.swap_matrix(rules, np.ones((6, 60)))}},
        "value_accuracy": {"train": {"sae": 0.8, "majority_baseline": 0.1}},
        "baselines": {
            cell: {"chance": 1 / 6, "bag_of_words": 1.0, "linear_probe": 0.99, "untrained_lm_sae": 0.9}
            for cell in cells
        },
        "asked_vs_answered": {"hard_unseen_person": m.asked_vs_answered(asked, answered)},
        "notes": ["a note from the run"],
    }
    metrics["margins"] = m.headline_margins(metrics["slot_accuracy"], metrics["baselines"])
    metrics["expected_results"] = m.expected_results(metrics)
    return json.loads(json.dumps(metrics))  # exactly what a reader of metrics.json gets


def test_summary_starts_with_the_headline_table_and_states_failures(tmp_path):
    path = tmp_path / "eval" / "summary.md"
    write_summary(tiny_metrics(), path)
    text = path.read_text()
    headline = text.index("## Headline")
    assert headline < text.index("## Expected results")
    assert "| cell | n | SAE slot acc. | untrained LM | bag of words |" in text
    assert "| ood_both | 60 | 0.850 | 0.900 | 1.000 | 0.990 | 0.167 | -0.050 | -0.150 | – |" in text
    lines = text.splitlines()
    assert any(
        line.startswith("- **FAIL**") and "every OOD cell" in line and "ood_both 0.850" in line for line in lines
    )
    assert any(line.startswith("- **FAIL**") and "untrained-LM" in line for line in lines)
    assert any(line.startswith("- **PASS**") and "train cell" in line and "0.990" in line for line in lines)
    assert "## Ablation" in text and "random_direction" in text
    assert "## Slot swap" in text and "alpha=2.0" in text
    assert (
        "| cell | value heads | lens, gated by the slot | lens, gated by the asked rule | per-rule majority |" in text
    )
    assert "| train | 0.800 | – | – | 0.100 |" in text  # no lens in these metrics: not measured, not zero
    assert "birth_city/" not in text.split("## LM answer accuracy per question template")[0]
    assert "| birth_date/0 |" in text
    assert (
        "for hard_unseen_person (LM answer accuracy 0.767), birth_city questions were answered with "
        "the work_city 40% of the time (4/10)"
    ) in text
    assert "university questions were answered with none of the person's attributes 100%" in text
    assert "for train" not in text  # the LM answers the train cell well: no finding there
    assert "- a note from the run" in text


def test_summary_skips_missing_sections_and_marks_unmeasured_expectations():
    text = render_summary({"slot_accuracy": {"train": 0.97}})
    assert "## Headline" in text and "## Ablation" not in text and "## Slot swap" not in text
    assert "**NOT MEASURED**" in text and "**PASS**" in text
    assert "| train | – | 0.970 | – |" in text


def test_summary_embeds_figures_when_given():
    text = render_summary({"slot_accuracy": {"train": 0.97}}, figures={"confusion, train": "confusion_train.png"})
    assert "![confusion, train](confusion_train.png)" in text


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000
    assert not list(path.parent.glob(".*.tmp"))


def test_confusion_and_swap_grids_write_png_files(tmp_path):
    rules = np.repeat(np.arange(6), 5)
    plots.plot_confusion_grid({"train": m.confusion_matrix(rules, rules)}, "confusion", tmp_path / "confusion.png")
    assert_png(tmp_path / "confusion.png")
    swap = m.swap_matrix(rules, np.ones((6, 30)))["success_rate"]  # diagonal null: drawn grey, annotated "–"
    assert all(swap[k][k] is None for k in range(6))
    plots.plot_matrix_grid({"train": swap}, "swap", tmp_path / "swap.png", "source rule", "target slot", vmin=0, vmax=1)
    assert_png(tmp_path / "swap.png")


def test_training_curves_and_cell_bars_write_png_files(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("step,loss,recon,align\n0,3.0,1.0,2.0\n10,2.0,0.5,1.0\n20,1.5,0.4,\n")
    plots.plot_training_curves(log, ["loss", "align", "not_logged"], tmp_path / "curves.png", "SAE training")
    assert_png(tmp_path / "curves.png")
    with pytest.raises(BiosaeError, match="none of the columns"):
        plots.plot_training_curves(log, ["nothing"], tmp_path / "none.png", "x")
    plots.plot_cells_bar(
        {"SAE": {"train": 0.99, "ood_both": 0.9}, "untrained LM": {"train": 0.5}, "bag of words": {"ood_both": 1.0}},
        tmp_path / "bars.png",
        "slot accuracy per cell",
        reference_lines={"seed OOD bar": 0.9},
    )
    assert_png(tmp_path / "bars.png")


def png_size(path):
    """(width, height) in pixels, from the PNG's IHDR chunk."""
    data = path.read_bytes()
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_grids_draw_one_panel_per_cell_in_one_file(tmp_path):
    rules = np.repeat(np.arange(6), 5)
    confusion = m.confusion_matrix(rules, rules)
    plots.plot_confusion_grid({"train": confusion}, "one cell", tmp_path / "single.png")
    cells = ["train", "ood_template", "ood_person", "ood_both", "hard_seen_person", "hard_unseen_person"]
    plots.plot_confusion_grid({cell: confusion for cell in cells}, "six cells", tmp_path / "grid.png")
    single, grid = png_size(tmp_path / "single.png"), png_size(tmp_path / "grid.png")
    assert_png(tmp_path / "grid.png")
    # 3 columns x 2 rows of panels, each the size of the single-cell figure.
    assert grid[0] > 2.5 * single[0] and grid[1] > 1.7 * single[1]

    drop = m.ablation_matrix(rules, np.ones(30, bool), np.stack([rules != k for k in range(6)]))["accuracy_drop"]
    plots.plot_matrix_grid(
        {"train": drop, "ood_both": drop},
        "slot ablation",
        tmp_path / "ablation.png",
        "ablated slot",
        "rule",
        vmin=-0.2,
        vmax=1.0,
    )
    assert_png(tmp_path / "ablation.png")
    with pytest.raises(ValueError, match="no matrix"):
        plots.plot_matrix_grid({}, "nothing", tmp_path / "empty.png", "a", "b")
    assert not (tmp_path / "empty.png").exists()


def test_evaluation_figures_are_one_file_per_test(tmp_path):
    rules = np.repeat(np.arange(6), 5)
    cells = ["train", "ood_both"]
    drop = m.ablation_matrix(rules, np.ones(30, bool), np.stack([rules != k for k in range(6)]))
    swap = m.swap_matrix(rules, np.ones((6, 30)))
    metrics = {
        "cells": cells,
        "slot_accuracy": {cell: 1.0 for cell in cells},
        "baselines": {cell: {"untrained_lm_sae": 0.5, "bag_of_words": 1.0, "linear_probe": 1.0} for cell in cells},
        "confusion": {cell: m.confusion_matrix(rules, rules) for cell in cells},
        "ablation": {mode: {cell: drop for cell in cells} for mode in ("slot", "direction", "random_direction")},
        "swap": {f"alpha={a}": {cell: swap for cell in cells} for a in (1.0, 2.0)},
    }
    written = write_figures(metrics, tmp_path)
    assert sorted(written.values()) == sorted(
        [
            "slot_accuracy_by_cell.png",
            "confusion.png",
            "ablation_slot.png",
            "ablation_direction.png",
            "ablation_random_direction.png",
            "swap_alpha1.0.png",
            "swap_alpha2.0.png",
        ]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(written.values())


def test_the_causal_sae_targets_say_which_are_missed_and_by_how_much():
    from biosae.evaluation.layer_profile import causal_sae_targets

    def layer(number, causal_iia, das_iia, diagonal):
        cells = ["train", "ood_both"]

        def method(iia, selectivity, diagonal_mean):
            return {
                "interchange": {cell: {"iia": iia} for cell in cells},
                "ablation": {cell: {"selectivity": selectivity, "diagonal_mean": diagonal_mean} for cell in cells},
            }

        return {
            "layer": number,
            "cells": cells,
            "methods": {
                "sae_slot_causal": method(causal_iia, 0.6, diagonal),
                "das": method(das_iia, 0.5, 0.2),
            },
        }

    lines = causal_sae_targets([layer(1, 0.93, 0.90, 0.85), layer(-1, 0.40, 0.45, 0.30)], 4, -1)
    text = "\n".join(lines)
    assert "- IIA on `ood_both` at layer 1 ≥ 0.95: 0.930, missed by 0.020." in text
    assert (
        "IIA, mean over the held-out cells, ≥ DAS's at every layer: missed at layer 4 (-1) ← seed's hook by 0.050."
        in text
    )
    assert "ablation selectivity, mean over the held-out cells, ≥ DAS's at every layer: met at every layer." in text
    assert "train diagonal > 0.8) at its best layer (1): 0.850, met." in text
    assert causal_sae_targets([{"layer": 1, "cells": ["train"], "methods": {"das": {}}}], 4, -1) == []
