import json

import numpy as np
import pytest

from biosae.evaluation import metrics
from biosae.rules import OOD_CELLS, RULES


def balanced_rules(per_rule=50):
    return np.repeat(np.arange(6), per_rule)


# --- slot assignment -----------------------------------------------------------------------------


def test_perfect_slot_assignment_is_diagonal_with_accuracy_one():
    rules = balanced_rules()
    confusion = np.array(metrics.confusion_matrix(rules, rules))
    assert (confusion == np.diag(np.full(6, 50))).all()
    assert metrics.slot_accuracy(rules, rules) == 1.0


def test_random_slot_assignment_is_near_chance_and_not_diagonal():
    rng = np.random.default_rng(0)
    rules = balanced_rules(1000)
    predicted = rng.integers(0, 6, size=rules.size)
    confusion = np.array(metrics.confusion_matrix(rules, predicted))
    assert confusion.sum() == rules.size
    assert abs(metrics.slot_accuracy(rules, predicted) - 1 / 6) < 0.03
    assert (confusion - np.diag(np.diag(confusion))).sum() > 0.7 * rules.size


def test_confusion_rows_are_true_rule_and_columns_slot():
    confusion = metrics.confusion_matrix([1, 1, 2], [3, 3, 2])
    assert confusion[1][3] == 2 and confusion[2][2] == 1 and confusion[3][1] == 0


def test_confusion_rejects_out_of_range_slots():
    with pytest.raises(ValueError):
        metrics.confusion_matrix([0, 1], [0, 6])


def test_slot_accuracy_of_no_rows_is_none():
    assert metrics.slot_accuracy([], []) is None


# --- ablation ------------------------------------------------------------------------------------


def test_ablation_that_kills_only_its_own_rule_gives_identity_and_selectivity_one():
    rules = balanced_rules(20)
    clean = np.ones(rules.size, dtype=bool)
    ablated = np.stack([rules != k for k in range(6)])
    clean_lp = np.full(rules.size, -0.1)
    ablated_lp = np.stack([np.where(rules == k, -5.1, -0.1) for k in range(6)])
    result = metrics.ablation_matrix(rules, clean, ablated, clean_lp, ablated_lp)
    assert np.allclose(np.array(result["accuracy_drop"], dtype=float), np.eye(6))
    assert result["diagonal_mean"] == 1.0 and result["off_diagonal_mean"] == 0.0
    assert result["selectivity"] == pytest.approx(1.0)
    assert np.allclose(np.array(result["logprob_drop"], dtype=float), 5.0 * np.eye(6))
    assert result["logprob_selectivity"] == pytest.approx(5.0)
    assert result["n_by_rule"] == {rule: 20 for rule in RULES}
    json.dumps(result)


def test_ablation_control_that_hurts_every_rule_alike_has_selectivity_near_zero():
    rng = np.random.default_rng(1)
    rules = balanced_rules(400)
    clean = np.ones(rules.size, dtype=bool)
    ablated = rng.random((6, rules.size)) > 0.3  # every slot removes ~30% of every rule's answers
    result = metrics.ablation_matrix(rules, clean, ablated)
    assert abs(result["selectivity"]) < 0.05
    assert 0.25 < result["diagonal_mean"] < 0.35
    assert result["logprob_drop"] is None and result["logprob_selectivity"] is None


def test_ablation_normalizes_by_clean_accuracy_and_is_null_where_clean_accuracy_is_zero():
    rules = np.array([0, 0, 0, 0, 1, 1])
    clean = np.array([1, 1, 0, 0, 0, 0], dtype=bool)  # rule 0: 0.5 clean, rule 1: 0 clean
    ablated = np.zeros((6, 6), dtype=bool)
    ablated[:, 0] = True  # ablated accuracy of rule 0 = 0.25
    result = metrics.ablation_matrix(rules, clean, ablated)
    assert result["accuracy_drop"][0][0] == pytest.approx(0.5)
    assert result["accuracy_drop"][0][1] is None
    assert result["accuracy_drop"][0][2] is None  # no rows of rule 2
    assert result["clean_accuracy_by_rule"]["birth_city"] == 0.0
    assert "NaN" not in json.dumps(result)


