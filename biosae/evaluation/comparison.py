"""Every localization method through the same tests, on the same prompts, per evaluation cell.

- ablation: the seed's 6x6 matrix (row = ablated rule's edit, column = asked rule) of the
  normalized drop of the LM's first-answer-token accuracy (biosae.evaluation.metrics.ablation_matrix);
- interchange (MIB's IIA): on one seeded, rule-stratified set of base/source pairs per cell
  (biosae.methods.pairs), the share of bases where the LM answers the *base* person's
  source-rule attribute, beside the share that answers the *source* person's (identity leaked)
  and the share left unchanged;
- steering (additive methods): a rule-A prompt pushed to rule B with strength alpha; alpha is
  picked on the train cell (best mean success) from ``evaluate.swap_alphas`` and scored at that
  alpha on every cell, as AxBench picks its factor on held-in data;
- Isolate (RAVEL): on a second set of pairs per cell whose source asks the *same* rule about
  another person, the share where the base's own answer stays; RAVEL's Cause is the IIA and
  Disentanglement D the mean of the two;
- detection: the method's read-out names the asked rule (all rows of the cell);
- faithfulness: on the rows where the LM answers another attribute of the same person than the
  one asked, the share where the method's read-out names the attribute the LM answered.

Each method's edits and read-out come from biosae.evaluation.edits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from biosae.evaluation import metrics as M
from biosae.evaluation.edits import ablation_edit, interchange_edit, read_out, steering_edit
from biosae.lm.prompt_cache import PromptCache, edited_predictions, edited_predictions_many
from biosae.methods.pairs import InterchangePairs
from biosae.rules import RULES


@dataclass
class CausalSample:
    """The causal sample of one cell and its prefix cache, at no layer in particular."""

    rows: np.ndarray  # rows of the activation index, in cache order
    rules: np.ndarray  # asked rule per row
    first: np.ndarray  # correct first answer token per row
    person_tokens: np.ndarray  # [n, 6]: the row's person's first answer token per rule (-1: unknown)
    cache: PromptCache  # prefix keys/values and clean residuals at every hook point


@dataclass
class CellPrompts(CausalSample):
    """A cell's causal sample at one hook layer, with its clean predictions (what every edit is scored against)."""

    layer: int
    clean_pred: np.ndarray | None = None
    clean_logprob: np.ndarray | None = None

    def run(self, edit_for_rows=None):
        return edited_predictions(self.cache, self.first, self.layer, edit_for_rows)

    def run_many(self, edits_for_rows: list):
        """(predicted [E, N], correct-token log-prob [E, N]) for each ``edit_for_rows`` in the list."""
        return edited_predictions_many(self.cache, self.first, self.layer, edits_for_rows)

    def __post_init__(self):
        self.clean_pred, self.clean_logprob = self.run(None)

    @property
    def clean_correct(self) -> np.ndarray:
        return self.clean_pred == self.first


def ablation_edits(method) -> list:
    """Six edit builders (rows -> edit), edit k removing rule k."""
    return [lambda idx, edit=ablation_edit(method, k): edit for k in range(len(RULES))]  # noqa: B008 (bound per k)


def ablation_result(cell: CellPrompts, predicted: np.ndarray, logprob: np.ndarray) -> dict:
    """The 6x6 ablation matrix from the six edited passes' predictions [6, N] and log-probs [6, N]."""
    return M.ablation_matrix(
        cell.rules, cell.clean_correct, predicted == cell.first[None, :], cell.clean_logprob, logprob
    )


def steering_edits(cell: CellPrompts, method, alpha: float) -> list:
    """Six edit builders, edit B moving every prompt from its own rule to rule B with strength alpha."""
    source = torch.tensor(cell.rules)
    return [
        lambda idx, target=target: steering_edit(method, source[idx], target, float(alpha))
        for target in range(len(RULES))
    ]


def steering_result(cell: CellPrompts, predicted: np.ndarray) -> dict:
    """Success: after moving a rule-A prompt to rule B, the LM answers the person's rule-B attribute."""
    hits = np.full((len(RULES), len(cell.rows)), np.nan)
    clean_hits = np.full((len(RULES), len(cell.rows)), np.nan)
    for target in range(len(RULES)):
        off = cell.rules != target
        hits[target, off] = (predicted[target] == cell.person_tokens[:, target])[off]
        clean_hits[target, off] = (cell.clean_pred == cell.person_tokens[:, target])[off]
    return M.swap_matrix(cell.rules, hits, clean_hits)


def _pair_sources(cell: CellPrompts, pairs: InterchangePairs) -> np.ndarray:
    if not np.array_equal(pairs.base_rows, cell.rows):
        raise ValueError("interchange pairs must have the causal sample's rows as bases, in order")
    # A base without a source is its own source (an identity edit) and is not scored.
    return np.where(pairs.scored, pairs.source_rows, pairs.base_rows)


