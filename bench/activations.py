"""Section 4, activation collection: the activations job's work against a plain batched forward."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from biosae.devices import pick_device
from biosae.lm.activations import encode_prompts, write_activation_files
from biosae.lm.layers import profile_layers
from biosae.lm.qa_accuracy import right_padded

from .common import Sizes, say, seconds_of


@dataclass
class ActivationCollection:
    prompts: int
    batch_size: int
    layers: list[int]  # the profile's hook points, all collected in one pass
    dtype: str
    collection_seconds: float
    ceiling_seconds: float  # the plain forward
    one_layer_seconds: float  # the collection at the seed's layer only
    tokenize_seconds: float

    @property
    def collection_prompts_per_s(self) -> float:
        return self.prompts / self.collection_seconds

    @property
    def ceiling_prompts_per_s(self) -> float:
        return self.prompts / self.ceiling_seconds

    @property
    def fraction(self) -> float:
        """Of the plain forward's speed: the target's figure."""
        return self.ceiling_seconds / self.collection_seconds


@torch.inference_mode()
def plain_forward(model, batches) -> None:
    for ids, mask in batches:
        model(input_ids=ids, attention_mask=mask)


def measure_activations(config, lm, model, sizes: Sizes, workdir: Path) -> ActivationCollection:
    """Prompts/s of the activations job's work (write_activation_files: tokenizing, every hook point
    of the layer profile from one pass, the per-layer files and the index) ÷ the ceiling: the same
    length-sorted batches through model(input_ids, attention_mask) and nothing else. Also the
    same collection at the seed's layer only, for the cost of the other layers."""
    _, tokenizer, rows, _ = lm
    batch_size, dtype = config["activations"]["batch_size"], config["activations"]["dtype"]
    layers = profile_layers(config, config["model"]["n_layer"])
    device = pick_device()
    model.to(device).eval()
    tokenize_seconds, (prompt_ids, _) = seconds_of(encode_prompts, tokenizer, rows)
    order = np.argsort([len(p) for p in prompt_ids], kind="stable")
    batches = []
    for start in range(0, len(order), batch_size):
        ids, mask = right_padded([prompt_ids[i] for i in order[start : start + batch_size]], tokenizer.pad_token_id)
        batches.append((ids.to(device), mask.to(device)))
    plain_forward(model, batches[:1])  # warm-up
    workdir.mkdir(parents=True, exist_ok=True)

    def collect(collected_layers):
        paths = {layer: workdir / f"layer_{layer}.safetensors" for layer in collected_layers}
        write_activation_files(
            model, tokenizer, rows, paths, workdir / "index.csv", dtype, batch_size=batch_size, progress=False
        )

    ceiling, collection, one_layer = math.inf, math.inf, math.inf
    for _ in range(sizes.activation_repeats):
        ceiling = min(ceiling, seconds_of(plain_forward, model, batches)[0])
        collection = min(collection, seconds_of(collect, layers)[0])
        one_layer = min(one_layer, seconds_of(collect, [config["activations"]["layer"]])[0])
    result = ActivationCollection(
        prompts=len(rows),
        batch_size=batch_size,
        layers=layers,
        dtype=dtype,
        collection_seconds=collection,
        ceiling_seconds=ceiling,
        one_layer_seconds=one_layer,
        tokenize_seconds=tokenize_seconds,
    )
    say(
        f"[activations] {result.prompts} prompts at {len(layers)} hook points: collection "
        f"{result.collection_prompts_per_s:,.0f}/s, plain forward {result.ceiling_prompts_per_s:,.0f}/s, fraction "
        f"{result.fraction:.2f} (one layer only: {one_layer:.2f} s, all: {collection:.2f} s)"
    )
    return result
