"""``diffmedian``: DiffMean with class medians instead of class means.

m_r is the coordinate-wise median of the train cell's rule-r activations; rule r's direction is
``w_r = m_r - mean_{s != r} m_s``. A median is not pulled by a few outlying prompts, so neither
are the directions. Like DiffMean it is a subspace method: it says where the rule lives, and the
evaluation derives ablation, interchange, steering, detection and faithfulness from that.
"""

from __future__ import annotations

import numpy as np
import torch

from biosae.methods.base import FitInputs, SubspaceMethod, unit_rows
from biosae.methods.diffmean import diffmean_directions
from biosae.rules import RULES


def class_medians(activations: torch.Tensor, rule_idx) -> torch.Tensor:
    """[6, d]: the coordinate-wise median of each rule's rows."""
    rules = torch.as_tensor(np.asarray(rule_idx), dtype=torch.long)
    h = activations.float()
    return torch.stack([h[rules == r].median(dim=0).values for r in range(len(RULES))])


def fit_diffmedian(inputs: FitInputs) -> SubspaceMethod:
    medians = class_medians(inputs.train_activations, inputs.train_rule_idx)
    directions = diffmean_directions(medians.double()).float()
    unit = unit_rows(directions)
    return SubspaceMethod(
        "diffmedian",
        basis=directions,  # interchange swaps the component in their span
        ablation_directions=directions,  # ablating rule r projects w_r out
        rule_means=medians,  # steering A -> B moves from m_A towards m_B
        readout_weights=unit,  # detection: argmax_r w_r/|w_r| . (h - c)
        readout_bias=-(unit @ medians.mean(dim=0)),
        steerable=True,
    )