# --- swap ----------------------------------------------------------------------------------------


def test_swap_matrix_known_values():
    source = np.array([0, 0, 1, 1])
    hits = np.zeros((6, 4))
    hits[1, 0] = 1  # rule-0 prompt 0 moved to slot 1 answers the rule-1 attribute
    hits[2, :2] = 1  # both rule-0 prompts moved to slot 2 succeed
    hits[0, 2] = 1
    hits[1, 2:] = 1  # diagonal for rule 1: must be ignored
    result = metrics.swap_matrix(source, hits)
    matrix = result["success_rate"]
    assert matrix[0][1] == 0.5 and matrix[0][2] == 1.0 and matrix[0][3] == 0.0
    assert matrix[1][0] == 0.5 and matrix[1][1] is None
    assert all(matrix[r][c] is None for r in range(2, 6) for c in range(6))
    assert result["mean_off_diagonal"] == pytest.approx((0.5 + 1.0 + 0 + 0 + 0 + 0.5 + 0 * 4) / 10)
    assert result["clean_rate"] is None


def test_swap_matrix_reports_the_rate_without_intervention():
    source = np.array([0, 1])
    clean = np.zeros((6, 2))
    clean[5, 1] = 1
    result = metrics.swap_matrix(source, np.ones((6, 2)), clean)
    assert result["mean_off_diagonal"] == 1.0
    assert result["clean_rate"][1][5] == 1.0 and result["clean_mean_off_diagonal"] == pytest.approx(0.1)


# --- value heads, per-template, asked vs answered -------------------------------------------------


def test_value_accuracy_and_per_rule_majority_baseline():
    train_target = [7, 7, 8, 3, 3, 3, 4]
    train_rule = [0, 0, 0, 1, 1, 1, 1]
    majority = metrics.majority_baseline_accuracy(train_target, train_rule, [7, 8, 3, 4, 9], [0, 0, 1, 1, 2])
    assert majority["majority_by_rule"]["birth_date"] == 7 and majority["majority_by_rule"]["birth_city"] == 3
    assert majority["majority_by_rule"]["university"] == 3  # no training rows: overall majority
    assert majority["accuracy"] == pytest.approx(2 / 5)
    assert majority["by_rule"]["birth_date"] == 0.5 and majority["by_rule"]["major"] is None
    value = metrics.value_accuracy([7, 8, 3, 3, 9], [7, 8, 3, 4, 9], [0, 0, 1, 1, 2])
    assert value["accuracy"] == pytest.approx(4 / 5) and value["by_rule"]["birth_city"] == 0.5
    json.dumps(majority)


def test_per_template_accuracy_keys_and_values():
    result = metrics.per_template_accuracy([1, 1, 2, 1], [0, 0, 0, 5], [True, False, True, True])
    assert list(result) == ["birth_date/1", "birth_date/2", "work_city/1"]
    assert result["birth_date/1"] == {"accuracy": 0.5, "n": 2}
    lm = metrics.lm_answer_accuracy([True, False, True, True], [0, 0, 0, 5], [1, 1, 2, 1])
    assert lm["first_token"] == 0.75 and lm["by_template"] == result and lm["by_rule"]["work_city"] == 1.0


def test_match_answered_rule_prefers_the_asked_rule_then_the_lowest_other():
    answers = np.array([[10, 20, 30, 40, 50, 20]] * 4)  # birth_city and work_city share token 20
    predicted = [20, 20, 40, 99]
    asked = [5, 0, 3, 2]
    assert metrics.match_answered_rule(predicted, answers, asked).tolist() == [5, 1, 3, metrics.ANSWERED_NONE]


def test_asked_vs_answered_counts_and_finding():
    asked = [1] * 10 + [0] * 5
    answered = [1] * 5 + [5] * 4 + [-1] + [0] * 5
    matrix = metrics.asked_vs_answered(asked, answered)
    assert len(matrix) == 6 and all(len(row) == 7 for row in matrix)
    assert matrix[1][1] == 5 and matrix[1][5] == 4 and matrix[1][6] == 1 and matrix[0][0] == 5
    findings = metrics.answered_instead(matrix, min_rate=0.1)
    assert findings[0] == {"asked": "birth_city", "answered": "work_city", "rate": 0.4, "count": 4, "n": 10}
    assert findings[1]["answered"] == "none"


