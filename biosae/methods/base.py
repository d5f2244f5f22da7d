"""What a localization method is: the contract every method fulfils, and what it is fitted from.

A localization method (MIB's "featurizer", its ``model_units``) says where the rule variable
("which attribute is asked") lives in the residual stream at the hook layer. It says only that:
ablation, interchange, steering, detection and faithfulness are derived from it once, in the
evaluation (biosae.evaluation.edits, biosae.evaluation.comparison), so that every method is
tested the same way on the same prompts. A method is one of two kinds:

- :class:`FeaturizerMethod`: ``features(h)`` and ``inverse(features)``, with the error term
  ``h - inverse(features(h))`` kept by every edit, and ``rule_features``, the feature that carries
  each rule (the supervised SAE: its slots);
- :class:`SubspaceMethod`, a linear method: the orthonormal basis of its subspace, one ablation
  direction per rule, the train cell's class means (for steering) and read-out weights
  (DiffMean, the probe, DAS, the TopK SAE's chosen latents, the random control).

Either gives ``rule_scores(h)`` when it has a read-out: detection and faithfulness read its argmax.
A method is fitted by a function of one :class:`FitInputs` (biosae.methods.registry names them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from biosae.rules import RULES

# Singular values below this fraction of the largest are dropped from a method's span: DiffMean's
# six directions sum to zero, so they span only five dimensions.
RANK_TOLERANCE = 1e-6


@dataclass
class FitInputs:
    """What a method's fit function may use: the train cell's activations at the hook layer and
    their asked rules, the seed, and the trained artifacts (None where not given)."""

    train_activations: torch.Tensor  # [N, d], the train cell's rows
    train_rule_idx: np.ndarray  # [N], the asked rule of each row
    seed: int = 0
    sae: object = None  # the supervised SAE (biosae.sae.model.SupervisedSAE)
    das_basis: torch.Tensor | None = None  # [k, d], the trained DAS subspace
    unsupervised_sae: object = None  # the trained TopK SAE (biosae.methods.unsupervised_sae.TopKSAE)
    causal_saes: dict | None = None  # method name -> its fine-tuned SupervisedSAE (biosae.methods.sae_slot_causal)
    probe: object = None  # a LinearProbe fitted on the same rows already, or None
    rank: int | None = None  # a control's rank (biosae.methods.registry.build_methods)


class LocalizationMethod:
    """Base class: a name, a rank, whether it steers, and its read-out."""

    name: str = ""
    steerable: bool = False

    @property
    def rank(self) -> int:
        raise NotImplementedError

    def rule_scores(self, h: torch.Tensor) -> torch.Tensor | None:
        """[N, 6]: how strongly each activation reads as each rule (the read-out is the argmax);
        None: the method has no read-out."""
        return None


class FeaturizerMethod(LocalizationMethod):
    """A method given by features of the activation: ``features(h)`` [N, m] and
    ``inverse(features)`` [N, d]; ``rule_features[r]`` is the feature that carries rule r."""

    rule_features: list[int]

    def features(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def inverse(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def rule_scores(self, h: torch.Tensor) -> torch.Tensor | None:
        return self.features(h.float())[:, self.rule_features]


def orthonormal_basis(vectors: torch.Tensor) -> torch.Tensor:
    """Rows spanning the same subspace as the rows of ``vectors`` [m, d], orthonormal, rank-revealing."""
    u, s, vh = torch.linalg.svd(vectors.double(), full_matrices=False)
    keep = s > RANK_TOLERANCE * s.max() if s.numel() else s.bool()
    return vh[keep].float()


def unit_rows(vectors: torch.Tensor) -> torch.Tensor:
    norms = vectors.norm(dim=1, keepdim=True)
    return vectors / torch.where(norms > 0, norms, torch.ones_like(norms))


def class_means(activations: torch.Tensor, rule_idx) -> torch.Tensor:
    """[6, d]: the mean activation of each rule's rows (a rule without rows is a BiosaeError upstream)."""
    rules = torch.as_tensor(np.asarray(rule_idx), dtype=torch.long)
    h = activations.double()
    return torch.stack([h[rules == r].mean(dim=0) for r in range(len(RULES))]).float()


class SubspaceMethod(LocalizationMethod):
    """A method given by directions in activation space.

    - ``basis`` [k, d], orthonormal rows: the subspace the variable lives in (interchange swaps
      the component in it);
    - ``ablation_directions`` [6, d], unit rows: ablating rule r removes ``ablation_amount(h, r)``
      times rule r's direction;
    - ``rule_means`` [6, d] (optional): the train cell's class means; steering moves between them
      within the subspace;
    - ``readout_weights`` [6, d] and ``readout_bias`` [6] (optional): the read-out scores
      ``h W^T + b``.
    """

    def __init__(
        self,
        name: str,
        basis: torch.Tensor,
        ablation_directions: torch.Tensor,
        rule_means: torch.Tensor | None = None,
        readout_weights: torch.Tensor | None = None,
        readout_bias: torch.Tensor | None = None,
        steerable: bool = False,
    ):
        self.name = name
        self.basis = orthonormal_basis(basis)
        self.ablation_directions = unit_rows(ablation_directions.float())
        self.rule_means = None if rule_means is None else rule_means.float()
        self.readout_weights = None if readout_weights is None else readout_weights.float()
        self.readout_bias = None if readout_bias is None else readout_bias.float()
        self.steerable = steerable and rule_means is not None

    @property
    def rank(self) -> int:
        return int(self.basis.shape[0])

    def ablation_amount(self, h: torch.Tensor, rule: int) -> torch.Tensor:
        """[N]: how much of rule ``rule``'s ablation direction each row holds, the amount that
        ablation removes: the orthogonal projection on the unit direction."""
        return h @ self.ablation_directions[rule]

    def rule_scores(self, h: torch.Tensor) -> torch.Tensor | None:
        if self.readout_weights is None:
            return None
        logits = h.float() @ self.readout_weights.T
        if self.readout_bias is not None:
            logits = logits + self.readout_bias
        return logits
