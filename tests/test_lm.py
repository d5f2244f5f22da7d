"""Stage 2 and 3 library tests: tokenizer, training and resume, pretrained path, accuracy vs
generate(), activations batched vs single, and the hook's exactness."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from biosae.dataset.build import DatasetConfig, build_dataset
from biosae.errors import BiosaeError
from biosae.lm.activations import answer_position_pass, build_activation_table, resolve_layer
from biosae.lm.model import (
    TrainingConfig,
    build_scratch_model,
    corpus_fingerprint,
    load_model_dir,
    load_pretrained,
    next_token_loss,
    tokenize_documents,
    train_language_model,
)
from biosae.lm.qa_accuracy import encode_rows, score_answers
from biosae.lm.tokenization import train_word_tokenizer
from tests.conftest import DATA, interrupted_after

MODEL = dict(n_layer=2, n_embd=32, n_head=2, block_size=64, init="scratch")


@pytest.fixture(scope="module")
def data():
    train, test, qa, corpus = build_dataset(
        DatasetConfig(
            num_persons=16,
            biographies_per_person=2,
            entities_dir=str(DATA / "entities"),
            templates_dir=str(DATA / "templates"),
            qa_templates_dir=str(DATA / "qa_templates"),
        )
    )
    return qa, [d["text"] for d in corpus]


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A tiny model trained long enough to answer some training questions."""
    qa, texts = data
    tokenizer = train_word_tokenizer(texts)
    model = build_scratch_model(tokenizer, MODEL, seed=0)
    directory = tmp_path_factory.mktemp("lm")
    cfg = TrainingConfig(epochs=40, batch_size=2, lr=3e-3, precision="fp32", block_size=64)
    summary = train_language_model(
        model, tokenizer, texts, cfg, directory / "final", directory / "ckpt", directory / "log.csv", progress=False
    )
    return load_model_dir(directory / "final") + (summary, directory)


def test_word_tokenizer_special_ids_fit_the_vocabulary(data):
    _, texts = data
    tokenizer = train_word_tokenizer(texts)
    model = build_scratch_model(tokenizer, MODEL, seed=0)
    assert model.config.eos_token_id == tokenizer.eos_token_id < len(tokenizer)
    assert model.config.pad_token_id == tokenizer.pad_token_id != tokenizer.eos_token_id
    # A name tokenizes the same at the start of a document and mid-sentence.
    start = tokenizer("Ann Lee Smith was born", add_special_tokens=False)["input_ids"][:3]
    middle = tokenizer("the city of Ann Lee Smith", add_special_tokens=False)["input_ids"][3:]
    assert start == middle


def test_training_lowers_loss_and_logs(trained):
    model, tokenizer, summary, directory = trained
    lines = (directory / "log.csv").read_text().splitlines()
    assert lines[0].startswith("step,epoch,lr,loss,tokens_per_s")
    losses = [float(line.split(",")[3]) for line in lines[1:]]
    assert losses[-1] < 0.6 * losses[0]
    assert summary["tokens_per_s"] > 0 and summary["flops_per_token"] > 0


def test_teacher_forced_accuracy_agrees_with_generate(trained, data):
    model, tokenizer, _, _ = trained
    qa, _ = data
    rows = qa["qa_train"][:24] + qa["qa_test"][:24]
    encoded = encode_rows(tokenizer, rows)
    scores = score_answers(model, encoded, tokenizer.pad_token_id, batch_size=7)
    agree = 0
    for i, (prompt, answer) in enumerate(zip(encoded.prompt_ids, encoded.answer_ids)):
        generated = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=len(answer),
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=None,
        )[0, len(prompt) :].tolist()
        agree += (generated == answer) == bool(scores["exact"][i])
        assert (generated[0] == answer[0]) == bool(scores["first_token"][i])
    assert agree == len(rows)
    assert 0 < scores["exact"][:24].sum(), "the tiny model should answer some training questions"


