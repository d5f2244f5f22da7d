"""The causally trained supervised SAE (sae_slot_causal), its controls, and RAVEL's Cause /
Isolate / D, on the shared tiny run: real training through the frozen LM, real metrics.json."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from biosae import layout
from biosae.methods.causal_variants import CONTROLS, METHOD, NO_LABELS, RANDOM_TARGETS, variant_layers
from biosae.sae.model import load_sae

pytestmark = pytest.mark.slow

PROFILE = [0, 1, -1]  # tiny_config's 2-block model: every hook point
CONTROL_LAYER = 1  # methods.sae_slot_causal.control_layer


def _metrics(run, layer: int) -> dict:
    return json.loads((run / layout.eval_metrics(layout.run_prefix(0, layer, 0, -1))).read_text())


def test_variants_train_at_every_layer_and_controls_at_one():
    assert variant_layers([METHOD, *CONTROLS], PROFILE, 1) == {METHOD: PROFILE, RANDOM_TARGETS: [1], NO_LABELS: [1]}
    # a profile without the control layer has no controls
    assert variant_layers([METHOD, RANDOM_TARGETS], [-1], 1) == {METHOD: [-1]}
    assert variant_layers(["sae_slot", "das"], PROFILE, 1) == {}


def test_causal_sae_is_fine_tuned_and_chosen_on_held_out_train_persons(tiny_pipeline):
    results = tiny_pipeline / "results"
    grid = [0.1, 1.0]  # config.yaml's methods.sae_slot_causal.lambda_interchange
    for method, layers in variant_layers([METHOD, *CONTROLS], PROFILE, CONTROL_LAYER).items():
        for layer in layers:
            directory = tiny_pipeline / layout.causal_sae_dir("", layer, method)
            selection = json.loads((directory / "selection.json").read_text())
            log = pd.read_csv(directory / "train_log.csv")
            assert sorted(float(v) for v in selection["validation_iia_by_lambda"]) == grid, (method, layer)
            assert selection["lambda_interchange"] in grid
            # the choice is the best validation IIA of the grid (held-out train-cell persons)
            assert selection["validation_iia"] == max(selection["validation_iia_by_lambda"].values())
            assert 0 <= selection["validation_iia"] <= 1 and 0 <= selection["seed_sae_validation_iia"] <= 1
            assert list(log["lambda_interchange"].unique()) == grid and log["validation_iia"].notna().all()
            assert selection["lambda_align"] == (0.0 if method == NO_LABELS else 1.0)
            # its pairs are train-cell rows only, none of them scored by the evaluation
            pairs = pd.read_csv(directory / "train_pairs.csv")
            index = pd.read_csv(results / "activations" / "index.csv")
            assert set(index["split"].to_numpy()[pairs["base_row"]]) == {"train"}
        for layer in set(PROFILE) - set(layers):
            assert not (tiny_pipeline / layout.causal_sae_dir("", layer, method)).exists(), (method, layer)


def test_the_interchange_loss_is_what_goes_down(tiny_pipeline):
    """Fine-tuned on the tiny run's files at its hook: with the sixth loss the interchange
    cross-entropy falls well below where the seed's five losses alone (lambda 0) leave it."""
    from biosae.evaluation.method_tests import causal_sample
    from biosae.lm.activations import load_activation_table
    from biosae.lm.model import load_model_dir
    from biosae.methods.das import pair_tensors
    from biosae.methods.sae_slot_causal import CausalSAEConfig, fine_tune, prepare_prompts
    from biosae.sae.inputs import training_tensors, value_candidates

    results = tiny_pipeline / "results"
    model, tokenizer = load_model_dir(results / "lm" / "final", torch.device("cpu"))
    activations, index = load_activation_table(
        results / "activations" / "layer_-1.safetensors", results / "activations" / "index.csv"
    )
    cfg = CausalSAEConfig(epochs=8, lr=1e-2, batch_size=16)
    prompts = prepare_prompts(model, tokenizer, index, causal_sample(index, "train", 24, 0), cfg, activations.shape[1])
    rows = training_tensors(activations, index, value_candidates(index))
    validation = pair_tensors(index, prompts.validation)[2]  # the source rule's answers, as training's
    seed_sae = load_sae(tiny_pipeline / layout.sae_dir("", -1))
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    logs = {
        weight: fine_tune(
            seed_sae, model, prompts, index, activations, rows, -1, weight, cfg, prompts.targets, validation
        )[1]
        for weight in (0.0, 3.0)
    }
    causal, plain = logs[3.0], logs[0.0]
    assert causal[-1]["interchange_loss"] < causal[0]["interchange_loss"] - 0.2
    assert causal[-1]["interchange_loss"] < plain[-1]["interchange_loss"] - 0.2
    assert causal[-1]["train_iia"] > plain[-1]["train_iia"]


def test_the_causal_sae_moves_while_sae_slot_stays(tiny_pipeline):
    for layer in PROFILE:
        seed = load_sae(tiny_pipeline / layout.sae_dir("", layer))
        causal = load_sae(tiny_pipeline / layout.causal_sae_dir("", layer, METHOD))
        assert not torch.equal(seed.decoder_weight, causal.decoder_weight)
        # fine-tuned from the seed's SAE: the standardization is the same
        assert torch.equal(seed.mean, causal.mean) and torch.equal(seed.std, causal.std)


def test_controls_and_ravel_scores_in_metrics(tiny_pipeline):
    cells = ["train", "ood_template", "ood_person", "ood_both", "hard_seen_person", "hard_unseen_person"]
    for layer in PROFILE:
        metrics = _metrics(tiny_pipeline, layer)
        expected = [METHOD, *CONTROLS] if layer == CONTROL_LAYER else [METHOD]
        assert [name for name in metrics["methods"] if name.startswith(METHOD)] == expected, layer
        assert metrics["methods"][METHOD]["fit"]["lambda_interchange"] in (0.1, 1.0)
        for cell in cells:
            assert metrics["interchange_pairs"][cell]["same_rule_n"] > 0
        for name, result in metrics["methods"].items():
            assert set(result["isolate"]) == set(result["disentanglement"]) == set(cells), (name, layer)
            for cell in cells:
                scores = result["disentanglement"][cell]
                assert scores["cause"] == result["interchange"][cell]["iia"]
                assert scores["isolate"] == result["isolate"][cell]["isolate"]
                for key in ("cause", "isolate", "d"):
                    assert scores[key] is None or 0 <= scores[key] <= 1, (name, cell, key)
                if scores["isolate"] is not None:
                    assert scores["d"] == pytest.approx((scores["cause"] + scores["isolate"]) / 2)
    summary = (tiny_pipeline / "results" / "eval" / "summary.md").read_text()
    assert "| Isolate | D |" in summary and METHOD in summary
    aggregate = pd.read_csv(tiny_pipeline / "results" / "aggregate" / "summary.csv")
    metrics = set(aggregate["metric"])
    assert {f"isolate:{METHOD}", f"disentanglement:{METHOD}", "disentanglement:das", f"iia:{RANDOM_TARGETS}"} <= metrics
