"""Regression fixture of SAE training: the weights and logs that today's code trains on fixed inputs.

Trains, on seeded synthetic activations (3 layers, 240 rows, d_model 16, fp32, one thread):
- the supervised SAE of all 3 layers in one call, and of layer 0 alone;
- the TopK SAE the same way.
Each trained model is saved with the pipeline's own save function and read back, so the fixture
holds the tensors exactly as a finished run stores them (names, shapes and values), plus each
model's log rows. tests/test_sae.py trains again with the current code and asserts equality to
the last few ulps (another CPU's kernels round differently; tests/test_sae.py says how far): a
refactor of the SAE code must leave training and the on-disk format unchanged.

Regenerate only when training is meant to change (never in a refactor)::

    .venv/bin/python tests/data/make_sae_reference.py
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from biosae.io import load_tensors, save_tensors
from biosae.sae.model import SAEConfig, save_sae
from biosae.sae.topk import TopKSAEConfig, save_topk_sae, train_topk_sae, train_topk_sae_layers
from biosae.sae.training import train_sae, train_sae_layers

REFERENCE_TENSORS = Path(__file__).with_name("sae_reference.safetensors")
REFERENCE_HISTORIES = Path(__file__).with_name("sae_reference.json")
WEIGHTS_FILENAME = "sae.safetensors"  # the name both SAEs' save functions write


def reference_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(activations ``[3, 240, 16]``, rule_idx ``[240]``, value_target ``[240]``): a rule's center
    plus noise, each layer scaled and shifted differently, so that the layers train apart."""
    generator = torch.Generator().manual_seed(31)
    rule_idx = torch.arange(6).repeat(40)
    value_target = torch.randint(0, 3, (240,), generator=generator)
    centers = 2 * torch.randn(3, 6, 16, generator=generator)
    noise = torch.randn(3, 240, 16, generator=generator)
    scale = torch.tensor([0.5, 1.0, 3.0]).view(3, 1, 1)
    h = (centers[:, rule_idx] + noise) * scale + torch.arange(3.0).view(3, 1, 1)
    return h, rule_idx, value_target


def supervised_config() -> SAEConfig:
    return SAEConfig(
        d_model=16, value_vocab_sizes=[3] * 6, epochs=3, batch_size=32, validation_fraction=0.25, lr=3e-3, seed=7
    )


def topk_config() -> TopKSAEConfig:
    # 11 epochs: the log rows of epochs 1, 10 and the last
    return TopKSAEConfig(d_model=16, n_latents=32, k=4, epochs=11, batch_size=64, lr=3e-3, seed=7)


def train_references() -> tuple[dict[str, torch.Tensor], dict[str, list[dict]]]:
    """Train the four reference runs with the current code, on one thread; return (every saved
    tensor, keyed ``run.layerI.tensor``; every log, keyed ``run.layerI``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        h, rule_idx, value_target = reference_inputs()
        cfg, topk_cfg = supervised_config(), topk_config()
        runs = {
            "supervised_stack": (save_sae, train_sae_layers(list(h), rule_idx, value_target, cfg, progress=False)),
            "supervised_alone": (save_sae, [train_sae(h[0], rule_idx, value_target, cfg, progress=False)]),
            "topk_stack": (save_topk_sae, train_topk_sae_layers(h, topk_cfg)),
            "topk_alone": (save_topk_sae, [train_topk_sae(h[0], topk_cfg)]),
        }
    finally:
        torch.set_num_threads(threads)
    tensors, histories = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for run, (save, trained) in runs.items():
            for layer, (model, history) in enumerate(trained):
                directory = Path(tmp) / run / f"layer{layer}"
                save(directory, model)
                for name, tensor in load_tensors(directory / WEIGHTS_FILENAME).items():
                    tensors[f"{run}.layer{layer}.{name}"] = tensor
                histories[f"{run}.layer{layer}"] = history
    return tensors, histories


if __name__ == "__main__":
    tensors, histories = train_references()
    save_tensors(REFERENCE_TENSORS, tensors)
    REFERENCE_HISTORIES.write_text(json.dumps(histories, indent=1) + "\n")
    print(f"wrote {REFERENCE_TENSORS} ({REFERENCE_TENSORS.stat().st_size} bytes) and {REFERENCE_HISTORIES}")
