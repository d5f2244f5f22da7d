"""``sae_unsupervised``: an ordinary TopK sparse autoencoder trained without labels, and the
latent per rule that best detects it (AxBench's "SAE-A").

The comparison the supervised SAE's premise rests on (AlignSAE: supervised beats unsupervised).
The SAE itself (Gao et al. 2024's TopK architecture, its training on the train cell only, like
every method, and its checkpoints) is biosae.sae.topk.

Per rule r, the chosen latent ``j_r`` is the one whose pre-activation best separates rule-r rows
Per rule r, the chosen latent ``j_r`` is the one whose pre-activation best separates rule-r rows
from the others on the train cell (highest AUROC). As a method it is a subspace
(biosae.methods.base.SubspaceMethod) whose ablation is the latent's, error term kept:
- ablation of rule r: latent ``j_r`` set to 0, i.e. ``h - std * W_dec[:, j_r] * f_{j_r}(h)``
  (its ablation direction is the latent's raw decoder direction, its amount the latent);
- interchange and steering: on the span of the chosen latents' decoder directions (in raw
  activation space, ``std * W_dec[:, j_r]``);
- read-out: ``argmax_r`` of the chosen latents' pre-activations (never all-zero ties).
"""

from __future__ import annotations

import numpy as np
import torch

from biosae.errors import BiosaeError
from biosae.methods.base import FitInputs, SubspaceMethod, class_means
from biosae.rules import RULES
from biosae.sae.topk import TopKSAE


def average_ranks(scores: torch.Tensor) -> np.ndarray:
    """[rows, n_latents] rank (1 = lowest) of each row's score within its column, tied values
    sharing the average of their ranks."""
    s = scores.double().numpy()
    order = s.argsort(axis=0, kind="stable")
    ranks = np.empty_like(s)
    np.put_along_axis(ranks, order, np.arange(1, len(s) + 1, dtype=np.float64)[:, None].repeat(s.shape[1], 1), axis=0)
    # average the ranks of tied values, column by column only where ties exist
    for column in range(s.shape[1]):
        values = s[:, column]
        unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
        if len(unique) < len(values):
            sums = np.bincount(inverse, weights=ranks[:, column])
            ranks[:, column] = (sums / counts)[inverse]
    return ranks


def auroc_from_ranks(ranks: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """[n_latents] AUROC of each column for ``positive`` rows vs the rest, from
    :func:`average_ranks` (Mann-Whitney U)."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    u = ranks[positive].sum(axis=0) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def auroc_by_latent(scores: torch.Tensor, positive: np.ndarray) -> np.ndarray:
    """[n_latents] AUROC of each score column for ``positive`` rows vs the rest (Mann-Whitney U,
    average ranks for ties)."""
    return auroc_from_ranks(average_ranks(scores), positive)


def choose_latents(model: TopKSAE, train_activations: torch.Tensor, train_rule_idx) -> tuple[list[int], list[float]]:
    """Per rule, the latent whose pre-activation detects it best on the train cell, and its AUROC."""
    rules = np.asarray(train_rule_idx)
    with torch.no_grad():
        scores = model.pre_activations(train_activations.float())
    # The ranks don't depend on the rule: sorted once for all six rules (sorting the 512 columns
    # takes ~0.25 s on a default train cell).
    ranks = average_ranks(scores)
    chosen, auroc = [], []
    for r in range(len(RULES)):
        values = auroc_from_ranks(ranks, rules == r)
        chosen.append(int(values.argmax()))
        auroc.append(float(values.max()))
    return chosen, auroc


class UnsupervisedSAEMethod(SubspaceMethod):
    def __init__(self, model: TopKSAE, latents: list[int], means: torch.Tensor):
        directions = model.raw_decoder_directions().detach()[latents]
        super().__init__(
            "sae_unsupervised", basis=directions, ablation_directions=directions, rule_means=means, steerable=True
        )
        self.model, self.latents = model, list(latents)
        # decode(f with f_j = 0) + error term = h - f_j(h) * (raw decoder direction j)
        self.ablation_directions = directions

    def ablation_amount(self, h: torch.Tensor, rule: int) -> torch.Tensor:
        with torch.no_grad():
            return self.model.encode(h.float())[:, self.latents[rule]]

    def rule_scores(self, h: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model.pre_activations(h.float())[:, self.latents]


def fit_unsupervised_method(inputs: FitInputs) -> UnsupervisedSAEMethod:
    """The trained TopK SAE (``inputs.unsupervised_sae``) with its latent per rule."""
    if inputs.unsupervised_sae is None:
        raise BiosaeError("method sae_unsupervised: no trained unsupervised SAE given")
    model, train_activations, train_rule_idx = inputs.unsupervised_sae, inputs.train_activations, inputs.train_rule_idx
    latents, _ = choose_latents(model, train_activations, train_rule_idx)
    return UnsupervisedSAEMethod(model, latents, class_means(train_activations, train_rule_idx))
