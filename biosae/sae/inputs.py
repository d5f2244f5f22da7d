"""What the SAE trains on, derived from the activation index: rows, rules and value targets.

A value head predicts a rule's answer first token among that rule's candidates: the distinct
first tokens of that rule's answers over all QA rows (a label vocabulary, the same for every
cell). Only rows of the ``train`` cell are trained on, all of them or a seeded subsample
(``sae.max_train_rows``) when the cell is large.
"""

from __future__ import annotations

import numpy as np
import torch

from biosae.rules import RULES


def value_candidates(index) -> dict[str, list[int]]:
    return {rule: sorted(set(index.loc[index["rule_idx"] == r, "answer_first_token"].astype(int)))
            for r, rule in enumerate(RULES)}


def value_targets(index, candidates: dict[str, list[int]]) -> np.ndarray:
    """Each row's answer first token as an index into its rule's candidate list."""
    lookup = {rule: {token: i for i, token in enumerate(tokens)} for rule, tokens in candidates.items()}
    return np.array([lookup[RULES[r]][int(t)] for r, t in zip(index["rule_idx"], index["answer_first_token"])],
                    dtype=np.int64)


def training_rows(index, max_rows: int | None = None, seed: int = 0) -> np.ndarray:
    """Bool mask of the rows the SAE trains on: the train cell, or, when it holds more than
    ``max_rows`` (> 0), a random subsample of that many of its rows, drawn from ``seed`` alone:
    the same rows in every run with that seed, for every layer and for the untrained LM."""
    train = (index["split"] == "train").to_numpy(copy=True)
    if max_rows and train.sum() > max_rows:
        chosen = np.random.default_rng(seed).choice(np.flatnonzero(train), size=max_rows, replace=False)
        train = np.zeros(len(train), dtype=bool)
        train[chosen] = True
    return train


def training_tensors(activations: torch.Tensor, index, candidates, max_rows: int | None = None, seed: int = 0):
    """(activations, rule_idx, value_target) of the training rows (``training_rows``), as tensors."""
    train = training_rows(index, max_rows, seed)
    rule_idx = torch.from_numpy(index["rule_idx"].to_numpy(dtype=np.int64, copy=True))  # writable: no torch warning
    targets = torch.from_numpy(value_targets(index, candidates))
    mask = torch.from_numpy(train)
    return activations[mask], rule_idx[mask], targets[mask]
