"""Evaluation metrics: plain arrays in, numbers and JSON-able nested lists out.

Every function here is pure (no model, no files). A rate over zero rows, or a normalized drop whose
denominator is zero, is ``None`` (JSON null), never NaN: ``metrics.json`` stays valid JSON and a
missing number can't pass for a measured one. Matrices are nested lists, rows first, indexed by
``biosae.rules.RULES`` (rule index = slot index).

metrics.json (path: ``biosae.layout.eval_metrics``), written by the evaluate stage. ``<cell>`` is one of
``EVALUATION_CELLS`` (train, ood_template, ood_person, ood_both) or ``HARD_CELLS``
(hard_seen_person, hard_unseen_person); a user's extra question file is a cell ``extra:<stem>`` of
extra_questions.json instead (biosae.evaluation.extra_questions), with the same per-cell sections::

    {
      "cells": [<cell>, ...],                       # evaluation order; "train" first
      "n_prompts": {<cell>: int},                   # rows behind every per-cell number below
      "slot_accuracy": {<cell>: float},             # SAE argmax slot == asked rule (slot_accuracy)
      "confusion": {<cell>: 6x6 int},               # rows = asked rule, cols = argmax slot
      "lm_qa_accuracy": {<cell>: <lm_answer_accuracy dict>},
          # {"first_token": float, "n": int, "by_rule": {rule: float|null},
          #  "by_template": {"<rule>/<template_idx>": {"accuracy": float|null, "n": int}}}
      "ablation": {"slot" | "direction" | "random_direction": {<cell>: <ablation_matrix dict>}},
      "swap": {"alpha=<float>": {<cell>: <swap_matrix dict>}},
      "value_accuracy": {<cell>: {"sae": float, "majority_baseline": float,   # sae: the value heads
                                  "sae_by_rule": {rule: float|null},
                                  "majority_baseline_by_rule": {rule: float|null},
                                  "lens_by_slot": float, "lens_by_rule": float,  # absent where the
                                  "lens_by_slot_by_rule": {rule: float|null},    # profile lacks
                                  "lens_by_rule_by_rule": {rule: float|null}}},  # the last block
          # biosae.evaluation.value_readout: the tuned lens read among the slot's / rule's candidates
      "value_readouts": {"value_heads" | "lens_by_slot" | "lens_by_rule":
                             {"seen": float|null, "unseen": float|null, "gap": float|null}},
          # seen = ood_template, unseen = ood_person, gap = seen - unseen
      "baselines": {<cell>: {"chance": float, "bag_of_words": float, "linear_probe": float,
                             "untrained_lm_sae": float}},   # each = slot/rule accuracy on the cell
      "margins": {<cell>: <headline_margins dict>},  # {"over_untrained_lm": float|null,
                                                     #  "over_bag_of_words": float|null}
      "asked_vs_answered": {<cell>: 6x7 int},       # asked_vs_answered; col 6 = none of the person's
      "error_term": {<cell>: {"rule_probe_accuracy": float, "reconstruction_r2": float|null}},
          # biosae.evaluation.evaluate.error_term_diagnostics: the rule read from h - decode(z) alone
      "methods": {<method>: {                       # biosae.methods: every method, same prompts and tests
                                                    # (all but sae_slot from the evaluate_methods job)
          "rank": int|null, "steerable": bool,       # subspace dimension; whether it has a steering edit
          "ablation": {<cell>: <ablation_matrix dict>},      # row k = the method's edit removing rule k
          "interchange": {<cell>: <interchange_result dict>},  # IIA on the shared pairs
          "isolate": {<cell>: <isolate_result dict>},  # RAVEL's Isolate on the same-rule pairs
          "disentanglement": {<cell>: <disentanglement dict>},  # RAVEL: Cause (= IIA), Isolate, D
          "steering": {<cell>: <swap_matrix dict>},  # at "alpha" (additive methods; {} otherwise)
          "alpha": float|null,                       # picked on the train cell from evaluate.swap_alphas
          "alpha_selection": {"alpha=<a>": float|null},  # train-cell steering success per alpha
          "detection": {<cell>: float|null},         # read-out == asked rule (null: no read-out)
          "faithfulness": {<cell>: {"rate": float|null, "n": int} | null},
          "fit": dict|null}},                        # what its training reported (das, sae_unsupervised)
      "faithfulness_reference": {<cell>: {"n": int, "chance": float|null, "uniform_chance": float,
                                          "untrained_lm_sae": float|null}},
      "interchange_pairs": {<cell>: {"n": int, "without_source": int, "same_rule_n": int}},
      "expected_results": [<expected_results entry>, ...],
      "notes": [str, ...]                           # optional free-text findings for summary.md
    }

Every section is optional to the readers (``expected_results``, ``biosae.evaluation.report``): a section
that a run did not produce is reported as not measured, never as zero.

``expected_results(metrics)`` reads exactly these keys:
``metrics["slot_accuracy"][cell]`` (train; every OOD_CELLS cell; every cell but train),
``metrics["ablation"]["slot"]["train"]["diagonal_mean"]``,
``metrics["baselines"][cell]["untrained_lm_sae"]`` (every cell but train), and ``metrics["cells"]``
(falling back to the keys of ``slot_accuracy``) to know which cells are held out.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from biosae.rules import OOD_CELLS, RULES

N_RULES = len(RULES)
# The ablation modes of metrics.json's "ablation" section, in report order (slot, then its
# decoder direction, then the random-direction control).
ABLATION_MODES = ("slot", "direction", "random_direction")
# Column of asked_vs_answered for "the first answer token is none of the person's six answers".
ANSWERED_NONE = N_RULES

SEED_DIAGONAL_ACCURACY = 0.95
SEED_OOD_SLOT_ACCURACY = 0.90
SEED_ABLATION_DIAGONAL = 0.8
MARGIN_OVER_UNTRAINED_LM = 0.05
# A measured k/n exactly at a ">=" threshold passes even after float subtraction (0.95 - 0.90).
_TOLERANCE = 1e-9


# ---------------------------------------------------------------------------------------------
# small helpers


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _mean_or_none(values: Iterable) -> float | None:
    present = [float(v) for v in values if not _is_missing(v)]
    return float(np.mean(present)) if present else None


def _rule_array(rule_idx, name: str = "rule_idx", n: int = N_RULES) -> np.ndarray:
    array = np.asarray(rule_idx, dtype=np.int64).reshape(-1)
    if array.size and (array.min() < 0 or array.max() >= n):
        raise ValueError(f"{name}: values must lie in [0, {n}), got {array.min()}..{array.max()}")
    return array


def _python(value):
    """A numpy scalar as the Python scalar JSON can write."""
    return value.item() if hasattr(value, "item") else value


def accuracy_by_rule(rule_idx, correct) -> dict[str, float | None]:
    """Fraction of ``correct`` among each rule's rows, keyed by rule name (None: no rows)."""
    rules = _rule_array(rule_idx)
    correct = np.asarray(correct, dtype=bool).reshape(-1)
    return {name: (float(correct[rules == r].mean()) if (rules == r).any() else None) for r, name in enumerate(RULES)}


