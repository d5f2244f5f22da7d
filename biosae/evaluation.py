"""Stage 5: the seed's three tests and what a researcher needs beside them, per evaluation cell.

Correlational tests (slot assignment, value heads, baselines) use every row of a cell; causal
tests (ablations, swap) run the LM with edited activations on a rule-stratified sample of at most
``max_prompts_per_cell`` rows per cell (seeded), since each needs 6 forward passes per mode.
All numbers go into one metrics dict (structure: biosae.metrics module docstring).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from biosae import metrics as M
from biosae.activations import encode_prompts
from biosae.baselines import BagOfWordsClassifier, LinearProbe, chance_accuracy
from biosae.interventions import (
    PromptCache,
    edited_predictions,
    project_out,
    random_directions,
    slot_ablation,
    slot_direction,
    slot_swap,
)
from biosae.rules import EVALUATION_CELLS, HARD_CELLS, RULES
from biosae.sae_inputs import value_targets

log = logging.getLogger(__name__)


@dataclass
class EvaluationInputs:
    model: object  # the trained LM (eval mode)
    tokenizer: object
    layer: int
    sae: object
    activations: torch.Tensor
    index: object  # pandas DataFrame, biosae.activations.INDEX_COLUMNS
    candidates: dict
    untrained_sae: object
    untrained_activations: torch.Tensor
    untrained_index: object
    qa_accuracy: dict  # lm_qa_accuracy.json of the LM stage (exact match)


def ordered_cells(index) -> list[str]:
    present = list(dict.fromkeys(index["split"]))
    known = [cell for cell in (*EVALUATION_CELLS, *HARD_CELLS) if cell in present]
    return known + sorted(cell for cell in present if cell not in known)


def causal_sample(index, cell: str, max_prompts: int, seed: int) -> np.ndarray:
    """Row numbers of a seeded, rule-stratified sample of the cell (at most ``max_prompts``)."""
    rng = np.random.default_rng([seed, sum(map(ord, cell))])
    per_rule = max(1, max_prompts // len(RULES))
    chosen = []
    for r in range(len(RULES)):
        rows = np.flatnonzero((index["split"] == cell).to_numpy() & (index["rule_idx"] == r).to_numpy())
        if len(rows) > per_rule:
            rows = np.sort(rng.choice(rows, size=per_rule, replace=False))
        chosen.append(rows)
    return np.concatenate(chosen)


def person_answer_tokens(index) -> dict[str, list]:
    """person_id -> first answer token of each of the six rules (None where never asked)."""
    table: dict[str, list] = {}
    for person, rule, token in zip(index["person_id"], index["rule_idx"], index["answer_first_token"]):
        table.setdefault(person, [None] * len(RULES))[int(rule)] = int(token)
    return table


@torch.no_grad()
def slot_predictions(sae, activations: torch.Tensor) -> np.ndarray:
    return sae.slot_logits(activations).argmax(-1).numpy()


def error_term_diagnostics(activations, reconstruction, rule_idx, split, cells: list[str]) -> dict:
    """What the SAE leaves in its error term ``h - decode(z)``, per cell.

    Slot ablation and swap edit ``decode(z)`` only and keep the error term, so whatever the error
    term says about the asked rule survives them. ``rule_probe_accuracy``: a linear probe fitted
    on the train rows' error terms, scored on the cell's (near the probe on ``h`` itself: the rule
    is still there after the edit; near chance: the slots hold it). ``reconstruction_r2``: share of
    the activations' variance around the train mean that ``decode(z)`` explains.
    """
    def float64(x):
        return x.detach().double() if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x, dtype=np.float64))

    h = float64(activations)
    error = h - float64(reconstruction)
    rule_idx, split = np.asarray(rule_idx), np.asarray(split)
    train = split == "train"
    probe = LinearProbe().fit(error[torch.from_numpy(train)], rule_idx[train])
    predicted = probe.predict(error)
    centred = h - h[torch.from_numpy(train)].mean(dim=0)
    out = {}
    for cell in cells:
        mask = torch.from_numpy(split == cell)
        total = float(centred[mask].pow(2).sum())
        out[cell] = {
            "rule_probe_accuracy": M.slot_accuracy(rule_idx[mask.numpy()], predicted[mask.numpy()]),
            "reconstruction_r2": 1.0 - float(error[mask].pow(2).sum()) / total if total > 0 else None,
        }
    return out


def correlational_metrics(inputs: EvaluationInputs, cells: list[str]) -> dict:
    index, acts = inputs.index, inputs.activations
    rules = index["rule_idx"].to_numpy()
    train = (index["split"] == "train").to_numpy()
    slots = slot_predictions(inputs.sae, acts)
    untrained_slots = slot_predictions(inputs.untrained_sae, inputs.untrained_activations)
    untrained_rules = inputs.untrained_index["rule_idx"].to_numpy()
    untrained_split = inputs.untrained_index["split"].to_numpy()

    bag_of_words = BagOfWordsClassifier().fit(list(index["question"][train]), list(index["full_name"][train]),
                                             rules[train])
    probe = LinearProbe().fit(acts[torch.from_numpy(train)].numpy(), rules[train])
    probe_predictions = probe.predict(acts.numpy())
    bow_predictions = bag_of_words.predict(list(index["question"]), list(index["full_name"]))

    targets = value_targets(index, inputs.candidates)
    value_pred = inputs.sae.value_predictions(acts, torch.from_numpy(rules)).numpy()
    lm_correct = index["lm_first_token_correct"].to_numpy().astype(bool)
    templates = index["template_idx"].to_numpy()

    out = {key: {} for key in ("n_prompts", "slot_accuracy", "confusion", "baselines", "value_accuracy",
                               "lm_qa_accuracy", "asked_vs_answered")}
    with torch.no_grad():
        reconstruction = torch.cat([inputs.sae(rows) for rows in acts.split(4096)])
    out["error_term"] = error_term_diagnostics(acts, reconstruction, rules, index["split"].to_numpy(), cells)
    answers = person_answer_tokens(index)
    for cell in cells:
        mask = (index["split"] == cell).to_numpy()
        out["n_prompts"][cell] = int(mask.sum())
        out["slot_accuracy"][cell] = M.slot_accuracy(rules[mask], slots[mask])
        out["confusion"][cell] = M.confusion_matrix(rules[mask], slots[mask])
        untrained_mask = untrained_split == cell
        out["baselines"][cell] = {
            "chance": chance_accuracy(),
            "bag_of_words": M.slot_accuracy(rules[mask], bow_predictions[mask]),
            "linear_probe": M.slot_accuracy(rules[mask], probe_predictions[mask]),
            "untrained_lm_sae": M.slot_accuracy(untrained_rules[untrained_mask], untrained_slots[untrained_mask]),
        }
        sae_value = M.value_accuracy(value_pred[mask], targets[mask], rules[mask])
        majority = M.majority_baseline_accuracy(targets[train], rules[train], targets[mask], rules[mask])
        out["value_accuracy"][cell] = {
            "sae": sae_value["accuracy"], "majority_baseline": majority["accuracy"],
            "sae_by_rule": sae_value["by_rule"], "majority_baseline_by_rule": majority["by_rule"],
        }
        lm = M.lm_answer_accuracy(lm_correct[mask], rules[mask], templates[mask])
        exact = inputs.qa_accuracy.get(cell, {})
        lm["exact"] = exact.get("exact")
        lm["exact_by_template"] = {k: v["exact"] for k, v in exact.get("by_template", {}).items()}
        out["lm_qa_accuracy"][cell] = lm
        person_ids = index["person_id"].to_numpy()[mask]
        answered = M.match_answered_rule(index["lm_predicted_first_token"].to_numpy()[mask],
                                         [[-1 if t is None else t for t in answers[p]] for p in person_ids],
                                         rules[mask])
        out["asked_vs_answered"][cell] = M.asked_vs_answered(rules[mask], answered)
    return out


def causal_metrics(inputs: EvaluationInputs, cells: list[str], max_prompts: int, alphas, seed: int,
                   progress=None) -> dict:
    index, tokenizer, sae = inputs.index, inputs.tokenizer, inputs.sae
    d_model = inputs.activations.shape[1]
    directions = {
        "direction": [slot_direction(sae, k) for k in range(len(RULES))],
        "random_direction": list(random_directions(d_model, len(RULES), seed=seed + 7919)),
    }
    answers = person_answer_tokens(index)
    ablation = {mode: {} for mode in M.ABLATION_MODES}
    swap = {f"alpha={float(a)}": {} for a in alphas}
    for cell in cells:
        rows = causal_sample(index, cell, max_prompts, seed)
        if len(rows) == 0:
            continue
        sub = index.iloc[rows]
        prompts, first = encode_prompts(tokenizer, sub.to_dict("records"))
        rules = sub["rule_idx"].to_numpy()
        cache = PromptCache(inputs.model, prompts)
        run = lambda edit_for_rows: edited_predictions(cache, first, inputs.layer, edit_for_rows)  # noqa: E731
        clean_pred, clean_logprob = run(None)
        clean_correct = clean_pred == first
        for mode in M.ABLATION_MODES:
            correct, logprob = [], []
            for k in range(len(RULES)):
                if mode == "slot":
                    edit = slot_ablation(sae, k)
                else:
                    edit = project_out(directions[mode][k])
                pred, lp = run(lambda idx, edit=edit: edit)
                correct.append(pred == first)
                logprob.append(lp)
            ablation[mode][cell] = M.ablation_matrix(rules, clean_correct, np.stack(correct), clean_logprob,
                                                     np.stack(logprob))
        # Swap targets: each prompt's person's rule-B answer token (-1 where unknown: never a hit).
        person_tokens = np.array([[t if t is not None else -1 for t in answers[p]] for p in sub["person_id"]])
        source = torch.from_numpy(rules)
        for alpha in alphas:
            hits = np.full((len(RULES), len(rows)), np.nan)
            clean_hits = np.full((len(RULES), len(rows)), np.nan)
            for target in range(len(RULES)):
                pred, _ = run(lambda idx, target=target: slot_swap(sae, source[idx], target, float(alpha)))
                off = rules != target
                hits[target, off] = (pred == person_tokens[:, target])[off]
                clean_hits[target, off] = (clean_pred == person_tokens[:, target])[off]
            swap[f"alpha={float(alpha)}"][cell] = M.swap_matrix(rules, hits, clean_hits)
        if progress:
            progress(cell)
    return {"ablation": ablation, "swap": swap}


def evaluate(inputs: EvaluationInputs, max_prompts_per_cell: int, swap_alphas, seed: int, progress=None) -> dict:
    cells = ordered_cells(inputs.index)
    metrics = {"cells": cells, "layer": inputs.layer}
    metrics.update(correlational_metrics(inputs, cells))
    metrics.update(causal_metrics(inputs, cells, max_prompts_per_cell, swap_alphas, seed, progress))
    metrics["margins"] = M.headline_margins(metrics["slot_accuracy"], metrics["baselines"])
    metrics["expected_results"] = M.expected_results(metrics)
    return metrics
