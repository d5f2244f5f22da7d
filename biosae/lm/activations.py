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
import json
import re
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from biosae.errors import BiosaeError
from biosae.io import atomic_path, load_tensors
from biosae.lm.qa_accuracy import encode_rows, right_padded, takes_logits_to_keep


def _submodule(model, paths: tuple[str, ...], kind: type, what: str):
    """The first of the dotted attribute ``paths`` that ``model`` has, as a ``kind``; the paths
    name the same part in GPT-2, Llama-like, NeoX and OPT models."""
    for path in paths:
        module = model
        try:
            for attribute in path.split("."):
                module = getattr(module, attribute)
        except AttributeError:
            continue
        if isinstance(module, kind):
            return module
    raise BiosaeError(f"{type(model).__name__}: cannot find its {what}")


def transformer_blocks(model) -> torch.nn.ModuleList:
    """The list of transformer blocks of a Hugging Face causal LM (GPT-2, Llama-like, NeoX, OPT)."""
    paths = ("transformer.h", "model.layers", "gpt_neox.layers", "model.decoder.layers")
    return _submodule(model, paths, torch.nn.ModuleList, "transformer blocks to hook")


def final_norm(model) -> torch.nn.Module:
    """The norm between the last block's output (hook -1) and the unembedding (GPT-2's ``ln_f``)."""
    paths = ("transformer.ln_f", "model.norm", "gpt_neox.final_layer_norm", "model.decoder.final_layer_norm")
    return _submodule(model, paths, torch.nn.Module, "final norm")


@torch.no_grad()
def next_token_logits(model, last_block: torch.Tensor) -> torch.Tensor:
    """``[N, vocab]`` logits from residual states in the last block's output space (hook -1): the
    LM's own final norm and unembedding, as its forward pass applies them."""
    return model.get_output_embeddings()(final_norm(model)(last_block))


def resolve_layer(model, layer: int) -> int:
    n = len(transformer_blocks(model))
    resolved = n if layer == -1 else layer
    if not 0 <= resolved <= n:
        raise BiosaeError(f"activations.layer: {layer} is outside 0..{n} (or -1) for this {n}-block model")
    return resolved


def _hook_point(model, layer: int, apply):
    """Register ``apply(hidden) -> hidden`` on the residual stream after ``layer`` blocks; returns
    the handle. Layer 0 is the input of block 0 (a pre-hook), layer L >= 1 the output of block L-1."""
    blocks = transformer_blocks(model)
    resolved = resolve_layer(model, layer)
    if resolved == 0:

        def pre_hook(module, args, kwargs):
            if args:
                return (apply(args[0]), *args[1:]), kwargs
            kwargs["hidden_states"] = apply(kwargs["hidden_states"])
            return args, kwargs

        return blocks[0].register_forward_pre_hook(pre_hook, with_kwargs=True)

    def post_hook(module, args, output):
        if isinstance(output, tuple):
            return (apply(output[0]), *output[1:])
        return apply(output)

    return blocks[resolved - 1].register_forward_hook(post_hook)


def apply_edit(edit, h: torch.Tensor) -> torch.Tensor:
    """``edit(h)`` run in float32 on the CPU, where the SAEs and the methods live, and returned in
    ``h``'s device and dtype: an LM on a GPU takes the same edits (training.device). On the CPU
    both moves are no-ops."""
    return edit(h.float().cpu()).to(device=h.device, dtype=h.dtype)


