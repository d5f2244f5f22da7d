"""``sae_slot``: the supervised 6-slot SAE as a localization method, a featurizer.

Its features are the slot weights ``z = encode(h)`` and its inverse is the decoder; slot r
carries rule r. So (biosae.evaluation.edits), error term kept:

- ablation of rule r: slot r's weight set to 0 (``z'_r = 0``);
- interchange: the base takes the source's slot weights, ``decode(z_src) + (h - decode(z))``;
- steering A -> B: the AlignSAE-style swap, ``z'_A = 0, z'_B = alpha``;
- read-out: the argmax slot logit.
The decoder-direction ablation stays in metrics.json's ``ablation.direction`` section.
"""

from __future__ import annotations

import torch

from biosae.errors import BiosaeError
from biosae.methods.base import FeaturizerMethod, FitInputs


class SaeSlotMethod(FeaturizerMethod):
    name = "sae_slot"
    steerable = True

    def __init__(self, sae):
        self.sae = sae
        self.rule_features = list(range(sae.cfg.n_slots))

    @property
    def rank(self) -> int:
        return self.sae.cfg.n_slots

    def features(self, h: torch.Tensor) -> torch.Tensor:
        return self.sae.encode(h)

    def inverse(self, features: torch.Tensor) -> torch.Tensor:
        return self.sae.decode(features)

    def rule_scores(self, h: torch.Tensor) -> torch.Tensor:
        return self.sae.slot_logits(h.float())


def fit_sae_slot(inputs: FitInputs) -> SaeSlotMethod:
    if inputs.sae is None:
        raise BiosaeError("method sae_slot: no trained supervised SAE given")
    return SaeSlotMethod(inputs.sae)