# --- margins and expected results ---------------------------------------------------------------


def passing_metrics():
    cells = ["train", *OOD_CELLS, "hard_unseen_person"]
    return {
        "cells": cells,
        "slot_accuracy": {
            "train": 0.99,
            "ood_template": 0.97,
            "ood_person": 0.96,
            "ood_both": 0.95,
            "hard_unseen_person": 0.60,
        },
        "ablation": {"slot": {"train": {"diagonal_mean": 0.9}}},
        "baselines": {cell: {"untrained_lm_sae": 0.5, "bag_of_words": 1.0} for cell in cells},
    }


def by_name(entries):
    return {entry["name"]: entry for entry in entries}


def test_expected_results_all_pass():
    entries = by_name(metrics.expected_results(passing_metrics()))
    assert set(entries) == {
        "slot_diagonal_accuracy_train",
        "ood_slot_accuracy_min",
        "slot_ablation_diagonal_train",
        "margin_over_untrained_lm_min",
    }
    assert all(entry["passed"] is True for entry in entries.values())
    assert entries["ood_slot_accuracy_min"]["value"] == 0.95
    assert entries["ood_slot_accuracy_min"]["by_cell"] == {"ood_template": 0.97, "ood_person": 0.96, "ood_both": 0.95}
    assert entries["margin_over_untrained_lm_min"]["value"] == pytest.approx(0.10)
    json.dumps(list(entries.values()))


@pytest.mark.parametrize(
    "key, at, below, entry",
    [
        (("slot_accuracy", "train"), 0.95, 0.9499, "slot_diagonal_accuracy_train"),
        (("slot_accuracy", "ood_person"), 0.90, 0.8999, "ood_slot_accuracy_min"),
    ],
)
def test_expected_results_flip_at_the_seed_thresholds(key, at, below, entry):
    m = passing_metrics()
    m[key[0]][key[1]] = at
    assert by_name(metrics.expected_results(m))[entry]["passed"] is True
    m[key[0]][key[1]] = below
    assert by_name(metrics.expected_results(m))[entry]["passed"] is False


def test_ablation_expectation_is_strictly_above_point_eight():
    m = passing_metrics()
    m["ablation"]["slot"]["train"]["diagonal_mean"] = 0.8
    assert by_name(metrics.expected_results(m))["slot_ablation_diagonal_train"]["passed"] is False
    m["ablation"]["slot"]["train"]["diagonal_mean"] = 0.8001
    assert by_name(metrics.expected_results(m))["slot_ablation_diagonal_train"]["passed"] is True


def test_margin_expectation_flips_at_five_points_on_any_held_out_cell():
    m = passing_metrics()
    m["baselines"]["ood_both"]["untrained_lm_sae"] = 0.90  # margin exactly 0.05 (0.95 - 0.90 in floats)
    assert by_name(metrics.expected_results(m))["margin_over_untrained_lm_min"]["passed"] is True
    m["baselines"]["ood_both"]["untrained_lm_sae"] = 0.91
    entry = by_name(metrics.expected_results(m))["margin_over_untrained_lm_min"]
    assert entry["passed"] is False and entry["by_cell"]["ood_both"] == pytest.approx(0.04)
    assert "train" not in entry["by_cell"]
    m["baselines"]["train"]["untrained_lm_sae"] = 0.99  # the train cell is not held out: ignored
    m["baselines"]["ood_both"]["untrained_lm_sae"] = 0.5
    assert by_name(metrics.expected_results(m))["margin_over_untrained_lm_min"]["passed"] is True


def test_missing_measurements_are_not_measured_not_passed():
    entries = by_name(metrics.expected_results({"slot_accuracy": {"train": 0.99}}))
    assert entries["slot_diagonal_accuracy_train"]["passed"] is True
    assert entries["ood_slot_accuracy_min"]["passed"] is None
    assert entries["slot_ablation_diagonal_train"]["passed"] is None
    m = passing_metrics()
    del m["slot_accuracy"]["ood_both"]
    assert by_name(metrics.expected_results(m))["ood_slot_accuracy_min"]["passed"] is None
    m["slot_accuracy"]["ood_person"] = 0.5  # a measured failure outweighs a missing cell
    assert by_name(metrics.expected_results(m))["ood_slot_accuracy_min"]["passed"] is False