@contextlib.contextmanager
def residual_hook(model, layer: int, positions: torch.Tensor, capture: list | None = None, edit=None):
    """Read (``capture``) and/or replace (``edit(h) -> h'``) the residual stream at ``positions``.

    ``positions[i]`` is the answer position of batch row i. Only that position is touched, so a
    prompt's earlier tokens are computed exactly as without the hook.
    """
    rows = torch.arange(len(positions))

    def apply(hidden):
        h = hidden[rows, positions]
        if capture is not None:
            capture.append(h.detach().float().clone())
        if edit is not None:
            hidden = hidden.clone()
            hidden[rows, positions] = apply_edit(edit, h)
        return hidden

    handle = _hook_point(model, layer, apply)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def residual_capture(model, layers: list[int], positions: torch.Tensor, captured: dict):
    """Read the residual stream at ``positions`` at every layer of ``layers`` in the same forward
    pass: ``captured[layer]`` becomes h [B, d] (float32, detached). Nothing is edited."""
    rows = torch.arange(len(positions), device=positions.device)

    def reader(layer):
        def apply(hidden):
            captured[layer] = hidden[rows, positions].detach().float()
            return hidden

        return apply

    handles = []
    try:
        for layer in layers:
            handles.append(_hook_point(model, layer, reader(layer)))
        yield
    finally:
        for handle in handles:
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


def collect_activations(
    model,
    tokenizer,
    prompt_ids: list[list[int]],
    answer_first_token: np.ndarray,
    layers,
    batch_size: int = 256,
    progress: bool = True,
    write=None,
) -> dict:
    """Activations at the answer position for every prompt at every layer of ``layers`` (an int
    or a list), all from ONE forward pass per batch, plus the LM's own first-token verdict.

    Prompts are sorted by length so that batches need little padding; results come back in row
    order. Returns ``activations`` {layer: float32 [N, d]} and per-row numpy arrays; with
    ``write(layer, rows, h)`` given (a file writer), each batch goes there instead and
    ``activations`` is None, so that memory holds one batch, not N x d per layer.
    """
    from tqdm import tqdm

    layers = [layers] if isinstance(layers, int) else list(layers)
    n = len(prompt_ids)
    order = np.argsort([len(p) for p in prompt_ids], kind="stable")
    activations = {} if write is None else None
    predicted = np.zeros(n, dtype=np.int64)
    logprob = np.zeros(n, dtype=np.float32)
    device = next(model.parameters()).device
    keeps_logits = takes_logits_to_keep(model)
    for start in tqdm(range(0, n, batch_size), disable=not progress, unit="batch", desc="activations"):
        index = order[start : start + batch_size]
        batch = [prompt_ids[i] for i in index]
        ids, mask = right_padded(batch, tokenizer.pad_token_id)
        positions = torch.tensor([len(p) - 1 for p in batch], device=device)
        captured: dict = {}
        with torch.inference_mode(), residual_capture(model, layers, positions, captured):
            if keeps_logits:  # the LM head at the answer position only, not at every token
                next_token = (
                    model(input_ids=ids.to(device), attention_mask=mask.to(device), logits_to_keep=positions[:, None])
                    .logits[:, 0]
                    .float()
                )
            else:
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
                next_token = logits[torch.arange(len(batch), device=device), positions].float()
        logprobs = torch.log_softmax(next_token, dim=-1).cpu()
        for layer in layers:
            h = captured[layer].cpu()
            if write is not None:
                write(layer, index, h)
                continue
            if layer not in activations:
                activations[layer] = torch.empty((n, h.shape[1]), dtype=torch.float32)
            activations[layer][torch.from_numpy(index)] = h
        predicted[index] = logprobs.argmax(-1).numpy()
        logprob[index] = logprobs[torch.arange(len(index)), torch.from_numpy(answer_first_token[index])].numpy()
    return {
        "activations": activations,
        "lm_predicted_first_token": predicted,
        "lm_first_token_logprob": logprob,
        "lm_first_token_correct": predicted == answer_first_token,
    }


INDEX_COLUMNS = (
    "row",
    "person_id",
    "full_name",
    "rule_idx",
    "rule_name",
    "template_idx",
    "split",
    "question",
    "answer",
    "answer_first_token",
    "lm_predicted_first_token",
    "lm_first_token_correct",
    "lm_first_token_logprob",
)


