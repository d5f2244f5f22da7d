"""``diffmean``: AxBench's difference of class means, one direction per rule.

mu_r is the mean train-cell activation of rule r; rule r's direction is
``w_r = mu_r - mean_{s != r} mu_s``. The six directions sum to zero, so they span five dimensions:
enough for a six-valued variable. As a subspace method (biosae.methods.base.SubspaceMethod):
ablation projects w_r out; steering A -> B adds ``alpha * (mu_B - mu_A)``; interchange swaps the
component in the span of the w_r. Read-out (AxBench's detection ``h . w``):
``argmax_r w_r/|w_r| . (h - c)``, c the mean of the class means.
"""

from __future__ import annotations

import torch

from biosae.methods.base import FitInputs, SubspaceMethod, class_means, unit_rows
from biosae.rules import RULES


def diffmean_directions(means: torch.Tensor) -> torch.Tensor:
    """[6, d]: ``mu_r`` minus the mean of the other rules' means."""
    n = means.shape[0]
    others = (means.sum(dim=0, keepdim=True) - means) / (n - 1)
    return means - others


def fit_diffmean(inputs: FitInputs) -> SubspaceMethod:
    means = class_means(inputs.train_activations, inputs.train_rule_idx)
    directions = diffmean_directions(means.double()).float()
    unit = unit_rows(directions)
    centre = means.mean(dim=0)
    method = SubspaceMethod(
        "diffmean",
        basis=directions,
        ablation_directions=directions,
        rule_means=means,
        readout_weights=unit,
        readout_bias=-(unit @ centre),
        steerable=True,
    )
    method.directions = directions
    assert method.rank <= len(RULES)
    return method