# ---------------------------------------------------------------------------------------------
# slot assignment


def confusion_matrix(true_rule, predicted_slot, n: int = N_RULES) -> list[list[int]]:
    """n x n counts: row = asked rule, column = the SAE's argmax slot."""
    true = _rule_array(true_rule, "true_rule", n)
    pred = _rule_array(predicted_slot, "predicted_slot", n)
    if true.shape != pred.shape:
        raise ValueError(f"true_rule has {true.size} rows, predicted_slot {pred.size}")
    counts = np.zeros((n, n), dtype=np.int64)
    np.add.at(counts, (true, pred), 1)
    return counts.tolist()


def slot_accuracy(true_rule, predicted_slot) -> float | None:
    """Diagonal accuracy: the fraction of prompts whose argmax slot is the asked rule's slot."""
    true = np.asarray(true_rule).reshape(-1)
    pred = np.asarray(predicted_slot).reshape(-1)
    if true.shape != pred.shape:
        raise ValueError(f"true_rule has {true.size} rows, predicted_slot {pred.size}")
    return float((true == pred).mean()) if true.size else None


# ---------------------------------------------------------------------------------------------
# causal tests


def _diagonal_split(matrix: list[list]) -> tuple[float | None, float | None]:
    diagonal = [row[i] for i, row in enumerate(matrix) if i < len(row)]
    off = [value for i, row in enumerate(matrix) for j, value in enumerate(row) if i != j]
    return _mean_or_none(diagonal), _mean_or_none(off)


