"""``sae_slot``: the supervised 6-slot SAE as a localization method, error term kept.

- ablation of rule r: slot r's weight set to 0 (``z'_r = 0``);
- interchange: the base takes the source's slot weights, ``decode(z_src) + (h - decode(z))``;
- steering A -> B: the AlignSAE-style swap, ``z'_A = 0, z'_B = alpha``;
- read-out: the argmax slot.
The decoder-direction ablation stays in metrics.json's ``ablation.direction`` section.
"""

from __future__ import annotations

import numpy as np
import torch

from biosae.evaluation.interventions import slot_ablation, slot_swap
from biosae.methods.base import Edit, LocalizationMethod


class SaeSlotMethod(LocalizationMethod):
    name = "sae_slot"
    steerable = True

    def __init__(self, sae):
        self.sae = sae
        self.rank = sae.cfg.n_slots

    def ablation_edit(self, rule: int) -> Edit:
        return slot_ablation(self.sae, rule)

    def interchange_edit(self, source_h: torch.Tensor) -> Edit:
        with torch.no_grad():
            source_z = self.sae.encode(source_h.float())
        return lambda h: self.sae(h, z_edit=source_z, error_term=True)

    def steering_edit(self, source_rules: torch.Tensor, target_rule: int, alpha: float) -> Edit:
        return slot_swap(self.sae, source_rules, target_rule, alpha)

    @torch.no_grad()
    def read_out(self, h: torch.Tensor) -> np.ndarray:
        return self.sae.slot_logits(h.float()).argmax(dim=-1).numpy()