def encode_prompts(tokenizer, rows: list[dict]) -> tuple[list[list[int]], np.ndarray]:
    """Prompt ids (formatted exactly as in LM training) and each answer's first token id."""
    encoded = encode_rows(tokenizer, rows)
    return encoded.prompt_ids, np.array([a[0] for a in encoded.answer_ids], dtype=np.int64)


def index_table(rows: list[dict], first_tokens: np.ndarray, verdict: dict):
    """The index shared by every layer's file: one row per QA row, in input order."""
    import pandas as pd

    return pd.DataFrame(
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
            "lm_predicted_first_token": verdict["lm_predicted_first_token"],
            "lm_first_token_correct": verdict["lm_first_token_correct"],
            "lm_first_token_logprob": verdict["lm_first_token_logprob"],
        },
        columns=list(INDEX_COLUMNS),
    )


def build_activation_tables(
    model, tokenizer, rows: list[dict], layers: list[int], batch_size: int = 256, progress=True
):
    """({layer: activations [N, d] float32}, index DataFrame), every layer from one pass, in memory."""
    prompt_ids, first_tokens = encode_prompts(tokenizer, rows)
    result = collect_activations(model, tokenizer, prompt_ids, first_tokens, layers, batch_size, progress)
    return result["activations"], index_table(rows, first_tokens, result)


def build_activation_table(model, tokenizer, rows: list[dict], layer: int, batch_size: int = 256, progress=True):
    """(activations [N, d] float32, index DataFrame with one row per QA row, in input order)."""
    tables, index = build_activation_tables(model, tokenizer, rows, [layer], batch_size, progress)
    return tables[layer], index


# Storage dtypes: safetensors code, numpy dtype of the bytes written, torch dtype. numpy has no
# bfloat16, so its bits are written as uint16.
STORAGE_DTYPES = {
    "float32": ("F32", np.float32, torch.float32),
    "float16": ("F16", np.float16, torch.float16),
    "bfloat16": ("BF16", np.uint16, torch.bfloat16),
}
HOOK_DESCRIPTION = "residual stream after `layer` blocks (-1: last block, before ln_f)"


class LayerFileWriter:
    """One layer's [N, d] activations written straight into a safetensors file, rows in any order.

    The header is written first and the data region memory-mapped, so that a job collecting every
    layer holds one batch in memory, not N x d per layer (4.2M rows x 768 x 13 layers of GPT-2 small
    would be 168 GB). The file is a plain safetensors file, read back by ``load_activation_table``.
    """

    def __init__(self, path, rows: int, width: int, dtype: str, metadata: dict[str, str]):
        code, self.numpy_dtype, self.torch_dtype = STORAGE_DTYPES[dtype]
        nbytes = rows * width * np.dtype(self.numpy_dtype).itemsize
        header = {
            "__metadata__": metadata,
            "activations": {"dtype": code, "shape": [rows, width], "data_offsets": [0, nbytes]},
        }
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as safetensors' own writer does
        with open(path, "wb") as handle:
            handle.write(struct.pack("<Q", len(raw)) + raw)
            handle.truncate(8 + len(raw) + nbytes)
        self.data = (
            np.memmap(path, dtype=self.numpy_dtype, mode="r+", offset=8 + len(raw), shape=(rows, width))
            if nbytes
            else None
        )

    def write(self, rows: np.ndarray, h: torch.Tensor) -> None:
        stored = h.to(self.torch_dtype)
        if self.torch_dtype == torch.bfloat16:
            stored = stored.view(torch.int16)
        self.data[rows] = stored.numpy().view(self.numpy_dtype)

    def close(self) -> None:
        if self.data is not None:
            self.data.flush()
            self.data = None


def layer_of_file(path) -> int:
    """The layer label L of an activation file, named ``layer_<L>.safetensors`` (rules/activations.smk)."""
    match = re.fullmatch(r"layer_(-?\d+)\.safetensors", Path(path).name)
    if not match:
        raise BiosaeError(f"{path}: not an activation file name (layer_<L>.safetensors)")
    return int(match.group(1))