def _difference(a, b):
    return None if _is_missing(a) or _is_missing(b) else float(a - b)


def ablation_matrix(
    rule_idx, clean_correct, ablated_correct_by_slot, clean_logprob=None, ablated_logprob_by_slot=None
) -> dict:
    """The seed's ablation test on one cell, for one mode (slot, direction or random control).

    rule_idx int[N]; clean_correct bool[N]: the LM's first answer token is right without any
    intervention; ablated_correct_by_slot bool[K, N]: the same with slot (or direction) k ablated;
    clean_logprob float[N] / ablated_logprob_by_slot float[K, N]: log-probability of the correct
    first answer token (optional). K is normally 6.

    Returns::

        {"accuracy_drop": KxR,        # row k, col r: (clean_acc_r - ablated_acc_kr) / clean_acc_r;
                                      #   null when rule r has no rows or clean_acc_r == 0
         "ablated_accuracy": KxR,     # ablated_acc_kr itself (null: no rows)
         "logprob_drop": KxR | null,  # mean over rule-r rows of clean - ablated log-prob
         "diagonal_mean": float|null, "off_diagonal_mean": float|null,   # of accuracy_drop
         "selectivity": float|null,           # diagonal_mean - off_diagonal_mean
         "logprob_diagonal_mean": ..., "logprob_off_diagonal_mean": ...,
         "logprob_selectivity": float|null,   # the same on logprob_drop
         "clean_accuracy_by_rule": {rule: float|null}, "n_by_rule": {rule: int}}

    A drop can be negative (the ablation helped); it is reported as measured.
    """
    rules = _rule_array(rule_idx)
    clean = np.asarray(clean_correct, dtype=bool).reshape(-1)
    ablated = np.asarray(ablated_correct_by_slot, dtype=bool)
    if ablated.ndim != 2 or ablated.shape[1] != rules.size or clean.size != rules.size:
        raise ValueError(
            f"expected rule_idx[N], clean_correct[N], ablated_correct_by_slot[K, N]; got {rules.size}, "
            f"{clean.size}, {ablated.shape}"
        )
    masks = [rules == r for r in range(N_RULES)]
    counts = [int(mask.sum()) for mask in masks]
    clean_acc = [float(clean[mask].mean()) if n else None for mask, n in zip(masks, counts)]

    ablated_acc, accuracy_drop = [], []
    for k in range(ablated.shape[0]):
        acc_row = [float(ablated[k, mask].mean()) if n else None for mask, n in zip(masks, counts)]
        ablated_acc.append(acc_row)
        accuracy_drop.append(
            [
                None if not clean_acc[r] or acc_row[r] is None else (clean_acc[r] - acc_row[r]) / clean_acc[r]
                for r in range(N_RULES)
            ]
        )
    diagonal_mean, off_diagonal_mean = _diagonal_split(accuracy_drop)

    logprob_drop = None
    lp_diagonal = lp_off = None
    if clean_logprob is not None and ablated_logprob_by_slot is not None:
        clean_lp = np.asarray(clean_logprob, dtype=np.float64).reshape(-1)
        ablated_lp = np.asarray(ablated_logprob_by_slot, dtype=np.float64)
        if clean_lp.size != rules.size or ablated_lp.shape != ablated.shape:
            raise ValueError(f"log-prob shapes {clean_lp.shape}, {ablated_lp.shape} don't match {ablated.shape}")
        logprob_drop = [
            [float((clean_lp[mask] - ablated_lp[k, mask]).mean()) if n else None for mask, n in zip(masks, counts)]
            for k in range(ablated_lp.shape[0])
        ]
        lp_diagonal, lp_off = _diagonal_split(logprob_drop)

    return {
        "accuracy_drop": accuracy_drop,
        "ablated_accuracy": ablated_acc,
        "logprob_drop": logprob_drop,
        "diagonal_mean": diagonal_mean,
        "off_diagonal_mean": off_diagonal_mean,
        "selectivity": _difference(diagonal_mean, off_diagonal_mean),
        "logprob_diagonal_mean": lp_diagonal,
        "logprob_off_diagonal_mean": lp_off,
        "logprob_selectivity": _difference(lp_diagonal, lp_off),
        "clean_accuracy_by_rule": dict(zip(RULES, clean_acc)),
        "n_by_rule": dict(zip(RULES, counts)),
    }


