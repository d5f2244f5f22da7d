"""The question-diversity study's table (biosae.studies.question_study), read from a real finished run."""

from __future__ import annotations

import json
import shutil

import pytest

from biosae.errors import BiosaeError
from biosae.studies.question_study import main, read_setting, study_markdown, study_row
from biosae.rules import HARD_CELLS


def test_a_finished_run_reads_into_one_row_with_its_whole_layer_profile(tiny_pipeline):
    (run,) = read_setting(tiny_pipeline)
    assert run.seed == 0 and run.train_templates == [0] and sorted(run.metrics_by_layer) == [-1, 0, 1]
    row = study_row(run)
    qa = json.loads((tiny_pipeline / "results/lm/qa_accuracy.json").read_text())
    hook = json.loads((tiny_pipeline / "results/eval/metrics.json").read_text())
    for cell in HARD_CELLS:
        assert row[f"lm_first_token:{cell}"] == qa[cell]["first_token"]
        assert row[f"slot_accuracy:{cell}"] == hook["slot_accuracy"][cell]
        answered = row[f"answered:{cell}"]
        assert sum(answered.values()) == pytest.approx(1.0)
    # The peak is the layer with the highest mean hard-cell selectivity of the SAE slots.
    selectivity = {}
    for layer, metrics in run.metrics_by_layer.items():
        values = [metrics["methods"]["sae_slot"]["ablation"][cell]["selectivity"] for cell in HARD_CELLS]
        selectivity[layer] = sum(values) / len(values)
    assert row["peak"]["selectivity"] == pytest.approx(max(selectivity.values()))
    assert selectivity[row["peak_layer"]] == pytest.approx(max(selectivity.values()))
    # The tiny LM answers ~20% of the hard questions: far from the study's target.
    assert not row["meets_target"]
    text = "\n".join(study_markdown([row]))
    assert "No setting meets the target" in text and "tiny_pipeline" in text


def test_cli_writes_the_table_and_an_unfinished_setting_is_one_line(tiny_pipeline, tmp_path, capsys):
    out = tmp_path / "study.md"
    assert main([f"seed={tiny_pipeline}", "--out", str(out)]) == 0
    assert out.read_text().count("| seed (seed 0") == 3  # one row in each of the three tables
    # Read from the results alone: without its config.yaml the run is the default seed's.
    no_config = tmp_path / "no_config"
    shutil.copytree(tiny_pipeline / "results", no_config / "results")
    (run,) = read_setting(no_config, "nouns")
    assert run.seed is None and run.train_templates == [0] and sorted(run.metrics_by_layer) == [-1, 0, 1]
    (no_config / "results/lm/qa_accuracy.json").unlink()
    assert main([str(no_config)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "qa_accuracy.json: missing" in error
    with pytest.raises(BiosaeError, match="eval/metrics.json: missing"):
        read_setting(tmp_path / "nowhere")
