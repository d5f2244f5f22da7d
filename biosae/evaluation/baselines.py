"""Baselines that give the SAE's slot accuracy a meaning: chance, the question's words, a probe.

- ``chance_accuracy``: guessing one of the six rules uniformly.
- ``BagOfWordsClassifier``: reads the question text alone, with the person's full name removed,
  so it can only use the wording. If it scores as high as the SAE on a cell, that cell's rule is
  written in its words and the activations add nothing the question didn't say.
- ``LinearProbe`` (biosae.methods.probe): the best linear read-out of the rule from the same
  activations the SAE sees; an upper reference for a 6-slot encoder that is linear too.

Both classifiers are the same multinomial logistic regression (biosae.methods.probe's
SoftmaxRegression), fitted on the train cell; deterministic without a seed. numpy and torch only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from biosae.dataset.text import words
from biosae.methods.probe import LinearProbe, SoftmaxRegression, label_tensor
from biosae.rules import RULES

__all__ = ["BagOfWordsClassifier", "LinearProbe", "chance_accuracy", "question_words_without_name"]


def chance_accuracy(n_rules: int = len(RULES)) -> float:
    """Expected accuracy of a uniform guess among ``n_rules`` rules (the cells are balanced)."""
    return 1.0 / n_rules


def question_words_without_name(question: str, full_name: str) -> list[str]:
    """The question's words (biosae.dataset.text.words) with every occurrence of the full name cut out.

    The name is matched as its whole word sequence ("alice b johnson"); "'s" after it stays, as it
    is part of the wording. A question that doesn't contain the name keeps all its words.
    """
    tokens = words(question)
    name = words(full_name)
    kept, i = [], 0
    while i < len(tokens):
        if name and tokens[i : i + len(name)] == name:
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
        self._model = SoftmaxRegression(n_rules, l2, max_iter)
        self.vocabulary: dict[str, int] = {}

    def _features(
        self, texts: Sequence[str], full_names: Sequence[str], question_words: list[list[str]] | None = None
    ) -> torch.Tensor:
        if len(texts) != len(full_names):
            raise ValueError(f"{len(texts)} texts but {len(full_names)} full names")
        if question_words is None:
            question_words = [question_words_without_name(text, name) for text, name in zip(texts, full_names)]
        # one scatter for all rows: assigning row by row costs ~1 s over a run's 42,000 questions
        rows, columns = [], []
        for row, kept in enumerate(question_words):
            present = {self.vocabulary[w] for w in kept if w in self.vocabulary}
            rows.extend([row] * len(present))
            columns.extend(present)
        features = torch.zeros(len(texts), len(self.vocabulary), dtype=torch.float64)
        features[torch.tensor(rows, dtype=torch.long), torch.tensor(columns, dtype=torch.long)] = 1.0
        return features

    def fit(self, texts: Sequence[str], full_names: Sequence[str], rule_idx) -> BagOfWordsClassifier:
        if len(texts) != len(full_names):
            raise ValueError(f"{len(texts)} texts but {len(full_names)} full names")
        question_words = [question_words_without_name(text, name) for text, name in zip(texts, full_names)]
        vocabulary = sorted({w for kept in question_words for w in kept})
        self.vocabulary = {word: column for column, word in enumerate(vocabulary)}
        self._model.fit(self._features(texts, full_names, question_words), label_tensor(rule_idx))
        return self

    def predict(self, texts: Sequence[str], full_names: Sequence[str]) -> np.ndarray:
        """The predicted rule index of each question, int64[N]."""
        return self._model.logits(self._features(texts, full_names)).argmax(dim=1).numpy()

    def accuracy(self, texts: Sequence[str], full_names: Sequence[str], rule_idx) -> float:
        return float((self.predict(texts, full_names) == label_tensor(rule_idx).numpy()).mean())