def _rates_by_source(rules: np.ndarray, hits: np.ndarray) -> list[list[float | None]]:
    matrix = []
    for a in range(N_RULES):
        row = []
        for b in range(N_RULES):
            values = hits[b, rules == a]
            values = values[~np.isnan(values)]
            row.append(None if a == b or values.size == 0 else float(values.mean()))
        matrix.append(row)
    return matrix


def swap_matrix(source_rule, target_answer_hit_by_target_slot, clean_hit_by_target_slot=None) -> dict:
    """The slot swap on one cell, at one alpha.

    source_rule int[N]: the asked rule A of each prompt; target_answer_hit_by_target_slot
    bool-or-float[6, N]: row B, after moving the prompt from slot A to slot B (error term kept),
    the LM's first answer token is the person's rule-B answer's first token. Entries with B == A,
    and NaN entries (not run), are ignored. clean_hit_by_target_slot (optional, same shape): the
    same hit without any intervention, i.e. how often the rule-B answer comes out anyway (two
    attributes can share a first token, e.g. birth city and work city).

    Returns::

        {"success_rate": 6x6,            # row = source rule A, col = target slot B, diagonal null
         "mean_off_diagonal": float|null,
         "clean_rate": 6x6 | null, "clean_mean_off_diagonal": float|null,
         "n_by_rule": {rule: int}}
    """
    rules = _rule_array(source_rule, "source_rule")
    hits = np.asarray(target_answer_hit_by_target_slot, dtype=np.float64)
    if hits.shape != (N_RULES, rules.size):
        raise ValueError(f"target_answer_hit_by_target_slot: expected shape {(N_RULES, rules.size)}, got {hits.shape}")
    success = _rates_by_source(rules, hits)
    clean_rate = clean_mean = None
    if clean_hit_by_target_slot is not None:
        clean_hits = np.asarray(clean_hit_by_target_slot, dtype=np.float64)
        if clean_hits.shape != hits.shape:
            raise ValueError(f"clean_hit_by_target_slot: expected shape {hits.shape}, got {clean_hits.shape}")
        clean_rate = _rates_by_source(rules, clean_hits)
        clean_mean = _diagonal_split(clean_rate)[1]
    return {
        "success_rate": success,
        "mean_off_diagonal": _diagonal_split(success)[1],
        "clean_rate": clean_rate,
        "clean_mean_off_diagonal": clean_mean,
        "n_by_rule": {name: int((rules == r).sum()) for r, name in enumerate(RULES)},
    }


def interchange_result(base_rule, target_rule, success, leaked, unchanged, clean_success=None) -> dict:
    """Interchange intervention accuracy (MIB's IIA) on one cell's scored pairs, for one method.

    Row i is a pair: the base asks rule ``base_rule[i]`` about person P, the source asks rule
    ``target_rule[i]`` about person Q. ``success``: after the interchange the LM's first answer token is
    P's target-rule answer; ``leaked``: it is Q's (the source's identity came along, as whole-vector
    patching does); ``unchanged``: it equals the base's clean prediction; ``clean_success``: P's
    target-rule answer comes out without any intervention (attributes can share a first token).

    Returns::

        {"iia": float|null, "leaked": float|null, "unchanged": float|null, "clean_success": float|null,
         "n": int, "success_rate": 6x6 (row = base rule A, col = source rule B, diagonal null)}
    """
    base = _rule_array(base_rule, "base_rule")
    target = _rule_array(target_rule, "target_rule")

    def rate(values):
        values = np.asarray(values, dtype=bool).reshape(-1)
        if values.size != base.size:
            raise ValueError(f"interchange_result: {values.size} values for {base.size} pairs")
        return float(values.mean()) if values.size else None

    success = np.asarray(success, dtype=bool).reshape(-1)
    hits = np.full((N_RULES, base.size), np.nan)
    hits[target, np.arange(base.size)] = success
    return {
        "iia": rate(success),
        "leaked": rate(leaked),
        "unchanged": rate(unchanged),
        "clean_success": None if clean_success is None else rate(clean_success),
        "n": int(base.size),
        "success_rate": _rates_by_source(base, hits),
    }