def interchange_edits(cell: CellPrompts, method, pairs: InterchangePairs, activations: torch.Tensor) -> list:
    """One edit builder: each base row takes its source's value of the variable."""
    source_h = activations[torch.from_numpy(_pair_sources(cell, pairs))].float()
    return [lambda idx: interchange_edit(method, source_h[torch.from_numpy(idx)])]


def interchange_result(cell: CellPrompts, predicted: np.ndarray, pairs: InterchangePairs, index) -> dict:
    """IIA from the interchanged pass's predictions [N] (``pairs.base_rows`` = ``cell.rows``)."""
    source_rows = _pair_sources(cell, pairs)
    target_rules = index["rule_idx"].to_numpy()[source_rows]
    base_target = cell.person_tokens[np.arange(len(cell.rows)), target_rules]
    source_answer = index["answer_first_token"].to_numpy()[source_rows]
    known = pairs.scored & (base_target >= 0)
    return M.interchange_result(
        cell.rules[known],
        target_rules[known],
        success=predicted[known] == base_target[known],
        leaked=predicted[known] == source_answer[known],
        unchanged=predicted[known] == cell.clean_pred[known],
        clean_success=cell.clean_pred[known] == base_target[known],
    )


def isolate_result(cell: CellPrompts, predicted: np.ndarray, pairs: InterchangePairs, index) -> dict:
    """RAVEL's Isolate from the pass interchanged on same-rule pairs (predictions [N]): on the
    scored pairs whose clean pass answers the base's own answer, the share where it stays."""
    source_rows = _pair_sources(cell, pairs)
    source_answer = index["answer_first_token"].to_numpy()[source_rows]
    kept = pairs.scored & cell.clean_correct
    return M.isolate_result(
        stays=predicted[kept] == cell.first[kept],
        leaked=(predicted[kept] == source_answer[kept]) & (source_answer[kept] != cell.first[kept]),
    )


class EditBatch:
    """Edits collected under keys, run in as few forward calls as possible, results by key."""

    def __init__(self):
        self.keys, self.edits = [], []

    def add(self, key, edits: list) -> None:
        self.keys.append((key, len(self.edits), len(edits)))
        self.edits.extend(edits)

    def run(self, cell: CellPrompts) -> dict:
        if not self.edits:
            return {}
        predicted, logprob = cell.run_many(self.edits)
        return {key: (predicted[start : start + n], logprob[start : start + n]) for key, start, n in self.keys}


def pick_alpha(train_results: dict) -> float | None:
    """The alpha with the highest mean steering success on the train cell (ties: the smaller)."""
    best, best_value = None, None
    for key, result in sorted(train_results.items(), key=lambda item: float(item[0].split("=")[1])):
        value = result.get("mean_off_diagonal") if result else None
        if value is not None and (best_value is None or value > best_value + 1e-12):
            best, best_value = float(key.split("=")[1]), value
    return best


def readout_tests(
    methods: dict,
    activations: torch.Tensor,
    index,
    cells: list[str],
    answered_rule: np.ndarray,
    untrained_slots: np.ndarray | None,
) -> tuple[dict, dict]:
    """Detection and faithfulness per method and cell, and the faithfulness reference per cell.

    ``answered_rule[i]``: which of the person's attributes the LM's first answer token belongs to
    (biosae.evaluation.metrics.match_answered_rule; 6 = none). ``untrained_slots``: the untrained-LM SAE's
    argmax slot on the same rows (aligned by row), or None.
    """
    rules = index["rule_idx"].to_numpy()
    split = index["split"].to_numpy()
    other_attribute = (answered_rule != rules) & (answered_rule < len(RULES))
    readouts = {name: read_out(method, activations) for name, method in methods.items()}
    per_method = {name: {"detection": {}, "faithfulness": {}} for name in methods}
    reference = {}
    for cell in cells:
        mask = split == cell
        wrong = mask & other_attribute
        for name, readout in readouts.items():
            per_method[name]["detection"][cell] = (
                None if readout is None else M.slot_accuracy(rules[mask], readout[mask])
            )
            per_method[name]["faithfulness"][cell] = (
                None if readout is None else M.faithfulness(readout[wrong], answered_rule[wrong])
            )
        slot_readout = readouts.get("sae_slot")
        reference[cell] = {
            "n": int(wrong.sum()),
            "chance": M.independence_chance(
                slot_readout[wrong] if slot_readout is not None else None, answered_rule[wrong]
            ),
            "uniform_chance": 1.0 / len(RULES),
            "untrained_lm_sae": None
            if untrained_slots is None
            else M.faithfulness(untrained_slots[wrong], answered_rule[wrong])["rate"],
        }
    return per_method, reference
