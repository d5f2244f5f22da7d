"""What the SAE trains on, derived from the activation index: rows, rules and value targets.

A value head predicts a rule's answer first token among that rule's candidates: the distinct
first tokens of that rule's answers over all QA rows (a label vocabulary, the same for every
cell). Only rows of the ``train`` cell are trained on, all of them or a seeded subsample
(``sae.max_train_rows``) when the cell is large.
"""

from __future__ import annotations

import numpy as np
import torch

from biosae.errors import BiosaeError
from biosae.rules import RULES
from biosae.sae.model import SAEConfig


def value_candidates(index) -> dict[str, list[int]]:
    return {
        rule: sorted(set(index.loc[index["rule_idx"] == r, "answer_first_token"].astype(int)))
        for r, rule in enumerate(RULES)
    }


def value_targets(index, candidates: dict[str, list[int]]) -> np.ndarray:
    """Each row's answer first token as an index into its rule's candidate list."""
    lookup = {rule: {token: i for i, token in enumerate(tokens)} for rule, tokens in candidates.items()}
    return np.array(
        [lookup[RULES[r]][int(t)] for r, t in zip(index["rule_idx"], index["answer_first_token"])], dtype=np.int64
    )


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


def load_training_layers(activation_paths, index_path, max_rows: int | None = None, seed: int = 0):
    """(training activations ``[L, N, d]``, rule_idx, value_target, candidates, index) for the SAE
    of every layer in ``activation_paths`` (files sharing ``index_path``): one file at a time,
    keeping only its training rows, which are the same rows for every layer (:func:`training_rows`).
    Peak memory: the ``[L, N, d]`` result plus one layer's whole file."""
    from biosae.lm.activations import load_activation_table

    stacked, candidates = None, None
    for layer, path in enumerate(activation_paths):
        activations, index = load_activation_table(path, index_path)
        candidates = candidates or value_candidates(index)
        h, rule_idx, value_target = training_tensors(activations, index, candidates, max_rows, seed)
        if stacked is None:
            stacked = torch.empty(len(activation_paths), *h.shape, dtype=h.dtype)
        if h.shape != stacked.shape[1:]:
            raise BiosaeError(
                f"{path}: activations of shape {tuple(h.shape)} after row selection, the other "
                f"layers' are {tuple(stacked.shape[1:])}"
            )
        stacked[layer] = h
        del activations, h
    return stacked, rule_idx, value_target, candidates, index


def sae_config(section: dict, d_model: int, candidates: dict[str, list[int]], seed: int) -> SAEConfig:
    """The SAEConfig of the config's ``sae`` section for activations of width ``d_model``."""
    hyper = {key: value for key, value in section.items() if key not in ("n_slots", "max_train_rows")}
    return SAEConfig(
        d_model=d_model,
        value_vocab_sizes=[len(candidates[rule]) for rule in candidates],
        n_slots=section["n_slots"],
        seed=seed,
        **hyper,
    )
