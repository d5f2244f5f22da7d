"""The TopK SAE in SAELens's on-disk format, for ``sae_lens.SAE.load_from_disk`` (sae-lens 6.x).

SAELens reads a directory with ``cfg.json`` (its ``TopKSAEConfig``: ``architecture: topk``,
``d_in``, ``d_sae``, ``k``, ``dtype``, ``device``, ``apply_b_dec_to_input``,
``normalize_activations``, ``metadata`` with ``hook_name``, ...) and ``sae_weights.safetensors``
(``W_enc`` ``[d_in, d_sae]``, ``b_enc``, ``W_dec`` ``[d_sae, d_in]``, ``b_dec``). Its TopK encode
of raw activations ``h`` is ``TopK(ReLU((h - b_dec) W_enc + b_enc))`` and its decode
``f W_dec + b_dec``.

Ours (biosae.sae.topk) runs the same maps on the standardized ``x = (h - mean) / std``. Both
standardization maps are affine and per dimension, so they fold into the weights exactly:
``(x - b_dec) W_enc = (h - (mean + std * b_dec)) (W_enc / std)`` and ``std * (f W_dec + b_dec) +
mean = f (W_dec * std) + (mean + std * b_dec)``. The export writes

- ``W_enc' = W_enc / std[:, None]``, ``b_enc' = b_enc``,
- ``W_dec' = W_dec * std[None, :]``, ``b_dec' = mean + std * b_dec``,

with ``apply_b_dec_to_input: true`` and ``normalize_activations: none``: SAELens's ``encode`` of
raw activations gives our latents, its ``decode`` our reconstruction in raw space. The fold is
computed in float64 and stored in float32, so the two differ by float32 rounding (about 1e-6
relative); a row whose k-th and (k+1)-th pre-activations are that close may pick the other latent.
ReLU before or after the top-k selection gives the same latents (ReLU is monotone).

The supervised SAE has no SAELens form: its latent ``z`` is ``softmax(slot_logits / temp_end)``, a
normalization across the 6 slots, and SAELens's architectures (standard ReLU, gated, JumpReLU,
TopK, BatchTopK) each activate a latent from its own pre-activation or by a top-k selection, never
by a softmax; its value heads have no place in SAELens's state dict either. docs/saelens.md says
what our own loader offers instead.
"""

from __future__ import annotations

from pathlib import Path

import torch

from biosae.io import save_tensors, write_json
from biosae.lm.layers import depth
from biosae.sae.topk import TopKSAE

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
# SAELens reads a cfg.json whose metadata.sae_lens_version is below 6.0 as the older format (and
# renames keys): the export is written in the 6.x format and says so.
SAELENS_FORMAT_VERSION = "6.0.0"


def transformer_lens_hook_name(layer: int, n_blocks: int) -> str:
    """TransformerLens's name of our hook point ``layer`` (the residual stream after ``layer``
    blocks; -1 the last block's output, before the final layer norm)."""
    blocks = depth(layer, n_blocks)
    return "blocks.0.hook_resid_pre" if blocks == 0 else f"blocks.{blocks - 1}.hook_resid_post"


@torch.no_grad()
def saelens_topk_tensors(model: TopKSAE) -> dict[str, torch.Tensor]:
    """A one-layer TopK SAE's ``W_enc``, ``b_enc``, ``W_dec``, ``b_dec`` in SAELens's layout, the
    standardization folded in (the module docstring)."""
    model.require_one_layer("SAELens export")
    mean, std = model.mean[0].double(), model.std[0].double()
    tensors = {
        "W_enc": model.encoder_weight[0].double() / std[:, None],
        "b_enc": model.encoder_bias[0].double(),
        "W_dec": model.decoder_weight[0].double() * std[None, :],
        "b_dec": mean + std * model.decoder_bias[0].double(),
    }
    return {name: tensor.float().cpu().contiguous() for name, tensor in tensors.items()}


def saelens_topk_config(model: TopKSAE, metadata: dict) -> dict:
    """SAELens 6.x's cfg.json of the exported ``model``; ``metadata`` (hook_name, model_name, ...)
    joins SAELens's own metadata keys."""
    return {
        "architecture": "topk",
        "d_in": model.cfg.d_model,
        "d_sae": model.cfg.n_latents,
        "k": model.cfg.k,
        "rescale_acts_by_decoder_norm": False,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"sae_lens_version": SAELENS_FORMAT_VERSION, **metadata},
    }


def save_saelens_topk(directory, model: TopKSAE, metadata: dict) -> Path:
    """Write ``model`` as SAELens's ``cfg.json`` and ``sae_weights.safetensors`` into ``directory``."""
    directory = Path(directory)
    write_json(directory / CFG_FILENAME, saelens_topk_config(model, metadata))
    save_tensors(directory / WEIGHTS_FILENAME, saelens_topk_tensors(model))
    return directory