def test_margins_are_differences_of_the_same_cells():
    result = metrics.margins({"a": 0.9, "b": 0.8, "c": None}, {"a": 0.5, "c": 0.1})
    assert result["a"] == pytest.approx(0.4) and result["b"] is None and result["c"] is None
    headline = metrics.headline_margins({"a": 0.9}, {"a": {"untrained_lm_sae": 0.6, "bag_of_words": 1.0}})
    assert headline["a"]["over_untrained_lm"] == pytest.approx(0.3)
    assert headline["a"]["over_bag_of_words"] == pytest.approx(-0.1)


def test_interchange_result_counts_success_leak_and_unchanged():
    from biosae.evaluation.metrics import interchange_result

    result = interchange_result(
        [0, 0, 1, 2],
        [1, 2, 0, 0],
        success=[1, 0, 1, 0],
        leaked=[0, 1, 0, 0],
        unchanged=[0, 0, 0, 1],
        clean_success=[0, 0, 1, 0],
    )
    assert (result["iia"], result["leaked"], result["unchanged"], result["clean_success"], result["n"]) == (
        0.5,
        0.25,
        0.25,
        0.25,
        4,
    )
    assert result["success_rate"][0][1] == 1.0 and result["success_rate"][0][2] == 0.0
    assert result["success_rate"][1][0] == 1.0 and result["success_rate"][2][0] == 0.0
    assert result["success_rate"][0][0] is None and result["success_rate"][3][4] is None
    empty = interchange_result([], [], success=[], leaked=[], unchanged=[])
    assert empty["iia"] is None and empty["n"] == 0


def test_isolate_and_disentanglement_by_hand():
    from biosae.evaluation.metrics import disentanglement, isolate_result

    result = isolate_result(stays=[1, 1, 0, 1], leaked=[0, 0, 1, 0])
    assert result == {"isolate": 0.75, "leaked": 0.25, "n": 4}
    assert isolate_result(stays=[], leaked=[]) == {"isolate": None, "leaked": None, "n": 0}
    with pytest.raises(ValueError):
        isolate_result(stays=[1, 0], leaked=[1])
    assert disentanglement(0.5, 0.75) == {"cause": 0.5, "isolate": 0.75, "d": 0.625}
    assert disentanglement(0.5, None)["d"] is None


def test_same_rule_pairs_ask_the_base_rule_of_another_person():
    import pandas as pd

    from biosae.methods.pairs import evaluation_pairs, same_rule_pairs

    index = pd.DataFrame(
        {
            "split": ["ood_both"] * 12,
            "rule_idx": [r for r in range(6) for _ in range(2)],
            "person_id": [f"p{i % 4}" for i in range(12)],
        }
    )
    rows = np.arange(12)
    pairs = same_rule_pairs(index, "ood_both", rows, seed=0)
    assert np.array_equal(pairs.base_rows, rows) and pairs.scored.all()
    rules, persons = index["rule_idx"].to_numpy(), index["person_id"].to_numpy()
    assert (rules[pairs.source_rows] == rules[rows]).all()
    assert (persons[pairs.source_rows] != persons[rows]).all()
    # the IIA's pairs are drawn as before: another rule
    other = evaluation_pairs(index, "ood_both", rows, seed=0)
    assert (rules[other.source_rows] != rules[rows]).all()


def test_faithfulness_and_its_chance():
    from biosae.evaluation.metrics import faithfulness, independence_chance

    assert faithfulness([1, 1, 2, 3], [1, 2, 2, 0]) == {"rate": 0.5, "n": 4}
    assert faithfulness([], [])["rate"] is None
    # read-out always 1, answers 1 half the time: independent agreement 0.5
    assert independence_chance([1, 1, 1, 1], [1, 1, 2, 2]) == pytest.approx(0.5)
    assert independence_chance(None, [1, 2]) == pytest.approx(1 / 6)
    assert independence_chance([1], []) is None
