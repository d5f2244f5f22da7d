"""New questions on a finished run (evaluate.extra_questions): activation files of their own, scored
by the SAEs and methods already trained; nothing retrains and the shipped cells' numbers stay."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from biosae import layout
from biosae.errors import BiosaeError
from biosae.io import save_tensors
from biosae.lm.activations import INDEX_COLUMNS, load_activation_table, load_activation_tables
from tests.conftest import copy_run, planned_jobs, run_snakemake

RETRAINING = {"train_lm", "train_sae", "untrained_sae", "train_das", "train_unsupervised_sae", "train_causal_sae"}
SHIPPED_PASSES = {"activations", "untrained_activations", "lm_qa_accuracy", "dataset", "untrained_lm"}
PROFILE = [0, 1, -1]  # tiny_config's 2-block model


def write_table(directory, rows: int, offset: float):
    directory.mkdir(parents=True)
    index = pd.DataFrame({column: [0] * rows for column in INDEX_COLUMNS})
    index["row"] = np.arange(rows)
    index["split"] = "train"
    index.to_csv(directory / "index.csv", index=False)
    save_tensors(directory / "layer_0.safetensors", {"activations": torch.full((rows, 4), offset)})
    return directory / "layer_0.safetensors", directory / "index.csv"


def test_activation_tables_join_after_the_shipped_rows(tmp_path):
    shipped = write_table(tmp_path / "shipped", 3, 1.0)
    extra = write_table(tmp_path / "extra", 2, 2.0)
    alone, alone_index = load_activation_tables(shipped)
    reference, reference_index = load_activation_table(*shipped)
    assert torch.equal(alone, reference) and alone_index.equals(reference_index)
    joined, index = load_activation_tables(shipped, extra)
    assert joined[:, 0].tolist() == [1.0, 1.0, 1.0, 2.0, 2.0]
    assert index["row"].tolist() == [0, 1, 2, 3, 4]


def test_a_word_the_lm_never_saw_is_one_line_naming_file_and_line(tmp_path):
    from biosae.dataset.questions import check_extra_words
    from biosae.lm.tokenization import first_unknown_word, train_word_tokenizer

    tokenizer = train_word_tokenizer(["what is ada lovelace's employer ?", "acme corp"])
    assert first_unknown_word(tokenizer, "What is Ada Lovelace's employer?") is None
    assert first_unknown_word(tokenizer, "What is Ada Quux's employer?") == "Quux"
    row = {"person_id": "p", "question": "What is Ada Lovelace's employer?", "answer": "Acme Corp", "rule_idx": 4}
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps(row) + "\n\n" + json.dumps({**row, "answer": "Zyzzyva Corp"}) + "\n")
    check_extra_words({"qa_train": str(tmp_path / "not read")}, lambda text: first_unknown_word(tokenizer, text))
    with pytest.raises(BiosaeError) as error:
        check_extra_words({"extra_0": str(path)}, lambda text: first_unknown_word(tokenizer, text))
    assert str(error.value) == f"{path}:3: the answer's word 'Zyzzyva' is not in the LM's vocabulary"


# ------------------------------------------------------------------------------------------------
# Through Snakemake, on a copy of the tiny run


def with_extra_questions(tiny_pipeline, tmp_path, edit=None):
    """A copy of the tiny run whose config lists mine.jsonl: held-out questions of the tiny dataset."""
    run = copy_run(tiny_pipeline, tmp_path / "run")
    rows = [json.loads(line) for line in (run / layout.dataset_file("qa_test")).read_text().splitlines()]
    rows = [{k: v for k, v in row.items() if k != "split"} for row in rows if row["split"] == "ood_both"][:36]
    if edit:
        rows = edit(rows)
    questions = run / "mine.jsonl"
    questions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["evaluate"]["extra_questions"] = [str(questions)]
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return run, questions


@pytest.mark.slow
def test_new_questions_score_on_a_finished_run_and_retrain_nothing(tiny_pipeline, tmp_path):
    run, _ = with_extra_questions(tiny_pipeline, tmp_path)
    planned = planned_jobs(run)
    assert not set(planned) & (RETRAINING | SHIPPED_PASSES), planned
    assert planned == {
        "extra_activations": 1,
        "untrained_extra_activations": 1,
        "extra_lm_qa_accuracy": 1,
        "score_extra_questions": 1,
        "all": 1,
    }
    run_snakemake(run, "--cores", "2")
    # the finished run's files are untouched: every shipped cell's number stays
    for path in (layout.eval_metrics(""), layout.eval_summary("")):
        assert (run / path).read_bytes() == (tiny_pipeline / path).read_bytes(), path
    before = json.loads((tiny_pipeline / layout.eval_metrics("")).read_text())
    scores = json.loads((run / layout.extra_questions_metrics("")).read_text())
    cell = "extra:mine"
    assert scores["cells"] == [cell]
    assert list(scores["layers"]) == [layout.layer_name(layer) for layer in PROFILE]
    for number, (name, layer) in zip(PROFILE, scores["layers"].items()):
        assert layer["n_prompts"] == {cell: 36} and layer["slot_accuracy"][cell] is not None, name
        assert layer["lm_qa_accuracy"][cell]["n"] == 36
        # every method the finished run tested at that layer (the causal SAE's controls at layer 1)
        finished = json.loads((run / layout.eval_metrics(layout.run_prefix(0, number, 0, -1))).read_text())
        assert list(layer["methods"]) == list(finished["methods"]), name
        for method, result in layer["methods"].items():
            assert result["interchange"][cell]["n"] > 0, (name, method)
    # steering at the alpha the finished run's train cell picked (the train cell is not tested again)
    seed_hook = scores["layers"][layout.layer_name(-1)]
    assert seed_hook["methods"]["sae_slot"]["alpha"] == before["methods"]["sae_slot"]["alpha"]
    summary = (run / layout.extra_questions_summary("")).read_text()
    assert summary.count(f"| {cell} |") == len(PROFILE)


@pytest.mark.slow
def test_a_word_the_lm_never_saw_stops_the_extra_questions_job_with_one_line(tiny_pipeline, tmp_path):
    def unknown_word(rows):
        rows[1] = {**rows[1], "question": rows[1]["question"].replace("What", "Zyzzyva")}
        return rows

    run, questions = with_extra_questions(tiny_pipeline, tmp_path, unknown_word)
    result = run_snakemake(run, "--cores", "1", layout.extra_activation_index(""), check=False)
    assert result.returncode != 0
    line = f"biosae error: {questions}:2: the question's word 'Zyzzyva' is not in the LM's vocabulary"
    log = (run / layout.log("", "extra_activations")).read_text()
    assert [entry for entry in log.splitlines() if "biosae error" in entry][0].endswith(line)
    assert "Traceback" not in log