def isolate_result(stays, leaked) -> dict:
    """RAVEL's Isolate on one cell's same-rule pairs, for one method.

    Row i is a pair whose base asks rule A about person P and whose clean pass answers P's rule-A
    answer; the source asks the same rule A about person Q. ``stays``: after the interchange the
    LM still answers P's; ``leaked``: it answers Q's (the method's subspace carries the person).
    A method that moves only the rule leaves the answer in place.

    Returns ``{"isolate": float|null, "leaked": float|null, "n": int}``.
    """
    stays = np.asarray(stays, dtype=bool).reshape(-1)
    leaked = np.asarray(leaked, dtype=bool).reshape(-1)
    if leaked.size != stays.size:
        raise ValueError(f"isolate_result: {leaked.size} leaked values for {stays.size} pairs")
    return {
        "isolate": float(stays.mean()) if stays.size else None,
        "leaked": float(leaked.mean()) if leaked.size else None,
        "n": int(stays.size),
    }


def disentanglement(cause: float | None, isolate: float | None) -> dict:
    """RAVEL's scores of one method on one cell: Cause (the IIA), Isolate and their mean D
    (null where either is unmeasured)."""
    d = None if cause is None or isolate is None else (cause + isolate) / 2
    return {"cause": cause, "isolate": isolate, "d": d}


def faithfulness(readout, answered_rule) -> dict:
    """Share of rows where a method's read-out names the attribute the LM answered.

    Only rows where the LM answered another attribute of the same person than the one asked are
    given (biosae.evaluation.comparison.readout_tests). {"rate": float|null, "n": int}.
    """
    readout = np.asarray(readout).reshape(-1)
    answered = np.asarray(answered_rule).reshape(-1)
    if readout.shape != answered.shape:
        raise ValueError(f"readout has {readout.size} rows, answered_rule {answered.size}")
    return {"rate": float((readout == answered).mean()) if readout.size else None, "n": int(readout.size)}


def independence_chance(readout, answered_rule) -> float | None:
    """The faithfulness a read-out independent of the answer would get on the same rows:
    sum over rules of P(read-out = r) * P(answered = r) (Cohen's expected agreement). With no
    read-out given, uniform over the rules."""
    answered = np.asarray(answered_rule).reshape(-1)
    if answered.size == 0:
        return None
    p_answered = np.bincount(answered, minlength=N_RULES + 1)[:N_RULES] / answered.size
    if readout is None:
        return float(p_answered.sum() / N_RULES)
    p_readout = np.bincount(np.asarray(readout).reshape(-1), minlength=N_RULES)[:N_RULES] / answered.size
    return float((p_readout * p_answered).sum())


# ---------------------------------------------------------------------------------------------
# value heads and the LM's own answers


def value_accuracy(pred, target, rule_idx) -> dict:
    """Value-head accuracy (predicted first answer token == true one): {"accuracy", "n", "by_rule"}."""
    pred = np.asarray(pred).reshape(-1)
    target = np.asarray(target).reshape(-1)
    if pred.shape != target.shape:
        raise ValueError(f"pred has {pred.size} rows, target {target.size}")
    correct = pred == target
    return {
        "accuracy": float(correct.mean()) if correct.size else None,
        "n": int(correct.size),
        "by_rule": accuracy_by_rule(rule_idx, correct),
    }


def majority_baseline_accuracy(train_target, train_rule, eval_target, eval_rule) -> dict:
    """Accuracy of always answering the rule's most frequent training answer (per-rule majority).

    The majority is learned on the training rows only (ties: the answer seen first). A rule with
    no training rows gets the overall training majority. Returns the value_accuracy dict plus
    ``"majority_by_rule": {rule: answer}``.
    """
    train_target = list(np.asarray(train_target).reshape(-1))
    train_rules = _rule_array(train_rule, "train_rule")
    if not train_target:
        raise ValueError("majority_baseline_accuracy: no training rows")
    overall = Counter(train_target).most_common(1)[0][0]
    majority = []
    for r in range(N_RULES):
        answers = [t for t, rule in zip(train_target, train_rules) if rule == r]
        majority.append(Counter(answers).most_common(1)[0][0] if answers else overall)
    eval_rules = _rule_array(eval_rule, "eval_rule")
    pred = np.array([majority[r] for r in eval_rules], dtype=object)
    result = value_accuracy(pred, np.asarray(eval_target, dtype=object), eval_rules)
    result["majority_by_rule"] = {name: _python(majority[r]) for r, name in enumerate(RULES)}
    return result


