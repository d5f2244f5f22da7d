"""Stage 3 and the layer profile: every hook point from one forward pass, one file per layer in the
storage dtype, the layer list a config resolves to, and the SAE's seeded training subsample."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open

from biosae.config import validate_config
from biosae.dataset.build import DatasetConfig, build_dataset
from biosae.errors import BiosaeError
from biosae.lm.activations import (
    answer_position_pass,
    build_activation_table,
    build_activation_tables,
    encode_prompts,
    load_activation_table,
    write_activation_files,
)
from biosae.lm.layers import block_count, profile_layers
from biosae.lm.model import build_scratch_model
from biosae.lm.tokenization import train_word_tokenizer
from biosae.sae.inputs import training_rows, training_tensors, value_candidates
from tests.conftest import DATA, tiny_config

N_LAYER = 3
HOOK_POINTS = [0, 1, 2, -1]  # every hook point of a 3-block model


@pytest.fixture(scope="module")
def model_and_rows():
    """A random-init 3-block GPT-2 (the hooks' arithmetic needs no training) and QA rows of
    every cell, prompts of several lengths."""
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
    model = build_scratch_model(
        tokenizer, dict(n_layer=N_LAYER, n_embd=32, n_head=2, block_size=64, init="scratch"), seed=0
    ).eval()
    rows = qa["qa_train"][:30] + qa["qa_test"][:30] + qa["qa_hard"][:20]
    return model, tokenizer, rows


def test_one_pass_all_layers_equals_one_layer_at_a_time(model_and_rows):
    """Exactly equal, not within a tolerance: the capture hooks only read, so the one pass runs the
    same operations on the same length-sorted batches as a pass with the single-layer hook
    (``answer_position_pass``, the hook the interventions use), and CPU kernels are deterministic."""
    model, tokenizer, rows = model_and_rows
    batch_size = 16
    tables, index = build_activation_tables(model, tokenizer, rows, HOOK_POINTS, batch_size, progress=False)
    assert sorted(tables) == sorted(HOOK_POINTS)
    prompt_ids, _ = encode_prompts(tokenizer, rows)
    order = np.argsort([len(p) for p in prompt_ids], kind="stable")
    assert len({len(p) for p in prompt_ids}) > 3  # batches really differ in length and padding
    for layer in HOOK_POINTS:
        single = torch.empty_like(tables[layer])
        full_logprobs = torch.empty(len(rows), len(tokenizer))
        for start in range(0, len(rows), batch_size):
            batch = order[start : start + batch_size]
            h, logprobs = answer_position_pass(model, [prompt_ids[i] for i in batch], tokenizer.pad_token_id, layer)
            single[torch.from_numpy(batch)] = h
            full_logprobs[torch.from_numpy(batch)] = logprobs[:, : len(tokenizer)]
        assert torch.equal(tables[layer], single), layer
        # The collection applies the LM head at the answer position only (logits_to_keep): the same
        # verdict as the full logits, its log-probability to float rounding.
        assert np.array_equal(index["lm_predicted_first_token"], full_logprobs.argmax(-1).numpy())
        answer_logprob = full_logprobs[torch.arange(len(rows)), torch.tensor(index["answer_first_token"].to_numpy())]
        np.testing.assert_allclose(index["lm_first_token_logprob"], answer_logprob.numpy(), atol=1e-5, rtol=1e-5)
        one_layer, one_index = build_activation_table(model, tokenizer, rows, layer, batch_size, progress=False)
        assert torch.equal(tables[layer], one_layer), layer
        pd.testing.assert_frame_equal(index, one_index)
    # The hook points are distinct states (a hook on the wrong block would repeat one).
    assert not torch.allclose(tables[0], tables[1]) and not torch.allclose(tables[2], tables[-1])


def test_hook_points_are_the_residual_stream_after_l_blocks(model_and_rows):
    """Against Hugging Face's own hidden states, one prompt at a time (no padding): hidden_states[L]
    is the residual stream after L blocks for L < n_layer; the last one is after ln_f, ours before.
    Within float tolerance: different batch shapes may round the last bits differently."""
    model, tokenizer, rows = model_and_rows
    tables, _ = build_activation_tables(model, tokenizer, rows[:6], HOOK_POINTS, batch_size=4, progress=False)
    prompt_ids, _ = encode_prompts(tokenizer, rows[:6])
    for row, prompt in enumerate(prompt_ids):
        with torch.no_grad():
            states = model(input_ids=torch.tensor([prompt]), output_hidden_states=True).hidden_states
        for layer in range(N_LAYER):
            torch.testing.assert_close(tables[layer][row], states[layer][0, -1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            model.transformer.ln_f(tables[-1][row]), states[N_LAYER][0, -1], atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize(
    "dtype, torch_dtype, code",
    [("float32", torch.float32, "F32"), ("float16", torch.float16, "F16"), ("bfloat16", torch.bfloat16, "BF16")],
)
def test_one_file_per_layer_in_the_storage_dtype_read_back_as_float32(
    model_and_rows, tmp_path, dtype, torch_dtype, code
):
    model, tokenizer, rows = model_and_rows
    tables, index = build_activation_tables(model, tokenizer, rows, HOOK_POINTS, batch_size=16, progress=False)
    paths = {layer: tmp_path / f"layer_{layer}.safetensors" for layer in HOOK_POINTS}
    written = write_activation_files(
        model, tokenizer, rows, paths, tmp_path / "index.csv", dtype, "lm/final", batch_size=16, progress=False
    )
    pd.testing.assert_frame_equal(written, index)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*(p.name for p in paths.values()), "index.csv"])
    for layer, path in paths.items():
        loaded, loaded_index = load_activation_table(path, tmp_path / "index.csv")
        assert loaded.dtype == torch.float32 and loaded.shape == tables[layer].shape
        # float32 exact; 16-bit exactly the rounding of the float32 state, nothing else lost.
        assert torch.equal(loaded, tables[layer].to(torch_dtype).float()), layer
        assert list(loaded_index["person_id"]) == [r["person_id"] for r in rows]
        with safe_open(str(path), framework="pt") as handle:  # a standard safetensors file
            metadata = handle.metadata()
            assert handle.get_slice("activations").get_dtype() == code
        assert metadata["layer"] == str(layer) and metadata["dtype"] == dtype
        assert metadata["batch_size"] == "16"
        assert metadata["blocks"] == str(N_LAYER if layer == -1 else layer)
        payload = len(rows) * 32 * torch.tensor([], dtype=torch_dtype).element_size()
        assert payload < path.stat().st_size < payload + 1024
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_activation_files_are_written_atomically(model_and_rows, tmp_path):
    model, tokenizer, rows = model_and_rows
    paths = {0: tmp_path / "layer_0.safetensors", 1: tmp_path / "layer_1.safetensors"}
    with pytest.raises(BiosaeError, match="activations.dtype: 'int8' is not one of"):
        write_activation_files(model, tokenizer, rows, paths, tmp_path / "index.csv", "int8", progress=False)
    with pytest.raises(BiosaeError, match="is outside 0..3"):  # fails after the first layers' writers opened
        write_activation_files(
            model,
            tokenizer,
            rows,
            {**paths, 7: tmp_path / "layer_7.safetensors"},
            tmp_path / "index.csv",
            progress=False,
        )
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# The layer profile a config names


def test_all_layers_is_every_hook_point_with_the_seed_layer():
    config = validate_config(tiny_config())  # 2 blocks; sweep.layers: all is the default
    assert config["sweep"]["layers"] == "all" and config["sweep"]["seeds"] == []
    assert profile_layers(config, 2) == [0, 1, -1]
    config["activations"]["layer"] = 2  # the last block named by its count: labelled 2, not -1
    assert profile_layers(config, 2) == [0, 1, 2]
    config["activations"]["layer"] = 1
    config["sweep"]["layers"] = [-1]
    assert profile_layers(config, 2) == [1, -1]
    config["sweep"]["layers"] = [1]
    assert profile_layers(config, 2) == [1]


def test_pretrained_block_count_comes_from_its_config_json(tmp_path, monkeypatch):
    from transformers import GPT2Config

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    GPT2Config(n_layer=5, n_embd=16, n_head=2).save_pretrained(tmp_path / "tiny-gpt2")
    model = {"init": "pretrained", "name": str(tmp_path / "tiny-gpt2")}
    assert block_count(model) == 5
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"text_config": {"num_hidden_layers": 7}}))
    assert block_count({**model, "name": str(tmp_path / "other")}) == 7
    (tmp_path / "other" / "config.json").write_text("{}")
    with pytest.raises(BiosaeError, match="config key model.name: the config.json of .* names no layer count"):
        block_count({**model, "name": str(tmp_path / "other")})

    config = tiny_config(model={"init": "pretrained", "name": str(tmp_path / "tiny-gpt2")})
    assert profile_layers(validate_config(config), 5) == [0, 1, 2, 3, 4, -1]
    config["sweep"]["layers"] = [2, 6]
    with pytest.raises(BiosaeError, match=re.escape("config key sweep.layers: 6 is above the 5 blocks of")):
        validate_config(config)


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("activations", "dtype", "float64", "config key activations.dtype: 'float64' is not one of"),
        ("sae", "max_train_rows", -1, "config key sae.max_train_rows: -1 is less than the minimum of 0"),
        ("sae", "max_train_rows", 1.5, "config key sae.max_train_rows: 1.5 is not of type 'integer', 'null'"),
        ("sweep", "layers", "every", "config key sweep.layers: 'every' is not valid under any of the given schemas"),
        ("sweep", "layers", [], "config key sweep.layers: [] should be non-empty"),
        ("sweep", "layers", [-3], "config key sweep.layers.0: -3 is less than the minimum of -1"),
        ("sweep", "layers", [3], "config key sweep.layers: 3 is above model.n_layer 2"),
        ("sweep", "layers", [0, 2], "config key sweep.layers: 2 and -1 (activations.layer) are the same hook point"),
    ],
)
def test_bad_profile_options_are_one_line(section, key, value, message):
    config = tiny_config()
    config[section][key] = value
    with pytest.raises(BiosaeError) as error:
        validate_config(config)
    assert str(error.value).startswith(message) and "\n" not in str(error.value), str(error.value)


# ---------------------------------------------------------------------------------------------
# The SAE's training subsample


def test_sae_subsample_is_seeded_and_from_the_train_cell_only():
    index = pd.DataFrame(
        {
            "split": ["train", "ood_person"] * 500,
            "rule_idx": np.arange(1000) % 6,
            "answer_first_token": np.arange(1000) % 7,
        }
    )
    everything = training_rows(index)
    assert everything.sum() == 500 and (index["split"][everything] == "train").all()
    for no_limit in (0, None, 500, 10_000):
        assert np.array_equal(training_rows(index, no_limit, seed=3), everything)
    first, again, other = (
        training_rows(index, 100, seed=3),
        training_rows(index, 100, seed=3),
        training_rows(index, 100, 4),
    )
    assert first.sum() == 100 and (index["split"][first] == "train").all()
    assert np.array_equal(first, again) and not np.array_equal(first, other)

    activations = torch.arange(1000, dtype=torch.float32)[:, None].repeat(1, 4)
    h, rule_idx, _ = training_tensors(activations, index, value_candidates(index), 100, seed=3)
    assert h.shape == (100, 4) and torch.equal(h[:, 0].long(), torch.from_numpy(np.flatnonzero(first)))
    assert torch.equal(rule_idx, torch.from_numpy(index["rule_idx"].to_numpy()[first]))
