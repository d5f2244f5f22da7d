"""Baselines that give the SAE's slot accuracy a meaning: chance, the question's words, a probe.

- ``chance_accuracy``: guessing one of the six rules uniformly.
- ``BagOfWordsClassifier``: reads the question text alone, with the person's full name removed,
  so it can only use the wording. If it scores as high as the SAE on a cell, that cell's rule is
  written in its words and the activations add nothing the question didn't say.
- ``LinearProbe``: the best linear read-out of the rule from the same activations the SAE sees;
  an upper reference for a 6-slot encoder that is linear too.

Both classifiers are multinomial logistic regressions fitted on the train cell: L2 penalty on the
weights, zero initialization, full-batch L-BFGS in float64. The objective is convex and nothing is
sampled, so a fit is deterministic without a seed. numpy and torch only.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from biosae.rules import RULES
from biosae.dataset.text import words


def chance_accuracy(n_rules: int = len(RULES)) -> float:
    """Expected accuracy of a uniform guess among ``n_rules`` rules (the cells are balanced)."""
    return 1.0 / n_rules


@contextmanager
def _one_thread():
    """Run torch ops on one thread inside the block, then restore the previous count.

    A multi-threaded BLAS may split a product differently from one call to the next (MKL adjusts
    its threads to the machine's load), so the last bits of a float64 product can differ between
    two runs; on a probe whose rows sit near its decision boundary, that once moved one prompt in
    216 (CI: 0.9167 against 0.9213, the same pipeline locally and on SLURM). These fits take well
    under a second on one thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _SoftmaxRegression:
    """Multinomial logistic regression: loss = mean CE + l2/2 * ||W||^2 (the bias is free)."""

    def __init__(self, n_classes: int, l2: float, max_iter: int):
        self.n_classes = n_classes
        self.l2 = l2
        self.max_iter = max_iter
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None

    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> "_SoftmaxRegression":
        labels = labels.long()
        if features.shape[0] != labels.shape[0] or features.shape[0] == 0:
            raise ValueError(f"fit: {features.shape[0]} feature rows, {labels.shape[0]} labels")
        if labels.min() < 0 or labels.max() >= self.n_classes:
            raise ValueError(f"fit: labels must lie in [0, {self.n_classes})")
        weight = torch.zeros(features.shape[1], self.n_classes, dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(self.n_classes, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [weight, bias], lr=1.0, max_iter=self.max_iter, history_size=20,
            tolerance_grad=1e-7, tolerance_change=1e-10, line_search_fn="strong_wolfe",
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


def _labels(array) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().long().reshape(-1)
    return torch.as_tensor(np.asarray(array, dtype=np.int64).reshape(-1))


def question_words_without_name(question: str, full_name: str) -> list[str]:
    """The question's words (biosae.dataset.text.words) with every occurrence of the full name cut out.

    The name is matched as its whole word sequence ("alice b johnson"); "'s" after it stays, as it
    is part of the wording. A question that doesn't contain the name keeps all its words.
    """
    tokens = words(question)
    name = words(full_name)
    kept, i = [], 0
    while i < len(tokens):
        if name and tokens[i:i + len(name)] == name:
            i += len(name)
            continue
        kept.append(tokens[i])
        i += 1
    return kept


class BagOfWordsClassifier:
    """Predicts the rule from the question's words alone, names removed (it reads only the wording).

    Features: presence (0/1) of each word of the training questions' vocabulary; a word never seen
    in training is ignored. Fit on the train cell's questions.
    """

    def __init__(self, n_rules: int = len(RULES), l2: float = 1e-3, max_iter: int = 200):
        self._model = _SoftmaxRegression(n_rules, l2, max_iter)
        self.vocabulary: dict[str, int] = {}

    def _features(self, texts: Sequence[str], full_names: Sequence[str],
                  question_words: list[list[str]] | None = None) -> torch.Tensor:
        if len(texts) != len(full_names):
            raise ValueError(f"{len(texts)} texts but {len(full_names)} full names")
        if question_words is None:
            question_words = [question_words_without_name(text, name) for text, name in zip(texts, full_names)]
        # one scatter for all rows: assigning row by row took ~1 s over a run's 42,000 questions
        rows, columns = [], []
        for row, kept in enumerate(question_words):
            present = {self.vocabulary[w] for w in kept if w in self.vocabulary}
            rows.extend([row] * len(present))
            columns.extend(present)
        features = torch.zeros(len(texts), len(self.vocabulary), dtype=torch.float64)
        features[torch.tensor(rows, dtype=torch.long), torch.tensor(columns, dtype=torch.long)] = 1.0
        return features

    def fit(self, texts: Sequence[str], full_names: Sequence[str], rule_idx) -> "BagOfWordsClassifier":
        if len(texts) != len(full_names):
            raise ValueError(f"{len(texts)} texts but {len(full_names)} full names")
        question_words = [question_words_without_name(text, name) for text, name in zip(texts, full_names)]
        vocabulary = sorted({w for kept in question_words for w in kept})
        self.vocabulary = {word: column for column, word in enumerate(vocabulary)}
        self._model.fit(self._features(texts, full_names, question_words), _labels(rule_idx))
        return self

    def predict(self, texts: Sequence[str], full_names: Sequence[str]) -> np.ndarray:
        """The predicted rule index of each question, int64[N]."""
        return self._model.logits(self._features(texts, full_names)).argmax(dim=1).numpy()

    def accuracy(self, texts: Sequence[str], full_names: Sequence[str], rule_idx) -> float:
        return float((self.predict(texts, full_names) == _labels(rule_idx).numpy()).mean())


class LinearProbe:
    """Multinomial logistic regression from standardized activations to the asked rule.

    Standardization uses the training rows' mean and standard deviation (a constant feature is
    only centred). N ~ 3000 rows of d = 256 fit in well under a second on a CPU.
    """

    def __init__(self, n_rules: int = len(RULES), l2: float = 1e-3, max_iter: int = 200):
        self._model = _SoftmaxRegression(n_rules, l2, max_iter)
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def _standardize(self, activations) -> torch.Tensor:
        if self.mean is None:
            raise RuntimeError("predict before fit")
        x = _float64(activations)
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"activations: expected [N, {self.mean.shape[0]}], got {tuple(x.shape)}")
        return (x - self.mean) / self.std

    def fit(self, activations, rule_idx) -> "LinearProbe":
        x = _float64(activations)
        if x.ndim != 2:
            raise ValueError(f"activations: expected [N, d], got {tuple(x.shape)}")
        self.mean = x.mean(dim=0)
        std = x.std(dim=0, unbiased=False)
        self.std = torch.where(std > 1e-8, std, torch.ones_like(std))
        self._model.fit(self._standardize(x), _labels(rule_idx))
        return self

    def predict(self, activations) -> np.ndarray:
        """The predicted rule index of each row, int64[N]."""
        return self._model.logits(self._standardize(activations)).argmax(dim=1).numpy()

    def class_directions(self) -> torch.Tensor:
        """[n_rules, d] float32: each class's weight vector in raw activation space (``W_r / std``),
        the direction along which h raises rule r's logit."""
        if self._model.weight is None:
            raise RuntimeError("class_directions before fit")
        return (self._model.weight / self.std[:, None]).T.float()

    def accuracy(self, activations, rule_idx) -> float:
        return float((self.predict(activations) == _labels(rule_idx).numpy()).mean())