def per_template_accuracy(rows_template_idx, rule_idx, correct) -> dict[str, dict]:
    """{"<rule_name>/<template_idx>": {"accuracy": float, "n": int}}, ordered by rule then template."""
    templates = np.asarray(rows_template_idx, dtype=np.int64).reshape(-1)
    rules = _rule_array(rule_idx)
    correct = np.asarray(correct, dtype=bool).reshape(-1)
    breakdown = {}
    for r, t in sorted(set(zip(rules.tolist(), templates.tolist()))):
        mask = (rules == r) & (templates == t)
        breakdown[f"{RULES[r]}/{t}"] = {"accuracy": float(correct[mask].mean()), "n": int(mask.sum())}
    return breakdown


def lm_answer_accuracy(correct, rule_idx, rows_template_idx=None) -> dict:
    """The LM's greedy first-answer-token accuracy on one cell, as stored in ``lm_qa_accuracy``.

    {"first_token": float|null, "n": int, "by_rule": {rule: float|null},
     "by_template": {"<rule>/<template_idx>": {"accuracy": float, "n": int}}}  (by_template: {} if
    no template indices are given)
    """
    correct = np.asarray(correct, dtype=bool).reshape(-1)
    return {
        "first_token": float(correct.mean()) if correct.size else None,
        "n": int(correct.size),
        "by_rule": accuracy_by_rule(rule_idx, correct),
        "by_template": {} if rows_template_idx is None else per_template_accuracy(rows_template_idx, rule_idx, correct),
    }


def match_answered_rule(predicted_token, answer_tokens_by_rule, asked_rule) -> np.ndarray:
    """Which of the person's attributes the LM's first answer token belongs to, per row.

    predicted_token [N]; answer_tokens_by_rule [N, 6]: the first token of the person's answer for
    each rule; asked_rule int[N]. A token matching the asked rule's answer counts as that rule
    (the answer was right, even if another attribute shares the token); otherwise the lowest
    matching rule; otherwise ANSWERED_NONE (6).
    """
    predicted = np.asarray(predicted_token).reshape(-1)
    answers = np.asarray(answer_tokens_by_rule)
    asked = _rule_array(asked_rule, "asked_rule")
    if answers.shape != (predicted.size, N_RULES) or asked.size != predicted.size:
        raise ValueError(
            f"expected predicted_token[N], answer_tokens_by_rule[N, 6], asked_rule[N]; got "
            f"{predicted.shape}, {answers.shape}, {asked.shape}"
        )
    matches = answers == predicted[:, None]
    answered = np.where(matches.any(axis=1), matches.argmax(axis=1), ANSWERED_NONE)
    asked_matches = matches[np.arange(asked.size), asked]
    return np.where(asked_matches, asked, answered).astype(np.int64)


def asked_vs_answered(rule_idx, answered_rule_idx) -> list[list[int]]:
    """6x7 counts: row = asked rule, column = the rule whose answer the LM gave (col 6: none).

    answered_rule_idx: 0..5, or 6 / -1 / None for "none of the person's attributes".
    """
    rules = _rule_array(rule_idx)
    answered = np.array(
        [
            ANSWERED_NONE if a is None or not 0 <= int(a) < N_RULES else int(a)
            for a in np.asarray(answered_rule_idx, dtype=object).reshape(-1)
        ],
        dtype=np.int64,
    )
    if answered.size != rules.size:
        raise ValueError(f"rule_idx has {rules.size} rows, answered_rule_idx {answered.size}")
    counts = np.zeros((N_RULES, N_RULES + 1), dtype=np.int64)
    np.add.at(counts, (rules, answered), 1)
    return counts.tolist()


def answered_instead(matrix: Sequence[Sequence[int]], min_rate: float = 0.1) -> list[dict]:
    """The off-diagonal cells of an asked_vs_answered matrix holding >= min_rate of their row.

    [{"asked": rule, "answered": rule | "none", "rate": float, "count": int, "n": int}], highest
    rate first: "birth_city questions were answered with the work_city 41% of the time".
    """
    findings = []
    for r, row in enumerate(matrix):
        total = sum(row)
        for c, count in enumerate(row):
            if c == r or total == 0 or count / total < min_rate:
                continue
            findings.append(
                {
                    "asked": RULES[r],
                    "answered": RULES[c] if c < N_RULES else "none",
                    "rate": count / total,
                    "count": int(count),
                    "n": int(total),
                }
            )
    return sorted(findings, key=lambda f: (-f["rate"], f["asked"]))


