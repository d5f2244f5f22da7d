"""Interventions: the cached last-token passes equal full forward passes, edits do what they say."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biosae.dataset.build import DatasetConfig, build_dataset
from biosae.evaluation.edits import ablation_edit, project_out, slot_direction, steering_edit
from biosae.lm.activations import answer_position_pass
from biosae.lm.model import build_scratch_model
from biosae.lm.prompt_cache import PromptCache, edited_predictions
from biosae.lm.qa_accuracy import encode_rows
from biosae.lm.tokenization import train_word_tokenizer
from biosae.methods.random_control import random_directions
from biosae.methods.sae_slot import SaeSlotMethod
from biosae.sae.model import SAEConfig, SupervisedSAE
from tests.conftest import DATA


def slot_ablation(sae, slot: int):
    """The supervised SAE's ablation of ``slot``, as the evaluation derives it."""
    return ablation_edit(SaeSlotMethod(sae), slot)


def slot_swap(sae, source_slots, target_slot: int, alpha: float):
    """The supervised SAE's steering (slot swap), as the evaluation derives it."""
    return steering_edit(SaeSlotMethod(sae), source_slots, target_slot, alpha)


@pytest.fixture(scope="module")
def setup():
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
    rows = qa["qa_test"][::5][:40]  # several templates: prompts of different lengths
    encoded = encode_rows(tokenizer, rows)
    torch.manual_seed(0)
    sae = SupervisedSAE(SAEConfig(d_model=32, value_vocab_sizes=[3] * 6)).eval()
    rules = torch.tensor([r["rule_idx"] for r in rows])
    first = np.array([a[0] for a in encoded.answer_ids])
    return model, tokenizer, encoded.prompt_ids, first, sae, rules


@pytest.fixture(scope="module")
def llama_setup(setup):
    """The same prompts through a tiny Llama: an architecture without the GPT-2 resume path, so
    PromptCache takes its generic path (a whole-model pass through Hugging Face's cache)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tokenizer, prompts, first, sae, rules = setup
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=64,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).eval()
    return model, tokenizer, prompts, first, sae, rules


@pytest.fixture(scope="module")
def relu_gpt2_setup(setup):
    """A GPT-2 whose MLP activation is not the tanh GELU: the resumed tail must use the model's own
    activation module there, not the fused tanh-GELU kernel it uses for GPT-2's default."""
    from transformers import GPT2Config, GPT2LMHeadModel

    _, tokenizer, prompts, first, sae, rules = setup
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=64,
            n_embd=32,
            n_layer=2,
            n_head=2,
            activation_function="relu",
            pad_token_id=tokenizer.pad_token_id,
        )
    ).eval()
    return model, tokenizer, prompts, first, sae, rules


def full_pass(model, tokenizer, prompts, layer, edit_for_rows):
    """Reference: one full forward pass over all prompts (right-padded), edit at the answer position."""
    index = np.arange(len(prompts))
    edit = edit_for_rows(index) if edit_for_rows else None
    _, logprobs = answer_position_pass(model, prompts, tokenizer.pad_token_id, layer, edit=edit, capture=False)
    return logprobs


@pytest.mark.parametrize("family", ["gpt2", "gpt2_relu", "llama"])
@pytest.mark.parametrize("layer", [0, 1, -1])
def test_cached_passes_equal_full_forward(setup, llama_setup, relu_gpt2_setup, family, layer):
    from biosae.lm.last_token import _tanh_gelu

    model, tokenizer, prompts, first, sae, rules = {"gpt2": setup, "gpt2_relu": relu_gpt2_setup, "llama": llama_setup}[
        family
    ]
    assert len({len(p) for p in prompts}) > 1
    cache = PromptCache(model, prompts, batch_size=7)
    assert (cache.tail is not None) == family.startswith("gpt2")  # which path this case checks
    if cache.tail is not None:  # GPT-2's gelu_new runs as torch's fused kernel, anything else as itself
        assert all((act is _tanh_gelu) == (family == "gpt2") for act in cache.tail.activations)
    edits = {
        "clean": None,
        "slot": lambda idx: slot_ablation(sae, 2),
        "direction": lambda idx: project_out(slot_direction(sae, 4)),
        "swap": lambda idx: slot_swap(sae, rules[idx], 1, 2.0),
    }
    for name, edit_for_rows in edits.items():
        reference = full_pass(model, tokenizer, prompts, layer, edit_for_rows)
        for index, logprobs in cache.last_token_logprobs(layer, edit_for_rows):
            torch.testing.assert_close(logprobs, reference[index], atol=1e-4, rtol=1e-4, msg=f"{name} layer {layer}")
        # what the causal tests read: the top token and the correct token's log-prob
        predicted, answer_logprob = edited_predictions(cache, first, layer, edit_for_rows)
        assert (predicted == reference.argmax(-1).numpy()).all(), f"{name} layer {layer}"
        np.testing.assert_allclose(
            answer_logprob, reference[np.arange(len(first)), first].numpy(), atol=1e-4, rtol=1e-4
        )
    # The cache is restored after every pass: a second clean pass is unchanged.
    predicted_a, lp_a = edited_predictions(cache, first, layer)
    predicted_b, lp_b = edited_predictions(cache, first, layer)
    assert (predicted_a == predicted_b).all() and np.allclose(lp_a, lp_b)