def write_activation_files(
    model,
    tokenizer,
    rows: list[dict],
    layer_paths: dict,
    index_path,
    dtype: str = "float32",
    model_dir="",
    batch_size: int = 256,
    progress=True,
):
    """Every layer of ``layer_paths`` ({layer: path}) from one forward pass per batch, one
    safetensors file per layer in ``dtype``, plus the index table; each written atomically.
    Returns the index."""
    if dtype not in STORAGE_DTYPES:
        raise BiosaeError(f"activations.dtype: {dtype!r} is not one of {', '.join(STORAGE_DTYPES)}")
    if not rows:
        raise BiosaeError(f"{index_path}: no QA rows to collect activations for")
    prompt_ids, first_tokens = encode_prompts(tokenizer, rows)
    with contextlib.ExitStack() as stack:
        temporary = {layer: stack.enter_context(atomic_path(path)) for layer, path in layer_paths.items()}
        writers: dict = {}

        def write(layer, batch_rows, h):
            if layer not in writers:
                metadata = {
                    "layer": str(layer),
                    "blocks": str(resolve_layer(model, layer)),
                    "model": str(model_dir),
                    "rows": str(len(rows)),
                    "dtype": dtype,
                    "hook": HOOK_DESCRIPTION,
                    # a batch's composition moves the last bits of a CPU matmul: biosae.api
                    # reproduces a stored row with the same batches
                    "batch_size": str(batch_size),
                }
                writers[layer] = LayerFileWriter(temporary[layer], len(rows), h.shape[1], dtype, metadata)
            writers[layer].write(batch_rows, h)

        result = collect_activations(
            model, tokenizer, prompt_ids, first_tokens, list(layer_paths), batch_size, progress, write=write
        )
        for writer in writers.values():
            writer.close()
        index = index_table(rows, first_tokens, result)
        with atomic_path(index_path) as tmp:
            index.to_csv(tmp, index=False)
    return index


def activation_file_metadata(tensor_path) -> dict[str, str]:
    """The header metadata of an activation file (layer, blocks, model, rows, dtype, hook, batch_size)."""
    with safe_open(str(tensor_path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def load_activation_table(tensor_path, index_path):
    import pandas as pd

    activations = load_tensors(tensor_path)
    if "activations" not in activations:
        raise BiosaeError(f"{tensor_path}: no 'activations' tensor")
    table = activations["activations"]
    if table.ndim != 2 or not table.is_floating_point():
        raise BiosaeError(
            f"{tensor_path}: 'activations' is {table.dtype} of shape {tuple(table.shape)}, "
            f"expected a 2-D float tensor [rows, d_model]"
        )
    try:
        index = pd.read_csv(index_path, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise BiosaeError(f"{index_path}: cannot read the activation index ({error})") from None
    missing = set(INDEX_COLUMNS) - set(index.columns)
    if missing:
        raise BiosaeError(f"{index_path}: columns missing: {sorted(missing)}")
    if len(index) != table.shape[0]:
        raise BiosaeError(f"{index_path}: {len(index)} rows but {tensor_path} holds {table.shape[0]}")
    return table.float(), index  # 16-bit storage is read back as float32


def load_activation_tables(*tables):
    """:func:`load_activation_table` of each (tensor file, index file) pair, joined: each pair's rows
    after the previous pairs', ``row`` numbered over the whole. One pair is read as it is."""
    import pandas as pd

    loaded = [load_activation_table(tensor_path, index_path) for tensor_path, index_path in tables]
    if len(loaded) == 1:
        return loaded[0]
    index = pd.concat([table for _, table in loaded], ignore_index=True)
    index["row"] = np.arange(len(index))
    return torch.cat([activations for activations, _ in loaded]), index
