"""The Python API (biosae.api) on the tiny run: its names work, and its slot reads, activations and
edited answers are the pipeline's (metrics.json, the activation files, the edited passes)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import biosae
from biosae import layout
from biosae.dataset.text import format_answer, format_prompt
from biosae.errors import BiosaeError
from biosae.evaluation import metrics as M
from biosae.evaluation.edits import read_out, steering_edit
from biosae.evaluation.evaluate import slot_predictions
from biosae.evaluation.method_tests import causal_sample
from biosae.lm.prompt_cache import PromptCache, edited_predictions
from biosae.lm.tokenization import encode_qa_batch
from biosae.methods.pairs import person_answer_tokens
from biosae.rules import RULES
from tests.conftest import REPO, tiny_config

DOCS_PAGE = REPO / "docs" / "python-api.md"


# --------------------------------------------------------------------------------------------------
# Without a run


def finished_run_skeleton(results: Path) -> Path:
    """The files open_run checks for, empty: enough to open, nothing to load."""
    (results / "lm" / "final").mkdir(parents=True)
    (results / "activations").mkdir()
    (results / "activations" / "index.csv").write_text("row\n")
    (results / "eval").mkdir()
    (results / "eval" / "metrics.json").write_text(json.dumps({"layer": -1}))
    for layer in (-1, 1, 0):
        (results / "sae" / f"layer_{layer}").mkdir(parents=True)
        (results / "sae" / f"layer_{layer}" / "cfg.json").write_text(json.dumps({"seed": 3}))
    return results


def test_import_biosae_and_opening_a_run_load_no_torch(tmp_path):
    results = finished_run_skeleton(tmp_path / "results")
    code = (
        "import biosae, sys; print('torch' in sys.modules); "
        f"run = biosae.open_run({str(results)!r}); print(run.layers, run.hook_layer, run.seed); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.splitlines() == ["False", "[0, 1, -1] -1 3", "False"]


@pytest.mark.parametrize(
    "missing, named",
    [
        ("lm/final", "lm/final/"),
        ("activations/index.csv", "activations/index.csv"),
        ("eval/metrics.json", "eval/metrics.json"),
        ("sae", "sae/layer_<L>/"),
    ],
)
def test_a_directory_that_is_not_a_finished_run_fails_with_one_line(tmp_path, missing, named):
    import shutil

    results = finished_run_skeleton(tmp_path / "results")
    target = results / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(BiosaeError) as error:
        biosae.open_run(results)
    message = str(error.value)
    assert message == f"{results}: not a finished biosae run: {results}/{named} is missing (run ./run.sh first)"
    assert "\n" not in message


def test_a_missing_directory_names_the_lm_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BiosaeError) as error:
        biosae.open_run("results")
    assert str(error.value) == "results: not a finished biosae run: results/lm/final/ is missing (run ./run.sh first)"


# --------------------------------------------------------------------------------------------------
# On the tiny run


@pytest.fixture(scope="module")
def run(tiny_pipeline):
    return biosae.open_run(tiny_pipeline / "results")


@pytest.fixture(scope="module")
def seed():
    return tiny_config()["seed"]


def metrics_of(tiny_pipeline: Path, run, layer: int) -> dict:
    prefix = layout.run_prefix(run.seed, layer, run.seed, run.hook_layer)
    return json.loads((tiny_pipeline / layout.eval_metrics(prefix)).read_text())


def first_tokens(run, answers: list[str]) -> np.ndarray:
    """The first token of each answer string, encoded as the pipeline encodes answers (end-of-text
    for an empty answer)."""
    _, answer_ids = encode_qa_batch(run.tokenizer, ["?"] * len(answers), [format_answer(a) for a in answers])
    return np.array([ids[0] for ids in answer_ids])


def test_the_contract(run):
    assert run.layers == [0, 1, -1]
    assert run.hook_layer == -1
    questions = run.questions("train")[:5]
    answers = run.answer(questions)
    assert len(answers) == 5 and all(isinstance(a, str) for a in answers)
    slots = run.read_slots(questions, layer=1)
    assert len(slots) == 5 and set(slots) <= set(RULES)
    swapped = run.swap_answer(questions, "employer", layer=1, alpha=2.0)
    assert len(swapped) == 5 and all(isinstance(a, str) for a in swapped)
    assert run.read_slots(questions) == run.read_slots(questions, layer=-1)  # default: the seed's hook


def test_bad_arguments_are_one_line_errors(run):
    questions = run.questions("train")[:2]
    with pytest.raises(BiosaeError, match=r"^layer 7: this run's layers are 0, 1, -1$"):
        run.read_slots(questions, layer=7)
    with pytest.raises(BiosaeError, match=r"^rule 'salary': not one of birth_date"):
        run.swap_answer(questions, "salary", layer=1)
    with pytest.raises(BiosaeError, match=r"^method 'lasso': unknown \(known: sae_slot"):
        run.method("lasso", layer=1)
    with pytest.raises(BiosaeError, match=r"^questions: give a list of questions"):
        run.answer(questions[0])
    with pytest.raises(BiosaeError, match=r"^question 1 \('What is the employer of Zorglub\?'\): 'zorglub' is not"):
        run.answer([questions[0], "What is the employer of Zorglub?"])
    with pytest.raises(BiosaeError, match=r"^method random does not steer"):
        run.method("random", layer=1).steer(questions, "major")


def test_answers_are_the_lm_answers_the_pipeline_scores(run):
    """Greedy answers: their first token is the activation pass's verdict, and on the rows the LM
    answers exactly (lm/qa_accuracy.json's exact match) they are the reference answer's words."""
    index = run.qa_rows("train")
    answers = run.answer(list(index["question"]))
    assert np.array_equal(first_tokens(run, answers), index["lm_predicted_first_token"].to_numpy())
    references = [" ".join(run.tokenizer.tokenize(format_answer(a))) for a in index["answer"]]
    exact = np.array([a == r for a, r in zip(answers, references)])
    accuracy = json.loads((run.path(layout.lm_qa_accuracy(""))).read_text())["train"]["exact"]
    assert exact.mean() == pytest.approx(accuracy, abs=1e-9)


def test_slot_reads_and_activations_are_the_evaluations(tiny_pipeline, run):
    """On every row of the run, at every layer: the API's activation pass gives the activation
    file's rows, its slot reads the SAE's argmax on them, and their slot accuracy per cell is
    metrics.json's."""
    index = run.qa_rows()
    questions = list(index["question"])
    for layer in run.layers:
        table, table_index = run.activation_table(layer)
        assert list(table_index["question"]) == questions
        h = run.activations(questions, layer)
        # The same pass in another process: on some hosts a job's matmuls sum in another order
        # than a later process's on the same inputs (differences up to 3.4e-5 on values up to
        # ~2, seen on a CI host: the rerun job itself gave the later process's rows)
        assert torch.allclose(h, table, atol=1e-4, rtol=1e-4), layer
        slots = run.read_slots(questions, layer)
        assert slots == [RULES[s] for s in slot_predictions(run.sae(layer), table)], layer
        metrics = metrics_of(tiny_pipeline, run, layer)
        read = np.array([RULES.index(s) for s in slots])
        rules = index["rule_idx"].to_numpy()
        for cell in metrics["cells"]:
            mask = (index["split"] == cell).to_numpy()
            assert M.slot_accuracy(rules[mask], read[mask]) == metrics["slot_accuracy"][cell], (layer, cell)
            assert M.confusion_matrix(rules[mask], read[mask]) == metrics["confusion"][cell], (layer, cell)


def test_swapped_answers_give_metrics_json_swap(tiny_pipeline, run, seed):
    """The slot swap of every cell's causal sample, moved from the asked rule as the pipeline's
    tests move it: success and clean rates equal metrics.json's ``swap`` at every alpha."""
    index = run.qa_rows()
    answers = person_answer_tokens(index)
    max_prompts = tiny_config()["evaluate"]["max_prompts_per_cell"]
    for layer in (run.hook_layer, 1):
        metrics = metrics_of(tiny_pipeline, run, layer)
        for cell in metrics["cells"]:
            rows = causal_sample(index, cell, max_prompts, seed)
            sample = index.iloc[rows]
            questions, rules = list(sample["question"]), sample["rule_idx"].to_numpy()
            person_tokens = np.array([[-1 if t is None else t for t in answers[p]] for p in sample["person_id"]])
            clean = first_tokens(run, run.answer(questions))
            for key in metrics["swap"]:
                alpha = float(key.split("=")[1])
                hits = np.full((len(RULES), len(rows)), np.nan)
                clean_hits = np.full((len(RULES), len(rows)), np.nan)
                for target, rule in enumerate(RULES):
                    swapped = first_tokens(run, run.swap_answer(questions, rule, layer, alpha, from_rules=rules))
                    off = rules != target
                    hits[target, off] = (swapped == person_tokens[:, target])[off]
                    clean_hits[target, off] = (clean == person_tokens[:, target])[off]
                assert M.swap_matrix(rules, hits, clean_hits) == metrics["swap"][key][cell], (layer, cell, key)


def test_swap_answer_first_tokens_are_the_pipelines_edited_pass(run):
    """swap_answer moves each question from its read slot: its first answer tokens are the
    pipeline's edited pass (biosae.lm.prompt_cache) with sae_slot's steering edit from those slots."""
    questions = run.questions("ood_both") + run.questions("train")[::3]
    layer = 1
    read = torch.tensor([RULES.index(s) for s in run.read_slots(questions, layer)])
    method = run.method("sae_slot", layer).method
    cache = PromptCache(run.model, run.prompt_ids(questions))
    unused = np.zeros(len(questions), dtype=np.int64)
    for target, rule in enumerate(RULES):
        for alpha in (1.0, 2.0):
            predicted, _ = edited_predictions(
                cache, unused, layer, lambda rows: steering_edit(method, read[rows], target, alpha)
            )
            api = first_tokens(run, run.swap_answer(questions, rule, layer=layer, alpha=alpha))
            assert np.array_equal(api, predicted), (rule, alpha)


def test_every_method_is_reachable_and_fitted_as_the_pipeline_fits_it(tiny_pipeline, run):
    """run.method(name, layer): its read-out's detection per cell and its rank are metrics.json's;
    its edits give answers."""
    layer = 1
    metrics = metrics_of(tiny_pipeline, run, layer)
    assert run.metrics(layer) == metrics
    assert run.metrics() == json.loads((tiny_pipeline / layout.eval_metrics("")).read_text())
    index = run.qa_rows()
    questions = list(index["question"])
    rules = index["rule_idx"].to_numpy()
    for name, result in metrics["methods"].items():
        method = run.method(name, layer=layer)
        assert method.method.rank == result["rank"], name
        read = method.read(questions)
        for cell in metrics["cells"]:
            mask = (index["split"] == cell).to_numpy()
            detection = (
                None if read is None else M.slot_accuracy(rules[mask], np.array([RULES.index(r) for r in read])[mask])
            )
            assert detection == result["detection"][cell], (name, cell)
    diffmean = run.method("diffmean", layer=1)
    assert run.method("diffmean", layer=1) is diffmean  # fitted once
    sample = run.questions("ood_person")[:6]
    sources = run.questions("train")[:6]
    for answers in (
        diffmean.ablate(sample, "university"),
        diffmean.steer(sample, "major", alpha=1.0),
        diffmean.steer(sample, "major", alpha=1.0, from_rules=["birth_date"] * 6),
        diffmean.interchange(sample, sources),
        run.method("das", layer=1).interchange(sample, sources),
    ):
        assert len(answers) == 6 and all(isinstance(a, str) for a in answers)
    table, _ = run.activation_table(layer)
    assert diffmean.read(sample) == [RULES[r] for r in read_out(diffmean.method, run.activations(sample, layer))]


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)


def test_the_docs_example_runs_on_the_tiny_run(tiny_pipeline, capsys):
    blocks = python_blocks(DOCS_PAGE)
    assert len(blocks) >= 5 and 'biosae.open_run("results")' in blocks[0]
    namespace: dict = {}
    for block in blocks:
        exec(block.replace('"results"', repr(str(tiny_pipeline / "results"))), namespace)  # noqa: S102
    printed = capsys.readouterr().out
    assert "[0, 1, -1]" in printed
    assert len(namespace["questions"]) == 5


def test_prompts_are_formatted_as_in_training(run):
    question = run.questions("train")[0]
    assert run.prompt_ids([question]) == [run.tokenizer(format_prompt(question), add_special_tokens=False)["input_ids"]]
