"""Localization methods: each edit does what it says, DAS learns, pairs never leak."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biosae.dataset.build import DatasetConfig, build_dataset
from biosae.evaluation.edits import ablation_edit, interchange_edit, steering_edit
from biosae.evaluation.method_tests import causal_sample
from biosae.lm.activations import answer_position_pass
from biosae.lm.model import build_scratch_model
from biosae.lm.prompt_cache import PromptCache, edited_predictions
from biosae.lm.qa_accuracy import encode_rows
from biosae.lm.tokenization import train_word_tokenizer
from biosae.methods.base import FitInputs
from biosae.methods.causal_variants import VARIANTS
from biosae.methods.das import DASConfig, interchange_accuracy, prepare_das_prompts, split_training_pairs, train_das
from biosae.methods.diffmean import fit_diffmean
from biosae.methods.pairs import evaluation_pairs
from biosae.methods.registry import build_methods, method_names
from biosae.methods.unsupervised_sae import auroc_by_latent
from biosae.sae.model import SAEConfig, SupervisedSAE
from biosae.sae.topk import TopKSAEConfig, train_topk_sae, train_topk_sae_layers
from tests.conftest import DATA

METHOD_NAMES = method_names()


def test_diffmean_directions_are_the_analytic_mean_differences():
    rng = np.random.default_rng(0)
    rules = np.repeat(np.arange(6), 5)
    h = torch.from_numpy(rng.normal(size=(30, 8))).float()
    method = fit_diffmean(FitInputs(h, rules))
    means = np.stack([h.numpy()[rules == r].mean(axis=0) for r in range(6)])
    for r in range(6):
        expected = means[r] - np.delete(means, r, axis=0).mean(axis=0)
        np.testing.assert_allclose(method.directions[r].numpy(), expected, atol=1e-5)
    # six directions summing to zero span five dimensions
    assert method.rank == 5
    # steering A -> B adds exactly alpha * (mu_B - mu_A): the span holds every class-mean difference
    edit = steering_edit(method, torch.tensor([0, 3]), 2, 2.0)
    moved = edit(h[:2])
    np.testing.assert_allclose((moved - h[:2]).numpy(), 2.0 * (means[2] - means[[0, 3]]), atol=1e-4)


def test_diffmean_ablation_removes_only_its_direction():
    rng = np.random.default_rng(1)
    rules = np.repeat(np.arange(6), 4)
    h = torch.from_numpy(rng.normal(size=(24, 6))).float()
    method = fit_diffmean(FitInputs(h, rules))
    edited = ablation_edit(method, 3)(h)
    unit = method.directions[3] / method.directions[3].norm()
    assert torch.allclose(edited @ unit, torch.zeros(24), atol=1e-5)
    assert torch.allclose(edited - h, -(h @ unit)[:, None] * unit, atol=1e-5)


@pytest.fixture(scope="module")
def small_setup():
    """A small random GPT-2 and a few prompts of several lengths, with hook-layer activations."""
    _, _, qa, corpus = build_dataset(
        DatasetConfig(
            num_persons=12,
            biographies_per_person=2,
            entities_dir=str(DATA / "entities"),
            templates_dir=str(DATA / "templates"),
            qa_templates_dir=str(DATA / "qa_templates"),
        )
    )
    tokenizer = train_word_tokenizer([d["text"] for d in corpus])
    model = build_scratch_model(tokenizer, dict(n_layer=2, n_embd=32, n_head=2, block_size=64), seed=0).eval()
    rows = qa["qa_test"][::3][:48]
    encoded = encode_rows(tokenizer, rows)
    first = np.array([a[0] for a in encoded.answer_ids])
    h, _ = answer_position_pass(model, encoded.prompt_ids, tokenizer.pad_token_id, layer=1)
    rules = np.array([r["rule_idx"] for r in rows])
    return model, encoded.prompt_ids, first, h, rules


def test_interchange_with_the_base_as_source_changes_no_answer_for_every_method(small_setup):
    model, prompts, first, h, rules = small_setup
    torch.manual_seed(0)
    sae = SupervisedSAE(SAEConfig(d_model=32, value_vocab_sizes=[3] * 6)).eval()
    unsupervised, _ = train_topk_sae(h, TopKSAEConfig(d_model=32, n_latents=24, k=4, epochs=3, batch_size=16))
    basis = torch.linalg.qr(torch.randn(32, 6))[0].T
    methods = build_methods(
        METHOD_NAMES,
        FitInputs(
            h,
            rules,
            seed=0,
            sae=sae,
            das_basis=basis,
            unsupervised_sae=unsupervised,
            causal_saes=dict.fromkeys(VARIANTS, sae),
        ),
    )
    assert list(methods) == list(METHOD_NAMES)
    cache = PromptCache(model, prompts, batch_size=16)
    clean, clean_logprob = edited_predictions(cache, first, 1)
    for name, method in methods.items():
        predicted, logprob = edited_predictions(cache, first, 1, lambda idx, m=method: interchange_edit(m, h[idx]))
        assert np.array_equal(predicted, clean), name
        np.testing.assert_allclose(logprob, clean_logprob, atol=1e-4, err_msg=name)
        # and an interchange from other prompts does change the activations it edits
        other = h[torch.arange(len(h)).roll(1)]
        assert not torch.allclose(interchange_edit(method, other)(h), h, atol=1e-6), name


def test_auroc_matches_the_pairwise_definition():
    rng = np.random.default_rng(2)
    scores = torch.from_numpy(np.round(rng.normal(size=(40, 3)), 1))  # rounded: ties included
    positive = rng.random(40) < 0.3
    pos, neg = scores.numpy()[positive], scores.numpy()[~positive]
    for column in range(3):
        pairs = (pos[:, column][:, None] > neg[:, column][None, :]) + 0.5 * (
            pos[:, column][:, None] == neg[:, column][None, :]
        )
        assert auroc_by_latent(scores, positive)[column] == pytest.approx(pairs.mean())


def test_topk_sae_learns_a_low_dimensional_table():
    rng = np.random.default_rng(3)
    h = torch.from_numpy(rng.normal(size=(400, 4)) @ rng.normal(size=(4, 16))).float()
    model, history = train_topk_sae(h, TopKSAEConfig(d_model=16, n_latents=32, k=8, epochs=60, batch_size=64, lr=3e-3))
    assert history[0]["explained_variance"] < history[-1]["explained_variance"]
    assert history[-1]["explained_variance"] > 0.8
    assert int((model.encode(h) > 0).sum(dim=1).max()) <= 8


def test_topk_saes_of_several_layers_trained_together_equal_each_trained_alone():
    # the train_unsupervised_sae job trains every profile layer's TopK SAE at once
    rng = np.random.default_rng(4)
    layers = [
        torch.from_numpy(rng.normal(size=(150, 3)) @ rng.normal(size=(3, 12)) * scale).float()
        for scale in (0.5, 1.0, 3.0)
    ]
    cfg = TopKSAEConfig(d_model=12, n_latents=20, k=4, epochs=12, batch_size=32, lr=3e-3, seed=5)
    together = train_topk_sae_layers(torch.stack(layers), cfg)
    for h, (model, history) in zip(layers, together):
        alone, alone_history = train_topk_sae(h, cfg)
        assert history == alone_history
        for name, tensor in alone.state_dict().items():
            torch.testing.assert_close(model.state_dict()[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(model.encode(h), alone.encode(h), rtol=1e-4, atol=1e-5)
    # the layers differ, so the models do too: each slice learned its own layer
    assert not torch.allclose(together[0][0].decoder_weight, together[2][0].decoder_weight)


def _tiny_run(tiny_pipeline):
    from biosae.lm.activations import load_activation_table
    from biosae.lm.model import load_model_dir

    model, tokenizer = load_model_dir(tiny_pipeline / "results" / "lm" / "final", torch.device("cpu"))
    activations, index = load_activation_table(
        tiny_pipeline / "results" / "activations" / "layer_-1.safetensors",
        tiny_pipeline / "results" / "activations" / "index.csv",
    )
    return model, tokenizer, activations, index


def test_pairs_never_share_a_person_and_das_never_trains_on_a_scored_pair(tiny_pipeline):
    _, _, activations, index = _tiny_run(tiny_pipeline)
    persons, rules = index["person_id"].to_numpy(), index["rule_idx"].to_numpy()
    cfg = DASConfig(d_model=activations.shape[1])
    scored_bases = causal_sample(index, "train", 24, 0)
    training, validation = split_training_pairs(index, scored_bases, cfg)
    scored = evaluation_pairs(index, "train", scored_bases, 0)
    for pairs in (
        training,
        validation,
        scored,
        *(evaluation_pairs(index, c, causal_sample(index, c, 24, 0), 0) for c in ("ood_both", "hard_unseen_person")),
    ):
        ok = pairs.scored  # a base whose cell (tiny: 2 validation persons) lacks a source stays unscored
        assert ok.mean() >= 0.75
        assert not (persons[pairs.base_rows[ok]] == persons[pairs.source_rows[ok]]).any()
        assert not (rules[pairs.base_rows[ok]] == rules[pairs.source_rows[ok]]).any()
    assert not (training.as_set() | validation.as_set()) & scored.as_set()
    assert not set(training.base_rows) & set(scored_bases)
    # rule-stratified: every ordered pair of rules (A, B != A) appears among the scored pairs
    kinds = {(rules[b], rules[s]) for b, s in scored.as_set()}
    assert len(kinds) >= 20
    # seeded: the same pairs again
    again = evaluation_pairs(index, "train", scored_bases, 0)
    assert np.array_equal(again.source_rows, scored.source_rows)


def test_das_learns_an_orthonormal_subspace_that_beats_random(tiny_pipeline):
    model, tokenizer, activations, index = _tiny_run(tiny_pipeline)
    cfg = DASConfig(d_model=activations.shape[1], rank=8, epochs=12, lr=1e-2, layer=-1)
    subspace, history, training, _ = train_das(
        model, tokenizer, index, activations, cfg, causal_sample(index, "train", 24, 0)
    )
    assert history[-1]["loss"] < history[0]["loss"]
    basis = subspace.basis().detach()
    assert torch.allclose(basis @ basis.T, torch.eye(8), atol=1e-5)
    assert all(p.requires_grad for p in model.parameters())  # the LM is handed back as it came

    def subspace_edit(b):
        return lambda source_h: lambda h: h + ((source_h - h) @ b.T) @ b

    learned = interchange_accuracy(model, tokenizer, index, activations, -1, training, subspace_edit(basis))
    random_basis = torch.linalg.qr(torch.randn(activations.shape[1], 8, generator=torch.Generator().manual_seed(0)))[
        0
    ].T
    control = interchange_accuracy(model, tokenizer, index, activations, -1, training, subspace_edit(random_basis))
    assert learned > control + 0.1, (learned, control)


def test_das_of_a_layer_is_the_same_with_prompts_another_layer_built(tiny_pipeline):
    # the train_das job builds the pairs' prompt caches once and trains every profile layer on them
    from biosae.lm.activations import load_activation_table

    model, tokenizer, _, index = _tiny_run(tiny_pipeline)
    scored = causal_sample(index, "train", 24, 0)
    activations_dir = tiny_pipeline / "results" / "activations"
    shared = None
    for layer in (0, -1):
        activations, _ = load_activation_table(
            activations_dir / f"layer_{layer}.safetensors", activations_dir / "index.csv"
        )
        cfg = DASConfig(d_model=activations.shape[1], rank=6, epochs=3, lr=1e-2, layer=layer)
        shared = shared or prepare_das_prompts(model, tokenizer, index, scored, cfg)
        subspace, history, training, validation = train_das(
            model, tokenizer, index, activations, cfg, scored, prompts=shared
        )
        fresh, fresh_history, fresh_training, _ = train_das(model, tokenizer, index, activations, cfg, scored)
        assert history == fresh_history
        assert history[-1]["validation_iia"] is not None
        torch.testing.assert_close(subspace.basis(), fresh.basis())
        assert training.as_set() == fresh_training.as_set()
        assert not training.as_set() & validation.as_set()
    with pytest.raises(ValueError, match="pair settings"):  # prompts of other pairs are refused
        train_das(
            model,
            tokenizer,
            index,
            activations,
            DASConfig(d_model=activations.shape[1], seed=1),
            scored,
            prompts=shared,
        )


def _method_tests_at(tiny_pipeline, samples, layer: int, model, tokenizer):
    """evaluate_methods at ``layer`` of the tiny run, with its trained DAS and TopK SAE, on ``samples``
    (None: built afresh)."""
    from biosae.evaluation.evaluate import answered_rules, ordered_cells
    from biosae.evaluation.method_tests import cell_samples, evaluate_methods, load_trained_methods
    from biosae.lm.activations import load_activation_table

    results = tiny_pipeline / "results"
    activations, index = load_activation_table(
        results / "activations" / f"layer_{layer}.safetensors", results / "activations" / "index.csv"
    )
    samples = samples or cell_samples(model, tokenizer, index, ordered_cells(index), 24, 0)
    trained, fit = load_trained_methods(
        results / "methods" / "das" / f"layer_{layer}", results / "methods" / "sae_unsupervised" / f"layer_{layer}"
    )
    tests = evaluate_methods(
        samples,
        layer,
        activations,
        index,
        METHOD_NAMES,
        alphas=[1.0, 2.0],
        seed=0,
        answered_rule=answered_rules(index),
        fit=fit,
        **trained,
    )
    return samples, tests


def test_method_tests_of_a_layer_are_the_same_with_samples_another_layer_used(tiny_pipeline):
    # the evaluate_methods job builds each cell's sample and prompt cache once and tests every
    # profile layer on them: no edited pass may leave anything behind in the cache
    import json

    model, tokenizer, _, _ = _tiny_run(tiny_pipeline)
    shared, _ = _method_tests_at(tiny_pipeline, None, 0, model, tokenizer)
    _, tests = _method_tests_at(tiny_pipeline, shared, -1, model, tokenizer)
    _, fresh = _method_tests_at(tiny_pipeline, None, -1, model, tokenizer)
    assert json.loads(json.dumps(tests)) == tests == fresh  # JSON as the job writes it
    assert list(tests["methods"]) == [name for name in METHOD_NAMES if name not in ("sae_slot", *VARIANTS)]
    assert tests["layer"] == -1 and set(tests["random_direction"]) == set(tests["interchange_pairs"])
    assert (
        tests["methods"]["das"]["fit"]["rank"]
        == json.loads((tiny_pipeline / "results" / "methods" / "das" / "layer_-1" / "cfg.json").read_text())["rank"]
    )


def test_evaluate_joins_the_method_tests_of_its_own_layer_only(tiny_pipeline):
    """metrics.json holds the evaluate_methods job's numbers for every method but the SAE (the
    real run's files), and evaluate refuses the tests of another layer or without a listed method."""
    import json

    from biosae.errors import BiosaeError
    from biosae.evaluation.evaluate import evaluate, load_evaluation_inputs

    results = tiny_pipeline / "results"
    metrics = json.loads((results / "eval" / "metrics.json").read_text())
    tests = json.loads((results / "methods" / "tests" / "layer_-1.json").read_text())
    for name in METHOD_NAMES[1:]:
        if name not in VARIANTS:  # fine-tuned from the SAE: tested in evaluate
            assert metrics["methods"][name] == tests["methods"][name], name
    assert metrics["ablation"]["random_direction"] == tests["random_direction"]
    assert metrics["interchange_pairs"] == tests["interchange_pairs"]
    assert metrics["methods"]["sae_slot"]["ablation"] == metrics["ablation"]["slot"]

    def inputs(method_tests, methods=METHOD_NAMES):
        loaded = load_evaluation_inputs(
            model_dir=results / "lm" / "final",
            activations=results / "activations" / "layer_-1.safetensors",
            index=results / "activations" / "index.csv",
            sae_dir=results / "sae" / "layer_-1",
            candidates=results / "sae" / "layer_-1" / "value_candidates.json",
            untrained_activations=results / "baselines" / "untrained_lm" / "activations" / "layer_-1.safetensors",
            untrained_index=results / "baselines" / "untrained_lm" / "activations" / "index.csv",
            untrained_sae_dir=results / "baselines" / "untrained_lm" / "sae" / "layer_-1",
            qa_accuracy=results / "lm" / "qa_accuracy.json",
            layer=-1,
            methods=methods,
        )
        loaded.method_tests = method_tests
        return loaded

    with pytest.raises(BiosaeError, match="the method tests are of layer 0, this evaluation of layer -1"):
        evaluate(inputs(json.loads((results / "methods" / "tests" / "layer_0.json").read_text())), 24, [1.0, 2.0], 0)
    without_das = {**tests, "methods": {k: v for k, v in tests["methods"].items() if k != "das"}}
    with pytest.raises(BiosaeError, match="the method tests of layer -1 hold no 'das'"):
        evaluate(inputs(without_das), 24, [1.0, 2.0], 0)
    # ... and a run that compares fewer methods reads only those
    assert list(evaluate(inputs(without_das, ("sae_slot", "probe")), 24, [1.0, 2.0], 0)["methods"]) == [
        "sae_slot",
        "probe",
    ]
