"""Value read-outs that read the answer the way the LM does: a tuned lens gated by the slot.

The seed's value heads (biosae.sae.model) are linear classifiers trained on the train cell's
rows; they learn each seen person's answer and miss unseen persons' (at the seed's hook, 0.93 on
seen persons' new wordings against 0.31 on unseen persons). The LM itself reads the answer out of
the last block's output through its final norm and unembedding, for every person. So this
read-out does the same from any layer L:

1. an affine translator from layer L's space into the last block's output space, fitted by
   ridge least squares on the train cell's rows (a tuned lens, Belrose et al. 2023, with the
   last block's state as its target instead of the output distribution); at the last block it is
   the identity;
2. the LM's own final norm and unembedding (biosae.lm.activations.next_token_logits);
3. the argmax among the candidate first tokens of one rule: the rule of the SAE's argmax slot
   (``lens_by_slot``, the read-out the SAE offers) or, as a reference that separates the gate's
   errors from the lens's, the asked rule (``lens_by_rule``).

Seen persons are read on ``ood_template`` (new wordings, persons of the train cell), unseen
persons on ``ood_person`` (the training wordings, persons never trained on): the translator and
the heads see neither cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from biosae.lm.activations import next_token_logits
from biosae.rules import RULES

SEEN_PERSONS_CELL = "ood_template"
UNSEEN_PERSONS_CELL = "ood_person"
# Relative ridge: lambda = RIDGE * trace(X'X) / d. It keeps the normal equations well posed when a
# layer's activations are near low-rank (the embeddings at layer 0); fixed, never tuned on a cell.
RIDGE = 1e-4
READOUTS = ("value_heads", "lens_by_slot", "lens_by_rule")
ROW_CHUNK = 4096


@dataclass
class AffineTranslator:
    """``h -> (h - mean) @ weight + target_mean``: layer L's space into the last block's."""

    mean: torch.Tensor  # [d]
    weight: torch.Tensor  # [d, d_last]
    target_mean: torch.Tensor  # [d_last]

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        return ((h.double() - self.mean) @ self.weight + self.target_mean).float()


def fit_translator(h: torch.Tensor, last_block: torch.Tensor, ridge: float = RIDGE) -> AffineTranslator:
    """Ridge least squares of ``last_block`` [N, d_last] on ``h`` [N, d], in float64."""
    x, y = h.double(), last_block.double()
    mean, target_mean = x.mean(dim=0), y.mean(dim=0)
    x, y = x - mean, y - target_mean
    gram = x.T @ x
    scale = float(torch.trace(gram)) / gram.shape[0] if gram.shape[0] else 0.0
    weight = torch.linalg.solve(gram + ridge * max(scale, 1e-12) * torch.eye(gram.shape[0], dtype=x.dtype), x.T @ y)
    return AffineTranslator(mean, weight, target_mean)


def candidate_argmax(logits: torch.Tensor, candidates: dict[str, list[int]], gate_rules: np.ndarray) -> np.ndarray:
    """Per row: the index, in its gate rule's candidate list, of the candidate token with the
    highest logit (comparable with biosae.sae.inputs.value_targets)."""
    predictions = np.zeros(len(gate_rules), dtype=np.int64)
    for r, rule in enumerate(RULES):
        rows = np.flatnonzero(gate_rules == r)
        if len(rows) and candidates.get(rule):
            tokens = torch.tensor(candidates[rule], dtype=torch.long)
            predictions[rows] = logits[torch.from_numpy(rows)[:, None], tokens].argmax(dim=-1).numpy()
    return predictions


def lens_predictions(
    model,
    activations: torch.Tensor,
    last_block: torch.Tensor | None,
    train: np.ndarray,
    candidates,
    gates,
    rows: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """{name: candidate index per row} of the lens read-out gated by each of ``gates`` ({name:
    rule index per row}), on the rows where the bool mask ``rows`` is set (default: all; -1
    elsewhere). ``last_block``: the same rows at hook -1, whose train rows fit the translator
    (None at the last block itself: the lens is the LM's own read-out)."""
    rows = np.ones(len(activations), dtype=bool) if rows is None else np.asarray(rows, dtype=bool)
    read = activations[torch.from_numpy(rows.copy())]
    if last_block is not None:
        mask = torch.from_numpy(np.asarray(train, dtype=bool).copy())
        read = fit_translator(activations[mask], last_block[mask])(read)
    logits = torch.cat([next_token_logits(model, chunk) for chunk in read.split(ROW_CHUNK)])
    out = {}
    for name, rules in gates.items():
        predictions = np.full(len(rows), -1, dtype=np.int64)
        predictions[rows] = candidate_argmax(logits, candidates, np.asarray(rules)[rows])
        out[name] = predictions
    return out


def seen_unseen(value_accuracy: dict) -> dict:
    """{read-out: {"seen": float|None, "unseen": float|None, "gap": float|None}} from
    metrics.json's ``value_accuracy`` (the heads under their key ``sae``)."""
    keys = {"value_heads": "sae", "lens_by_slot": "lens_by_slot", "lens_by_rule": "lens_by_rule"}
    out = {}
    for readout, key in keys.items():
        seen = (value_accuracy.get(SEEN_PERSONS_CELL) or {}).get(key)
        unseen = (value_accuracy.get(UNSEEN_PERSONS_CELL) or {}).get(key)
        gap = None if seen is None or unseen is None else seen - unseen
        out[readout] = {"seen": seen, "unseen": unseen, "gap": gap}
    return out
