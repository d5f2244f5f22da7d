"""Causal tests inside the LM's forward pass, at the activation hook point, error term kept.

Every SAE edit is h' = decode(z') + (h - decode(z)) (SupervisedSAE.forward with
``error_term=True``): with a nearly one-hot z the reconstruction is one of ~6 vectors, so all
person-specific information lives in the error term and splicing in the bare reconstruction
would destroy every answer (Marks et al. 2024; SAELens ``use_error_term``).

Edits, for slot k:
- slot ablation: z'_k = 0;
- direction ablation: project slot k's decoder direction (in activation space) out of h, for
  every prompt whatever its rule;
- random-direction control: the same projection for a random unit direction (one per k);
- swap A -> B: z'_A = 0, z'_B = alpha, for a rule-A prompt.
"""

from __future__ import annotations

import numpy as np
import torch

from biosae.activations import answer_position_pass


def slot_direction(sae, slot: int) -> torch.Tensor:
    """Unit vector along which slot ``slot`` moves h in activation space (decode is affine:
    mean + std * (W z + b), so the raw-space direction is std * W[:, slot])."""
    direction = sae.std * sae.decoder.weight[:, slot]
    return (direction / direction.norm()).detach().float()


def random_directions(d_model: int, count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(count, d_model, generator=generator)
    return directions / directions.norm(dim=1, keepdim=True)


def project_out(direction: torch.Tensor):
    def edit(h: torch.Tensor) -> torch.Tensor:
        return h - (h @ direction)[:, None] * direction

    return edit


def slot_ablation(sae, slot: int):
    def z_edit(z):
        z = z.clone()
        z[:, slot] = 0.0
        return z

    return lambda h: sae(h, z_edit=z_edit, error_term=True)


def slot_swap(sae, source_slots: torch.Tensor, target_slot: int, alpha: float):
    """Move each row from its own slot (its rule) to ``target_slot`` with weight ``alpha``."""
    rows = torch.arange(len(source_slots))

    def z_edit(z):
        z = z.clone()
        z[rows, source_slots] = 0.0
        z[:, target_slot] = alpha
        return z

    return lambda h: sae(h, z_edit=z_edit, error_term=True)


@torch.inference_mode()
def edited_predictions(model, prompt_ids, answer_first_token: np.ndarray, pad_id: int, layer: int,
                       edit_for_rows=None, batch_size: int = 256):
    """The LM's first answer token and the correct token's log-prob, with an edit applied.

    ``edit_for_rows(index) -> edit`` builds the edit for the rows ``index`` of a batch (so that
    per-row edits such as swaps line up), or is None for the clean pass.
    """
    n = len(prompt_ids)
    predicted = np.zeros(n, dtype=np.int64)
    answer_logprob = np.zeros(n, dtype=np.float32)
    for start in range(0, n, batch_size):
        index = np.arange(start, min(n, start + batch_size))
        edit = edit_for_rows(index) if edit_for_rows is not None else None
        _, logprobs = answer_position_pass(model, [prompt_ids[i] for i in index], pad_id, layer, edit=edit,
                                           capture=False)
        predicted[index] = logprobs.argmax(-1).numpy()
        answer_logprob[index] = logprobs[torch.arange(len(index)), torch.from_numpy(answer_first_token[index])].numpy()
    return predicted, answer_logprob