class _FullLogitsOnly(torch.nn.Module):
    """The same LM behind a forward that takes no ``logits_to_keep`` (as some architectures'),
    so score_answers must compute the head at every position and pick the answer spans itself."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


def test_answer_scores_equal_with_and_without_logits_to_keep(trained, data):
    model, tokenizer, _, _ = trained
    qa, _ = data
    rows = qa["qa_train"][:30] + qa["qa_test"][:30]
    encoded = encode_rows(tokenizer, rows)
    sliced = score_answers(model, encoded, tokenizer.pad_token_id, batch_size=9)
    full = score_answers(_FullLogitsOnly(model), encoded, tokenizer.pad_token_id, batch_size=9)
    for key in ("exact", "first_token", "predicted_first"):
        np.testing.assert_array_equal(sliced[key], full[key], err_msg=key)
    np.testing.assert_allclose(sliced["first_token_logprob"], full["first_token_logprob"], atol=1e-5)
    assert 0 < sliced["exact"].sum() < len(rows)  # both verdicts occur


def test_resume_after_interruption_gives_the_same_model(data, tmp_path):
    _, texts = data
    tokenizer = train_word_tokenizer(texts)
    cfg = TrainingConfig(epochs=2, batch_size=4, lr=1e-3, precision="fp32", block_size=64, checkpoint_every_steps=3)
    full = build_scratch_model(tokenizer, MODEL, seed=0)
    train_language_model(
        full, tokenizer, texts, cfg, tmp_path / "a", tmp_path / "ck_a", tmp_path / "a.csv", progress=False
    )
    interrupted = build_scratch_model(tokenizer, MODEL, seed=0)
    out = interrupted_after(
        7,
        lambda: train_language_model(
            interrupted, tokenizer, texts, cfg, tmp_path / "b", tmp_path / "ck_b", tmp_path / "b.csv", progress=False
        ),
    )
    assert out == {"interrupted_at_step": 7} and not (tmp_path / "b").exists()
    state = json.loads((tmp_path / "ck_b" / "state.json").read_text())
    assert state["step"] == 6  # the last checkpoint before the interruption
    resumed = build_scratch_model(tokenizer, MODEL, seed=123)  # different init: must be overwritten
    train_language_model(
        resumed, tokenizer, texts, cfg, tmp_path / "b", tmp_path / "ck_b", tmp_path / "b.csv", progress=False
    )
    a, _ = load_model_dir(tmp_path / "a")
    b, _ = load_model_dir(tmp_path / "b")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, msg=name)


def test_next_token_loss_is_the_mean_over_every_position_but_the_last():
    """Padded targets (no slice of the logits) give the textbook shifted cross-entropy, gradient included."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=generator, requires_grad=True)
    ids = torch.randint(0, 11, (3, 7), generator=generator)
    expected = -torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).mean()
    loss = next_token_loss(logits, ids)
    torch.testing.assert_close(loss, expected)
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.all(grad[:, -1] == 0)  # the last position predicts nothing
    (expected_grad,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(grad, expected_grad)


def test_corpus_fingerprint_covers_content_not_only_size():
    corpus = [[5, 6, 7], [8, 9]]
    assert corpus_fingerprint(corpus) == corpus_fingerprint([list(d) for d in corpus])
    same_size_other_tokens = [[5, 6, 8], [8, 9]]
    same_size_other_boundaries = [[5, 6], [7, 8, 9]]
    fingerprints = {corpus_fingerprint(c) for c in (corpus, same_size_other_tokens, same_size_other_boundaries)}
    assert len(fingerprints) == 3


def test_resume_refuses_a_checkpoint_of_another_corpus_of_the_same_size(data, tmp_path):
    _, texts = data
    # The same words, each document's in reverse order: as many documents and tokens as before.
    other = [" ".join(reversed(text.split())) for text in texts]
    tokenizer = train_word_tokenizer(texts)
    assert [len(d) for d in tokenize_documents(tokenizer, other)] == [
        len(d) for d in tokenize_documents(tokenizer, texts)
    ]
    cfg = TrainingConfig(epochs=1, batch_size=4, lr=1e-3, precision="fp32", block_size=64, checkpoint_every_steps=1)
    first = build_scratch_model(tokenizer, MODEL, seed=0)
    assert interrupted_after(
        3,
        lambda: train_language_model(
            first, tokenizer, texts, cfg, tmp_path / "a", tmp_path / "ck", tmp_path / "a.csv", progress=False
        ),
    ) == {"interrupted_at_step": 3}
    # The other corpus, rerun on that checkpoint, must train from step 0 like a fresh run does.
    for name, checkpoint in (("b", tmp_path / "ck"), ("fresh", tmp_path / "ck_fresh")):
        model = build_scratch_model(tokenizer, MODEL, seed=0)
        train_language_model(
            model, tokenizer, other, cfg, tmp_path / name, checkpoint, tmp_path / f"{name}.csv", progress=False
        )
    resumed, _ = load_model_dir(tmp_path / "b")
    fresh, _ = load_model_dir(tmp_path / "fresh")
    for (name, p), q in zip(fresh.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(p, q, msg=name)


def test_pretrained_path_from_a_saved_tiny_gpt2(data, tmp_path, monkeypatch):
    """from_pretrained on a local directory, offline: a tiny GPT-2 with a byte-level BPE tokenizer."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    qa, texts = data
    bpe = ByteLevelBPETokenizer(add_prefix_space=True)
    bpe.train_from_iterator(texts, vocab_size=400, special_tokens=["<|endoftext|>"])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=128,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "tiny-gpt2")
    tokenizer.save_pretrained(tmp_path / "tiny-gpt2")

    model, loaded_tokenizer = load_pretrained(str(tmp_path / "tiny-gpt2"))
    assert loaded_tokenizer.pad_token_id == loaded_tokenizer.eos_token_id
    cfg = TrainingConfig(epochs=1, batch_size=4, lr=2e-5, precision="fp32", block_size=128)
    train_language_model(
        model, loaded_tokenizer, texts, cfg, tmp_path / "final", tmp_path / "ck", tmp_path / "l.csv", progress=False
    )
    reloaded, reloaded_tokenizer = load_model_dir(tmp_path / "final")
    activations, index = build_activation_table(
        reloaded, reloaded_tokenizer, qa["qa_train"][:12], layer=-1, batch_size=5, progress=False
    )
    assert activations.shape == (12, 32) and torch.isfinite(activations).all()

    with pytest.raises(BiosaeError, match="cannot load a pretrained causal LM"):
        load_pretrained(str(tmp_path / "does-not-exist"))


@pytest.mark.parametrize("layer", [0, 1, -1])
def test_batched_and_single_activations_agree(trained, data, layer):
    model, tokenizer, _, _ = trained
    qa, _ = data
    rows = qa["qa_test"][:20]
    batched, index = build_activation_table(model, tokenizer, rows, layer=layer, batch_size=8, progress=False)
    single, _ = build_activation_table(model, tokenizer, rows, layer=layer, batch_size=1, progress=False)
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=1e-4)
    assert list(index["person_id"]) == [r["person_id"] for r in rows]


def test_final_layer_hook_is_before_ln_f(trained, data):
    model, tokenizer, _, _ = trained
    qa, _ = data
    prompts = encode_rows(tokenizer, qa["qa_train"][:4]).prompt_ids
    h, _ = answer_position_pass(model, prompts, tokenizer.pad_token_id, layer=-1)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([prompts[0]]), output_hidden_states=True)
        after_ln_f = model.transformer.ln_f(h[:1].clone())
    # hidden_states[-1] is after ln_f; ln_f of our activation must reproduce it.
    torch.testing.assert_close(after_ln_f, out.hidden_states[-1][:, -1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(h[:1], out.hidden_states[-1][:, -1], atol=1e-3)
    assert resolve_layer(model, -1) == 2
    with pytest.raises(BiosaeError, match="activations.layer: 5 is outside 0..2"):
        resolve_layer(model, 5)


def test_identity_edit_leaves_logits_unchanged(trained, data):
    model, tokenizer, _, _ = trained
    qa, _ = data
    prompts = encode_rows(tokenizer, qa["qa_train"][:6]).prompt_ids
    _, clean = answer_position_pass(model, prompts, tokenizer.pad_token_id, layer=1)
    _, same = answer_position_pass(model, prompts, tokenizer.pad_token_id, layer=1, edit=lambda h: h.clone())
    _, changed = answer_position_pass(model, prompts, tokenizer.pad_token_id, layer=1, edit=lambda h: h * 0)
    torch.testing.assert_close(clean, same)
    assert not torch.allclose(clean, changed)


def test_batched_encoding_equals_one_row_at_a_time(data):
    from biosae.dataset.text import format_answer, format_prompt
    from biosae.lm.tokenization import encode_qa

    qa, texts = data
    tokenizer = train_word_tokenizer(texts)
    rows = qa["qa_test"][:30] + qa["qa_hard"][:30]
    encoded = encode_rows(tokenizer, rows)
    for row, prompt, answer in zip(rows, encoded.prompt_ids, encoded.answer_ids):
        assert (prompt, answer) == encode_qa(tokenizer, format_prompt(row["question"]), format_answer(row["answer"]))


def test_auto_precision_follows_the_hardware():
    """``auto`` is bf16 only where the device multiplies bf16 natively: emulated bf16 on an AVX2-only
    CPU made the default LM's training step ~50x slower than fp32."""
    from biosae.lm.model import native_bf16, resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    config = {"precision": "auto", "epochs": 1}
    resolved = TrainingConfig.from_sections(config, {"init": "scratch", "block_size": 64}, seed=0).precision
    assert resolved in ("bf16", "fp32") and resolved == resolve_precision("auto", cpu)
