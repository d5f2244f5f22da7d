"""The interface every localization method implements, and the shared subspace featurizer.

A localization method (MIB's "featurizer") says where the rule variable ("which attribute is
asked") lives in the residual stream at the hook layer. Every method provides the same edits, so
that ablation, interchange and steering are written once (biosae.methods.comparison) and every
method is scored on the same prompts:

- ``ablation_edit(rule)``: remove what the method says carries rule ``rule``;
- ``interchange_edit(source_h)``: give each base prompt the source prompt's value of the variable
  (``source_h[i]`` is the activation of row i's source at the hook layer);
- ``steering_edit(source_rules, target_rule, alpha)``: push rule-A prompts towards rule B
  (additive methods only; None otherwise);
- ``read_out(h)``: the rule the method reads from each activation (None if it has no read-out).

An edit is a function ``h [N, d] -> h' [N, d]`` on raw activations (float32).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from biosae.rules import RULES

Edit = Callable[[torch.Tensor], torch.Tensor]
# Singular values below this fraction of the largest are dropped from a method's span: DiffMean's
# six directions sum to zero, so they span only five dimensions.
RANK_TOLERANCE = 1e-6


class LocalizationMethod:
    """Base class: a name, and the four operations above."""

    name: str = ""
    steerable: bool = False

    def ablation_edit(self, rule: int) -> Edit:
        raise NotImplementedError

    def interchange_edit(self, source_h: torch.Tensor) -> Edit:
        raise NotImplementedError

    def steering_edit(self, source_rules: torch.Tensor, target_rule: int, alpha: float) -> Edit | None:
        return None

    def read_out(self, h: torch.Tensor) -> np.ndarray | None:
        return None


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


def project_out(direction: torch.Tensor) -> Edit:
    """Remove the component of h along a unit ``direction`` (the seed's direction ablation)."""
    def edit(h: torch.Tensor) -> torch.Tensor:
        return h - (h @ direction)[:, None] * direction

    return edit


class SubspaceMethod(LocalizationMethod):
    """A method given by directions in activation space (DiffMean, probe, DAS, random).

    - ``basis`` [k, d], orthonormal rows: the subspace the variable lives in. Interchange replaces
      the base's component in it with the source's: ``h + (h_src - h) B^T B``.
    - ``ablation_directions`` [6, d], unit rows: ablating rule r projects its direction out.
    - ``rule_means`` [6, d] (optional): the train cell's class means. Steering A -> B adds
      ``alpha * (mu_B - mu_A) B^T B``, the move from the rule-A mean to the rule-B mean within the
      method's subspace (for DiffMean that is exactly ``alpha * (mu_B - mu_A)``).
    - ``readout_weights`` [6, d] and ``readout_bias`` [6] (optional): the read-out is
      ``argmax(h W^T + b)``.
    """

    def __init__(self, name: str, basis: torch.Tensor, ablation_directions: torch.Tensor,
                 rule_means: torch.Tensor | None = None, readout_weights: torch.Tensor | None = None,
                 readout_bias: torch.Tensor | None = None, steerable: bool = False):
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

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """The component of ``h`` in the method's subspace."""
        return (h @ self.basis.T) @ self.basis

    def ablation_edit(self, rule: int) -> Edit:
        return project_out(self.ablation_directions[rule])

    def interchange_edit(self, source_h: torch.Tensor) -> Edit:
        source = source_h.float()

        def edit(h: torch.Tensor) -> torch.Tensor:
            return h + self.project(source - h)

        return edit

    def steering_edit(self, source_rules: torch.Tensor, target_rule: int, alpha: float) -> Edit | None:
        if not self.steerable:
            return None
        shift = self.project(self.rule_means[target_rule][None, :] - self.rule_means[source_rules])

        def edit(h: torch.Tensor) -> torch.Tensor:
            return h + alpha * shift

        return edit

    def read_out(self, h: torch.Tensor) -> np.ndarray | None:
        if self.readout_weights is None:
            return None
        logits = h.float() @ self.readout_weights.T
        if self.readout_bias is not None:
            logits = logits + self.readout_bias
        return logits.argmax(dim=1).numpy()
