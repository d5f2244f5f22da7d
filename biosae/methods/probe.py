"""``probe``: the linear probe's class directions in activation space (AxBench's "probe").

The probe (biosae.evaluation.baselines.LinearProbe, fitted on the train cell) scores rule r as
``((h - m) / s) . W_r + b_r``; in raw activation space its class direction is ``W_r / s``. The
edits are DiffMean's (biosae.methods.base.SubspaceMethod) with these directions: ablation projects
``W_r / s`` out, interchange swaps the component in their span, steering A -> B adds the class-mean
difference projected on that span. Read-out: the probe's own prediction.
"""

from __future__ import annotations

import numpy as np
import torch

from biosae.evaluation.baselines import LinearProbe
from biosae.methods.base import SubspaceMethod, class_means


class ProbeMethod(SubspaceMethod):
    def __init__(self, probe: LinearProbe, means: torch.Tensor):
        directions = probe.class_directions()
        super().__init__("probe", basis=directions, ablation_directions=directions, rule_means=means, steerable=True)
        self.probe = probe
        self.directions = directions

    def read_out(self, h: torch.Tensor) -> np.ndarray:
        return self.probe.predict(h)


def fit_probe(train_activations: torch.Tensor, train_rule_idx, probe: LinearProbe | None = None) -> ProbeMethod:
    """``probe``: an already fitted LinearProbe on the same rows (the evaluation's baseline), or None."""
    probe = probe or LinearProbe().fit(train_activations, np.asarray(train_rule_idx))
    return ProbeMethod(probe, class_means(train_activations, train_rule_idx))
