"""``probe``: the linear probe, and its class directions as a localization method (AxBench's "probe").

:class:`LinearProbe` is a multinomial logistic regression from standardized activations to the
asked rule: L2 penalty on the weights, zero initialization, full-batch L-BFGS in float64. The
objective is convex and nothing is sampled, so a fit is deterministic without a seed. The
evaluation reports it as a baseline of the SAE's slot accuracy too (biosae.evaluation.baselines).

As a method (fitted on the train cell) it scores rule r as ``((h - m) / s) . W_r + b_r``; in raw
activation space its class direction is ``W_r / s``. A subspace method
(biosae.methods.base.SubspaceMethod) with these directions: ablation projects ``W_r / s`` out,
interchange swaps the component in their span, steering A -> B adds the class-mean difference
projected on that span. Read-out: the probe's own scores.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from biosae.methods.base import FitInputs, SubspaceMethod, class_means
from biosae.rules import RULES


@contextmanager
def _one_thread():
    """Run torch ops on one thread inside the block, then restore the previous count.

    A multi-threaded BLAS may split a product differently from one call to the next (MKL adjusts
    its threads to the machine's load), so the last bits of a float64 product can differ between
    two runs, enough to move a prompt that sits near the probe's decision boundary from one rule
    to another. These fits take well under a second on one thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class SoftmaxRegression:
    """Multinomial logistic regression: loss = mean CE + l2/2 * ||W||^2 (the bias is free)."""

    def __init__(self, n_classes: int, l2: float, max_iter: int):
        self.n_classes = n_classes
        self.l2 = l2
        self.max_iter = max_iter
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None

    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> SoftmaxRegression:
        labels = labels.long()
        if features.shape[0] != labels.shape[0] or features.shape[0] == 0:
            raise ValueError(f"fit: {features.shape[0]} feature rows, {labels.shape[0]} labels")
        if labels.min() < 0 or labels.max() >= self.n_classes:
            raise ValueError(f"fit: labels must lie in [0, {self.n_classes})")
        weight = torch.zeros(features.shape[1], self.n_classes, dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(self.n_classes, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [weight, bias],
            lr=1.0,
            max_iter=self.max_iter,
            history_size=20,
            tolerance_grad=1e-7,
            tolerance_change=1e-10,
            line_search_fn="strong_wolfe",
        )

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(features @ weight + bias, labels) + 0.5 * self.l2 * weight.pow(2).sum()
            loss.backward()
            return loss

        with _one_thread():
            optimizer.step(closure)
        self.weight, self.bias = weight.detach(), bias.detach()
        return self

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            raise RuntimeError("predict before fit")
        with _one_thread():
            return features @ self.weight + self.bias


def _float64(array) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.detach().to(device="cpu", dtype=torch.float64)
    return torch.as_tensor(np.asarray(array), dtype=torch.float64)


def label_tensor(array) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().long().reshape(-1)
    return torch.as_tensor(np.asarray(array, dtype=np.int64).reshape(-1))


class LinearProbe:
    """Multinomial logistic regression from standardized activations to the asked rule.

    Standardization uses the training rows' mean and standard deviation (a constant feature is
    only centred). N ~ 3000 rows of d = 256 fit in well under a second on a CPU.
    """

    def __init__(self, n_rules: int = len(RULES), l2: float = 1e-3, max_iter: int = 200):
        self._model = SoftmaxRegression(n_rules, l2, max_iter)
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def _standardize(self, activations) -> torch.Tensor:
        if self.mean is None:
            raise RuntimeError("predict before fit")
        x = _float64(activations)
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"activations: expected [N, {self.mean.shape[0]}], got {tuple(x.shape)}")
        return (x - self.mean) / self.std

    def fit(self, activations, rule_idx) -> LinearProbe:
        x = _float64(activations)
        if x.ndim != 2:
            raise ValueError(f"activations: expected [N, d], got {tuple(x.shape)}")
        self.mean = x.mean(dim=0)
        std = x.std(dim=0, unbiased=False)
        self.std = torch.where(std > 1e-8, std, torch.ones_like(std))
        self._model.fit(self._standardize(x), label_tensor(rule_idx))
        return self

    def logits(self, activations) -> torch.Tensor:
        """[N, n_rules] float64: each row's score for each rule."""
        return self._model.logits(self._standardize(activations))

    def predict(self, activations) -> np.ndarray:
        """The predicted rule index of each row, int64[N]."""
        return self.logits(activations).argmax(dim=1).numpy()

    def class_directions(self) -> torch.Tensor:
        """[n_rules, d] float32: each class's weight vector in raw activation space (``W_r / std``),
        the direction along which h raises rule r's logit."""
        if self._model.weight is None:
            raise RuntimeError("class_directions before fit")
        return (self._model.weight / self.std[:, None]).T.float()

    def accuracy(self, activations, rule_idx) -> float:
        return float((self.predict(activations) == label_tensor(rule_idx).numpy()).mean())


class ProbeMethod(SubspaceMethod):
    def __init__(self, probe: LinearProbe, means: torch.Tensor):
        directions = probe.class_directions()
        super().__init__("probe", basis=directions, ablation_directions=directions, rule_means=means, steerable=True)
        self.probe = probe
        self.directions = directions

    def rule_scores(self, h: torch.Tensor) -> torch.Tensor:
        return self.probe.logits(h)


def fit_probe(inputs: FitInputs) -> ProbeMethod:
    """``inputs.probe``: a LinearProbe already fitted on the same rows (the evaluation's baseline), or None."""
    probe = inputs.probe or LinearProbe().fit(inputs.train_activations, np.asarray(inputs.train_rule_idx))
    return ProbeMethod(probe, class_means(inputs.train_activations, inputs.train_rule_idx))
