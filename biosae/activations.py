"""Stage 3: the residual stream at the answer position, and the hook point interventions use.

Hook point, precisely: ``layer = L`` (0 <= L <= n_layer) is the residual stream after L
transformer blocks, i.e. the output of block L-1 (L = 0: the embeddings, the input of block 0).
``layer = -1`` means L = n_layer: the output of the LAST block, BEFORE the final layer norm
(``ln_f``). Hugging Face's ``hidden_states[-1]`` for GPT-2 is AFTER ``ln_f``; we don't use it,
because the same hook must also write edited states back into the forward pass.
The answer position is the last prompt token (":" of "Answer:"), which predicts the first
answer token.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from biosae.errors import BiosaeError
from biosae.qa_accuracy import right_padded


def transformer_blocks(model) -> torch.nn.ModuleList:
    """The list of transformer blocks of a Hugging Face causal LM (GPT-2, Llama-like, NeoX, OPT)."""
    for path in ("transformer.h", "model.layers", "gpt_neox.layers", "model.decoder.layers"):
        module = model
        try:
            for attribute in path.split("."):
                module = getattr(module, attribute)
        except AttributeError:
            continue
        if isinstance(module, torch.nn.ModuleList):
            return module
    raise BiosaeError(f"{type(model).__name__}: cannot find its transformer blocks to hook")


def resolve_layer(model, layer: int) -> int:
    n = len(transformer_blocks(model))
    resolved = n if layer == -1 else layer
    if not 0 <= resolved <= n:
        raise BiosaeError(f"activations.layer: {layer} is outside 0..{n} (or -1) for this {n}-block model")
    return resolved


@contextlib.contextmanager
def residual_hook(model, layer: int, positions: torch.Tensor, capture: list | None = None, edit=None):
    """Read (``capture``) and/or replace (``edit(h) -> h'``) the residual stream at ``positions``.

    ``positions[i]`` is the answer position of batch row i. Only that position is touched, so a
    prompt's earlier tokens are computed exactly as without the hook.
    """
    blocks = transformer_blocks(model)
    resolved = resolve_layer(model, layer)
    rows = torch.arange(len(positions))

    def apply(hidden):
        h = hidden[rows, positions]
        if capture is not None:
            capture.append(h.detach().float().clone())
        if edit is not None:
            hidden = hidden.clone()
            hidden[rows, positions] = edit(h.float()).to(hidden.dtype)
        return hidden

    if resolved == 0:
        def pre_hook(module, args, kwargs):
            if args:
                return (apply(args[0]), *args[1:]), kwargs
            kwargs["hidden_states"] = apply(kwargs["hidden_states"])
            return args, kwargs

        handle = blocks[0].register_forward_pre_hook(pre_hook, with_kwargs=True)
    else:
        def post_hook(module, args, output):
            if isinstance(output, tuple):
                return (apply(output[0]), *output[1:])
            return apply(output)

        handle = blocks[resolved - 1].register_forward_hook(post_hook)
    try:
        yield
    finally:
        handle.remove()


@torch.inference_mode()
def answer_position_pass(model, prompt_ids: list[list[int]], pad_id: int, layer: int, edit=None, capture=True):
    """One batched forward pass over prompts; returns (h at the answer position or None,
    log-probabilities of the next token at the answer position [B, vocab])."""
    device = next(model.parameters()).device
    ids, mask = right_padded(prompt_ids, pad_id)
    positions = torch.tensor([len(p) - 1 for p in prompt_ids])
    captured: list = []
    with residual_hook(model, layer, positions.to(device), captured if capture else None, edit):
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    logprobs = torch.log_softmax(logits[torch.arange(len(prompt_ids)), positions.to(device)].float(), dim=-1)
    return (captured[0].cpu() if capture else None), logprobs.cpu()


def collect_activations(model, tokenizer, prompt_ids: list[list[int]], answer_first_token: np.ndarray, layer: int,
                        batch_size: int = 256, progress: bool = True) -> dict:
    """Activations at the answer position for every prompt, plus the LM's own first-token verdict.

    Prompts are sorted by length so that batches need little padding; results come back in row
    order. Returns float32 ``activations`` [N, d] and per-row numpy arrays.
    """
    from tqdm import tqdm

    n = len(prompt_ids)
    order = np.argsort([len(p) for p in prompt_ids], kind="stable")
    activations = None
    predicted = np.zeros(n, dtype=np.int64)
    logprob = np.zeros(n, dtype=np.float32)
    for start in tqdm(range(0, n, batch_size), disable=not progress, unit="batch", desc="activations"):
        index = order[start : start + batch_size]
        h, logprobs = answer_position_pass(model, [prompt_ids[i] for i in index], tokenizer.pad_token_id, layer)
        if activations is None:
            activations = torch.empty((n, h.shape[1]), dtype=torch.float32)
        activations[torch.from_numpy(index)] = h
        predicted[index] = logprobs.argmax(-1).numpy()
        logprob[index] = logprobs[torch.arange(len(index)), torch.from_numpy(answer_first_token[index])].numpy()
    return {
        "activations": activations,
        "lm_predicted_first_token": predicted,
        "lm_first_token_logprob": logprob,
        "lm_first_token_correct": predicted == answer_first_token,
    }


INDEX_COLUMNS = ("row", "person_id", "full_name", "rule_idx", "rule_name", "template_idx", "split", "question", "answer",
                 "answer_first_token", "lm_predicted_first_token", "lm_first_token_correct", "lm_first_token_logprob")


def encode_prompts(tokenizer, rows: list[dict]) -> tuple[list[list[int]], np.ndarray]:
    """Prompt ids (formatted exactly as in LM training) and each answer's first token id."""
    from biosae.qa_accuracy import encode_rows

    encoded = encode_rows(tokenizer, rows)
    return encoded.prompt_ids, np.array([a[0] for a in encoded.answer_ids], dtype=np.int64)


def build_activation_table(model, tokenizer, rows: list[dict], layer: int, batch_size: int = 256, progress=True):
    """(activations [N, d] float32, index DataFrame with one row per QA row, in input order)."""
    import pandas as pd

    prompt_ids, first_tokens = encode_prompts(tokenizer, rows)
    result = collect_activations(model, tokenizer, prompt_ids, first_tokens, layer, batch_size, progress)
    index = pd.DataFrame(
        {
            "row": np.arange(len(rows)),
            "person_id": [r["person_id"] for r in rows],
            "full_name": [r.get("full_name", "") for r in rows],
            "rule_idx": [int(r["rule_idx"]) for r in rows],
            "rule_name": [r["rule_name"] for r in rows],
            "template_idx": [int(r.get("template_idx", 0)) for r in rows],
            "split": [r["split"] for r in rows],
            "question": [r["question"] for r in rows],
            "answer": [r["answer"] for r in rows],
            "answer_first_token": first_tokens,
            "lm_predicted_first_token": result["lm_predicted_first_token"],
            "lm_first_token_correct": result["lm_first_token_correct"],
            "lm_first_token_logprob": result["lm_first_token_logprob"],
        },
        columns=list(INDEX_COLUMNS),
    )
    return result["activations"], index


def save_activation_table(activations: torch.Tensor, index, tensor_path, index_path, layer: int, model_dir) -> None:
    from biosae.io import atomic_path, save_tensors

    save_tensors(tensor_path, {"activations": activations},
                 metadata={"layer": str(layer), "model": str(model_dir), "rows": str(len(index)),
                           "hook": "residual stream after `layer` blocks (-1: last block, before ln_f)"})
    with atomic_path(index_path) as tmp:
        index.to_csv(tmp, index=False)


def load_activation_table(tensor_path, index_path):
    import pandas as pd

    from biosae.io import load_tensors

    activations = load_tensors(tensor_path)
    if "activations" not in activations:
        raise BiosaeError(f"{tensor_path}: no 'activations' tensor")
    table = activations["activations"]
    if table.ndim != 2 or not table.is_floating_point():
        raise BiosaeError(f"{tensor_path}: 'activations' is {table.dtype} of shape {tuple(table.shape)}, "
                          f"expected a 2-D float tensor [rows, d_model]")
    try:
        index = pd.read_csv(index_path, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise BiosaeError(f"{index_path}: cannot read the activation index ({error})") from None
    missing = set(INDEX_COLUMNS) - set(index.columns)
    if missing:
        raise BiosaeError(f"{index_path}: columns missing: {sorted(missing)}")
    if len(index) != activations["activations"].shape[0]:
        raise BiosaeError(f"{index_path}: {len(index)} rows but {tensor_path} holds {activations['activations'].shape[0]}")
    return activations["activations"], index
