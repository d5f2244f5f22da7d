"""The lens read-out of the value (biosae.evaluation.value_readout): its translator, and on the
tiny run, what it reads at every layer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import biosae
from biosae import layout
from biosae.evaluation.evaluate import slot_predictions
from biosae.evaluation.value_readout import READOUTS, candidate_argmax, fit_translator, lens_predictions
from biosae.io import read_json
from biosae.sae.inputs import value_targets


def test_the_translator_recovers_an_affine_map():
    generator = torch.Generator().manual_seed(0)
    h = torch.randn(500, 12, generator=generator)
    weight, bias = torch.randn(12, 7, generator=generator), torch.randn(7, generator=generator)
    translator = fit_translator(h, h @ weight + bias)
    fresh = torch.randn(50, 12, generator=generator)
    assert torch.allclose(translator(fresh), fresh @ weight + bias, atol=1e-2)


def test_the_argmax_is_taken_among_the_gate_rules_candidates_only():
    logits = torch.tensor([[0.0, 5.0, 1.0, 2.0, 9.0], [3.0, 0.0, 1.0, 2.0, 9.0]])
    candidates = {"birth_date": [1, 2], "birth_city": [0, 3], "university": [4]}
    # token 4 has the highest logit in both rows, but is only a university candidate
    assert list(candidate_argmax(logits, candidates, np.array([0, 1]))) == [0, 0]
    assert list(candidate_argmax(logits, candidates, np.array([1, 0]))) == [1, 1]
    assert list(candidate_argmax(logits, candidates, np.array([2, 2]))) == [0, 0]


@pytest.fixture(scope="module")
def run(tiny_pipeline):
    return biosae.open_run(tiny_pipeline / "results")


def metrics_at(tiny_pipeline, run, layer: int) -> dict:
    prefix = layout.run_prefix(run.seed, layer, run.seed, run.hook_layer)
    return json.loads((tiny_pipeline / layout.eval_metrics(prefix)).read_text())


def test_at_the_last_block_the_lens_reads_every_answer_the_lm_gives(tiny_pipeline, run):
    """At hook -1 the lens is the LM's own final norm and unembedding: a row whose first answer
    token the LM's full forward pass gets right is read right among its rule's candidates, and the
    pipeline's cell accuracies are these predictions'."""
    table, index = run.activation_table(-1)
    candidates = read_json(run.path(layout.sae_file("", -1, "value_candidates.json")))
    rules = index["rule_idx"].to_numpy()
    train = (index["split"] == "train").to_numpy()
    predicted = lens_predictions(run.model, table, None, train, candidates, {"lens_by_rule": rules})
    right = predicted["lens_by_rule"] == value_targets(index, candidates)
    lm_right = index["lm_first_token_correct"].to_numpy().astype(bool)
    assert lm_right.any() and right[lm_right].all()
    metrics = metrics_at(tiny_pipeline, run, -1)
    for cell in metrics["cells"]:
        mask = (index["split"] == cell).to_numpy()
        assert metrics["value_accuracy"][cell]["lens_by_rule"] == pytest.approx(right[mask].mean(), abs=1e-12), cell


def test_a_lower_layers_translator_is_fitted_on_train_rows_only(run):
    """The last block's rows of the held-out cells never reach the translator: replacing them
    changes no prediction."""
    table, index = run.activation_table(1)
    last, _ = run.activation_table(-1)
    candidates = read_json(run.path(layout.sae_file("", 1, "value_candidates.json")))
    train = (index["split"] == "train").to_numpy()
    gates = {"lens_by_slot": slot_predictions(run.sae(1), table)}
    scrambled = last.clone()
    scrambled[torch.from_numpy(~train)] = torch.randn(int((~train).sum()), last.shape[1])
    first = lens_predictions(run.model, table, last, train, candidates, gates)
    second = lens_predictions(run.model, table, scrambled, train, candidates, gates)
    assert np.array_equal(first["lens_by_slot"], second["lens_by_slot"])


def test_every_layer_reports_each_read_out_on_seen_and_unseen_persons(tiny_pipeline, run):
    summary = (tiny_pipeline / layout.eval_summary("")).read_text()
    assert "## Value read-outs (first answer token)" in summary
    profile = summary.split("Value read-outs per layer", 1)[1].split("\n\n")[1].splitlines()
    assert profile[0].startswith("| layer | value heads | lens, gated by the slot") and len(profile) == 2 + len(
        run.layers
    )
    for layer in run.layers:
        metrics = metrics_at(tiny_pipeline, run, layer)
        readouts, value = metrics["value_readouts"], metrics["value_accuracy"]
        assert set(readouts) == set(READOUTS), layer
        for readout, key in zip(READOUTS, ("sae", "lens_by_slot", "lens_by_rule")):
            assert readouts[readout]["seen"] == value["ood_template"][key], (layer, readout)
            assert readouts[readout]["unseen"] == value["ood_person"][key], (layer, readout)
            assert readouts[readout]["gap"] == pytest.approx(value["ood_template"][key] - value["ood_person"][key])
