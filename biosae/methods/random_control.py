"""``random``: the control. A random unit direction per rule for ablation (the seed's
random-direction control, the same directions as metrics.json's ``ablation.random_direction``) and a
random orthonormal subspace for interchange, of the rank given (the largest rank of the compared
methods, so that the control is never smaller than what it controls for). No steering, no read-out.
"""

from __future__ import annotations

import torch

from biosae.evaluation.interventions import random_directions
from biosae.methods.base import SubspaceMethod
from biosae.rules import RULES


def fit_random(d_model: int, rank: int, seed: int) -> SubspaceMethod:
    ablation = random_directions(d_model, len(RULES), seed=seed + 7919)
    generator = torch.Generator().manual_seed(seed + 104729)
    subspace = torch.randn(min(rank, d_model), d_model, generator=generator)
    return SubspaceMethod("random", basis=subspace, ablation_directions=ablation)
