"""``random``: the control. A random unit direction per rule for ablation (the seed's
random-direction control, the same directions as metrics.json's ``ablation.random_direction``) and a
random orthonormal subspace for interchange, of the rank given (the largest rank of the compared
methods, so that the control is never smaller than what it controls for). No steering, no read-out.
"""

from __future__ import annotations

import torch

from biosae.methods.base import FitInputs, SubspaceMethod
from biosae.rules import RULES


def random_directions(d_model: int, count: int, seed: int) -> torch.Tensor:
    """[count, d_model]: seeded random unit vectors."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(count, d_model, generator=generator)
    return directions / directions.norm(dim=1, keepdim=True)


def fit_random(inputs: FitInputs) -> SubspaceMethod:
    """``inputs.rank``: the subspace's rank (biosae.methods.registry.build_methods sets it)."""
    d_model, seed = inputs.train_activations.shape[1], inputs.seed
    ablation = random_directions(d_model, len(RULES), seed=seed + 7919)
    generator = torch.Generator().manual_seed(seed + 104729)
    subspace = torch.randn(min(inputs.rank, d_model), d_model, generator=generator)
    return SubspaceMethod("random", basis=subspace, ablation_directions=ablation)