# ---------------------------------------------------------------------------------------------
# margins and the expected results


def margins(sae_slot_accuracy_by_cell: dict, baseline_by_cell: dict) -> dict[str, float | None]:
    """SAE slot accuracy minus a baseline's, for each cell of the SAE's dict (None: either missing).

    Both dicts must come from the same rows of each cell (the same n_prompts), so that the margin
    is the difference of the two numbers shown beside it.
    """
    return {cell: _difference(value, baseline_by_cell.get(cell)) for cell, value in sae_slot_accuracy_by_cell.items()}


def headline_margins(slot_accuracy: dict, baselines: dict) -> dict[str, dict]:
    """The metrics.json "margins" section from its "slot_accuracy" and "baselines" sections."""
    over_untrained = margins(slot_accuracy, {c: (b or {}).get("untrained_lm_sae") for c, b in baselines.items()})
    over_bow = margins(slot_accuracy, {c: (b or {}).get("bag_of_words") for c, b in baselines.items()})
    return {
        cell: {"over_untrained_lm": over_untrained[cell], "over_bag_of_words": over_bow[cell]} for cell in slot_accuracy
    }


def _passes(value, threshold: float, comparison: str) -> bool:
    return value >= threshold - _TOLERANCE if comparison == ">=" else value > threshold


def _judge(values_by_cell: dict, threshold: float, comparison: str) -> tuple[float | None, bool | None]:
    """(minimum measured value, verdict): False if any measured cell fails, None if nothing
    fails but some cell was not measured, True if every cell was measured and passes."""
    measured = [v for v in values_by_cell.values() if not _is_missing(v)]
    if any(not _passes(v, threshold, comparison) for v in measured):
        return min(measured), False
    if not measured or len(measured) < len(values_by_cell):
        return (min(measured) if measured else None), None
    return min(measured), True


def _entry(name, description, source, threshold, comparison, values_by_cell: dict) -> dict:
    value, passed = _judge(values_by_cell, threshold, comparison)
    return {
        "name": name,
        "description": description,
        "source": source,
        "threshold": threshold,
        "comparison": comparison,
        "value": value,
        "passed": passed,
        "by_cell": dict(values_by_cell),
    }


def expected_results(metrics: dict) -> list[dict]:
    """The seed's expectations and ours, judged on a metrics dict (keys: see module docstring).

    Each entry: {"name", "description", "source": "seed" | "biosae", "threshold",
    "comparison": ">=" | ">", "value": float|null (the minimum over the cells it covers),
    "passed": true | false | null (null: not measured), "by_cell": {cell: float|null}}.
    """
    slot = metrics.get("slot_accuracy") or {}
    cells = list(metrics.get("cells") or slot.keys())
    held_out = [cell for cell in cells if cell != "train"]
    ablation_train = ((metrics.get("ablation") or {}).get("slot") or {}).get("train") or {}
    untrained = {cell: ((metrics.get("baselines") or {}).get(cell) or {}).get("untrained_lm_sae") for cell in held_out}
    margin_by_cell = margins({cell: slot.get(cell) for cell in held_out}, untrained)
    return [
        _entry(
            "slot_diagonal_accuracy_train",
            "SAE slot (diagonal) accuracy on the train cell",
            "seed",
            SEED_DIAGONAL_ACCURACY,
            ">=",
            {"train": slot.get("train")},
        ),
        _entry(
            "ood_slot_accuracy_min",
            "SAE slot accuracy on every OOD cell",
            "seed",
            SEED_OOD_SLOT_ACCURACY,
            ">=",
            {cell: slot.get(cell) for cell in OOD_CELLS},
        ),
        _entry(
            "slot_ablation_diagonal_train",
            "mean normalized accuracy drop on the slot-ablation diagonal, train cell",
            "seed",
            SEED_ABLATION_DIAGONAL,
            ">",
            {"train": ablation_train.get("diagonal_mean")},
        ),
        _entry(
            "margin_over_untrained_lm_min",
            "margin of SAE slot accuracy over the untrained-LM SAE's, on every held-out cell",
            "biosae",
            MARGIN_OVER_UNTRAINED_LM,
            ">=",
            margin_by_cell,
        ),
    ]