def test_identity_slot_edit_leaves_predictions_unchanged(setup):
    model, _, prompts, first, sae, _ = setup
    cache = PromptCache(model, prompts)
    clean = edited_predictions(cache, first, -1)
    same = edited_predictions(cache, first, -1, lambda idx: lambda h: sae(h, z_edit=lambda z: z, error_term=True))
    assert (clean[0] == same[0]).all()
    np.testing.assert_allclose(clean[1], same[1], atol=1e-4)


def test_slot_ablation_moves_h_by_the_decoder_difference(setup):
    _, _, _, _, sae, _ = setup
    h = torch.randn(5, 32)
    z = sae.encode(h)
    edited = slot_ablation(sae, 3)(h)
    z_edit = z.clone()
    z_edit[:, 3] = 0
    torch.testing.assert_close(edited - h, sae.decode(z_edit) - sae.decode(z), atol=1e-5, rtol=1e-5)


def test_direction_ablation_removes_the_component():
    direction = random_directions(16, 1, seed=3)[0]
    h = torch.randn(8, 16)
    edited = project_out(direction)(h)
    torch.testing.assert_close(edited @ direction, torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(random_directions(16, 4, seed=3).norm(dim=1), torch.ones(4))


def test_swap_moves_weight_from_source_to_target(setup):
    _, _, _, _, sae, _ = setup
    h = torch.randn(4, 32)
    source = torch.tensor([0, 1, 2, 3])
    edited = slot_swap(sae, source, 5, 2.0)(h)
    z = sae.encode(h)
    z_edit = z.clone()
    z_edit[torch.arange(4), source] = 0
    z_edit[:, 5] = 2.0
    torch.testing.assert_close(edited - h, sae.decode(z_edit) - sae.decode(z), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_several_edits_in_one_call_equal_one_pass_each(setup, llama_setup, family):
    from biosae.lm.prompt_cache import edited_predictions_many

    model, tokenizer, prompts, first, sae, rules = setup if family == "gpt2" else llama_setup
    cache = PromptCache(model, prompts, batch_size=7)
    edits = [
        None,
        lambda idx: slot_ablation(sae, 2),
        lambda idx: slot_swap(sae, rules[idx], 1, 2.0),
        lambda idx: project_out(random_directions(32, 1, seed=3)[0]),
    ]
    predicted, logprob = edited_predictions_many(cache, first, -1, edits)
    for k, edit in enumerate(edits):
        single, single_logprob = edited_predictions(cache, first, -1, edit)
        assert np.array_equal(predicted[k], single)
        np.testing.assert_allclose(logprob[k], single_logprob, atol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_group_logits_carry_gradients_to_the_edit(setup, llama_setup, family):
    """DAS trains through group_logits: the logits equal a full pass and backpropagate to the edit."""
    model, tokenizer, prompts, first, sae, rules = setup if family == "gpt2" else llama_setup
    cache = PromptCache(model, prompts, batch_size=7, for_training=True)
    shift = torch.zeros(32, requires_grad=True)
    index = cache.groups[0][0]
    logits = cache.group_logits(0, 1, lambda h: h + shift)
    reference = full_pass(model, tokenizer, [prompts[i] for i in index], 1, None)
    torch.testing.assert_close(torch.log_softmax(logits, -1).detach(), reference, atol=1e-4, rtol=1e-4)
    logits[:, 0].sum().backward()
    assert shift.grad is not None and shift.grad.abs().sum() > 0
