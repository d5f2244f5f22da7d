"""Stage 5: the seed's three tests and what a researcher needs beside them, per evaluation cell.

Correlational tests (slot assignment, value heads, baselines) use every row of a cell; causal
tests (ablations, swap) run the LM with edited activations on a rule-stratified sample of at most
``max_prompts_per_cell`` rows per cell (seeded), since each needs 6 forward passes per mode.
All numbers go into one metrics dict (structure: biosae.evaluation.metrics module docstring).
"""

from __future__ import annotations

import logging
from pathlib import Path
from dataclasses import dataclass, field

import numpy as np
import torch

from biosae.evaluation import metrics as M
from biosae.lm.activations import encode_prompts
from biosae.evaluation.baselines import BagOfWordsClassifier, LinearProbe, chance_accuracy
from biosae.errors import BiosaeError
from biosae.evaluation.interventions import PromptCache, project_out, slot_direction
from biosae.methods import build_methods
from biosae.methods.comparison import (
    CellPrompts,
    EditBatch,
    ablation_edits,
    ablation_result,
    interchange_edits,
    interchange_result,
    pick_alpha,
    readout_tests,
    steering_edits,
    steering_result,
)
from biosae.methods.pairs import evaluation_pairs, person_answer_tokens
from biosae.methods.random_control import fit_random
from biosae.methods.sae_slot import SaeSlotMethod
from biosae.rules import EVALUATION_CELLS, HARD_CELLS, RULES
from biosae.sae.inputs import value_targets

log = logging.getLogger(__name__)


@dataclass
class EvaluationInputs:
    model: object  # the trained LM (eval mode)
    tokenizer: object
    layer: int
    sae: object
    activations: torch.Tensor
    index: object  # pandas DataFrame, biosae.lm.activations.INDEX_COLUMNS
    candidates: dict
    untrained_sae: object
    untrained_activations: torch.Tensor
    untrained_index: object
    qa_accuracy: dict  # lm_qa_accuracy.json of the LM stage (exact match)
    method_names: tuple = ("sae_slot", "random")  # biosae.methods.METHOD_NAMES, in report order
    das_basis: torch.Tensor | None = None  # [rank, d], from the train_das rule
    das_training_pairs: set = field(default_factory=set)  # (base_row, source_row) DAS saw: never scored
    unsupervised_sae: object = None  # biosae.methods.unsupervised_sae.TopKSAE, from its own rule
    method_fit: dict = field(default_factory=dict)  # method -> what its training reported (metrics.json)


def load_evaluation_inputs(*, model_dir, activations, index, sae_dir, candidates, untrained_activations,
                           untrained_index, untrained_sae_dir, qa_accuracy, layer: int, methods,
                           das_dir=None, das_log=None, unsupervised_sae_dir=None) -> EvaluationInputs:
    """Everything one evaluation reads, from the files of a run (the evaluate rule's inputs; the
    benchmark times evaluate in-process from the same files). ``das_dir`` / ``unsupervised_sae_dir``:
    those methods' fitted files, when the method list names them."""
    from biosae.io import read_json
    from biosae.lm.activations import load_activation_table
    from biosae.lm.model import load_model_dir, pick_device
    from biosae.methods.das import das_fit_summary, load_das
    from biosae.methods.unsupervised_sae import CFG_FILENAME as TOPK_CFG_FILENAME, load_topk_sae
    from biosae.sae.model import load_sae

    model, tokenizer = load_model_dir(model_dir, pick_device())
    trained, table = load_activation_table(activations, index)
    untrained, untrained_table = load_activation_table(untrained_activations, untrained_index)
    inputs = EvaluationInputs(
        model=model, tokenizer=tokenizer, layer=layer, sae=load_sae(sae_dir), activations=trained, index=table,
        candidates=read_json(candidates), untrained_sae=load_sae(untrained_sae_dir), untrained_activations=untrained,
        untrained_index=untrained_table, qa_accuracy=read_json(qa_accuracy), method_names=tuple(methods))
    if das_dir is not None:
        inputs.das_basis, das_cfg, inputs.das_training_pairs = load_das(das_dir)
        if das_log is not None:
            inputs.method_fit["das"] = das_fit_summary(das_cfg, das_log)
    if unsupervised_sae_dir is not None:
        inputs.unsupervised_sae = load_topk_sae(unsupervised_sae_dir)
        inputs.method_fit["sae_unsupervised"] = (
            read_json(Path(unsupervised_sae_dir) / TOPK_CFG_FILENAME).get("history") or [{}])[-1]
    return inputs


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


def correlational_metrics(inputs: EvaluationInputs, cells: list[str], probe: LinearProbe | None = None) -> dict:
    index, acts = inputs.index, inputs.activations
    rules = index["rule_idx"].to_numpy()
    train = (index["split"] == "train").to_numpy()
    slots = slot_predictions(inputs.sae, acts)
    untrained_slots = slot_predictions(inputs.untrained_sae, inputs.untrained_activations)
    untrained_rules = inputs.untrained_index["rule_idx"].to_numpy()
    untrained_split = inputs.untrained_index["split"].to_numpy()

    bag_of_words = BagOfWordsClassifier().fit(list(index["question"][train]), list(index["full_name"][train]),
                                             rules[train])
    probe = probe or LinearProbe().fit(acts[torch.from_numpy(train)].numpy(), rules[train])
    probe_predictions = probe.predict(acts.numpy())
    bow_predictions = bag_of_words.predict(list(index["question"]), list(index["full_name"]))

    targets = value_targets(index, inputs.candidates)
    value_pred = inputs.sae.value_predictions(acts, torch.tensor(rules)).numpy()
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
                   methods: dict, progress=None) -> dict:
    """Ablation, interchange and steering for every method on every cell's causal sample.

    Returns, per method, its ablation, interchange and steering results, and the legacy sections
    (``ablation``: slot, direction, random_direction; ``swap``: the SAE slot swap at every alpha),
    which are the ``sae_slot`` and ``random`` methods' numbers (computed even when not compared)
    plus the SAE's decoder-direction ablation. The train cell runs first: it picks each additive
    method's alpha, scored on every cell.
    """
    index, tokenizer, sae = inputs.index, inputs.tokenizer, inputs.sae
    computed = dict(methods)
    computed.setdefault("sae_slot", SaeSlotMethod(sae))
    computed.setdefault("random", fit_random(inputs.activations.shape[1], len(RULES), seed))
    decoder_directions = [slot_direction(sae, k) for k in range(len(RULES))]
    answers = person_answer_tokens(index)
    direction_ablation = {}
    per_method = {name: {"ablation": {}, "interchange": {}, "steering": {}, "alpha_selection": {}} for name in computed}
    chosen_alpha: dict[str, float] = {}
    pairs_summary = {}
    for cell in sorted(cells, key=lambda c: c != "train"):
        rows = causal_sample(index, cell, max_prompts, seed)
        if len(rows) == 0:
            continue
        sub = index.iloc[rows]
        prompts, first = encode_prompts(tokenizer, sub.to_dict("records"))
        person_tokens = np.array([[t if t is not None else -1 for t in answers[p]] for p in sub["person_id"]])
        prompts_of_cell = CellPrompts(rows, sub["rule_idx"].to_numpy(), first, person_tokens,
                                      PromptCache(inputs.model, prompts), inputs.layer)
        pairs = evaluation_pairs(index, cell, rows, seed)
        leaked_pairs = pairs.as_set() & inputs.das_training_pairs
        if leaked_pairs:
            raise BiosaeError(f"DAS trained on {len(leaked_pairs)} pair(s) scored on cell {cell}, e.g. "
                              f"{sorted(leaked_pairs)[0]}: its training pool must exclude the scored bases")
        pairs_summary[cell] = {"n": int(pairs.scored.sum()), "without_source": int((~pairs.scored).sum())}
        # every alpha on the train cell (to pick one) and for the SAE's swap (the "swap" section);
        # elsewhere only the alpha the train cell picked
        alphas_of = {name: [float(a) for a in alphas] if cell == "train" or name == "sae_slot"
                     else [chosen_alpha[name]] if name in chosen_alpha else []
                     for name, method in computed.items() if method.steerable}
        batch = EditBatch()
        for name, method in computed.items():
            batch.add((name, "ablation"), ablation_edits(method))
            batch.add((name, "interchange"), interchange_edits(prompts_of_cell, method, pairs, inputs.activations))
            for alpha in alphas_of.get(name, []):
                batch.add((name, alpha), steering_edits(prompts_of_cell, method, alpha))
        batch.add(("sae", "direction"), [lambda idx, d=d: project_out(d) for d in decoder_directions])
        outcome = batch.run(prompts_of_cell)
        direction_ablation[cell] = ablation_result(prompts_of_cell, *outcome[("sae", "direction")])
        for name, result in per_method.items():
            result["ablation"][cell] = ablation_result(prompts_of_cell, *outcome[(name, "ablation")])
            result["interchange"][cell] = interchange_result(prompts_of_cell, outcome[(name, "interchange")][0][0],
                                                             pairs, index)
            steering = {alpha: steering_result(prompts_of_cell, outcome[(name, alpha)][0])
                        for alpha in alphas_of.get(name, [])}
            if cell == "train" and steering:
                result["alpha_selection"] = {f"alpha={alpha}": value for alpha, value in steering.items()}
                if pick_alpha(result["alpha_selection"]) is not None:
                    chosen_alpha[name] = pick_alpha(result["alpha_selection"])
            if name == "sae_slot":
                result["swap"] = {**result.get("swap", {}), **{(alpha, cell): value for alpha, value in steering.items()}}
            if name in chosen_alpha:
                result["steering"][cell] = steering[chosen_alpha[name]]
        if progress:
            progress(cell)
    sae_swaps = per_method["sae_slot"].pop("swap", {})
    legacy = {
        "ablation": {"slot": per_method["sae_slot"]["ablation"], "direction": direction_ablation,
                     "random_direction": per_method["random"]["ablation"]},
        "swap": {f"alpha={float(a)}": {cell: value for (alpha, cell), value in sae_swaps.items() if alpha == float(a)}
                 for a in alphas},
    }
    for name, result in per_method.items():
        result["alpha"] = chosen_alpha.get(name)
        result["alpha_selection"] = {key: value["mean_off_diagonal"] for key, value in result["alpha_selection"].items()}
    return {**legacy, "methods": {name: per_method[name] for name in methods}, "interchange_pairs": pairs_summary}


def evaluate(inputs: EvaluationInputs, max_prompts_per_cell: int, swap_alphas, seed: int, progress=None) -> dict:
    cells = ordered_cells(inputs.index)
    metrics = {"cells": cells, "layer": inputs.layer}
    train = (inputs.index["split"] == "train").to_numpy()
    train_rules = inputs.index["rule_idx"].to_numpy()[train]
    train_activations = inputs.activations[torch.from_numpy(train.copy())]
    probe = LinearProbe().fit(train_activations.numpy(), train_rules)  # the baseline and the "probe" method
    methods = build_methods(inputs.method_names, sae=inputs.sae, train_activations=train_activations,
                            train_rule_idx=train_rules, seed=seed, probe=probe, das_basis=inputs.das_basis,
                            unsupervised_sae=inputs.unsupervised_sae)
    metrics.update(correlational_metrics(inputs, cells, probe))
    causal = causal_metrics(inputs, cells, max_prompts_per_cell, swap_alphas, seed, methods, progress)
    readouts, reference = readout_tests(methods, inputs.activations, inputs.index, cells, answered_rules(inputs.index),
                                        aligned_untrained_slots(inputs))
    metrics["ablation"], metrics["swap"] = causal["ablation"], causal["swap"]
    metrics["methods"] = {
        name: {"rank": getattr(method, "rank", None), "steerable": bool(method.steerable),
               **causal["methods"][name], **readouts[name], "fit": inputs.method_fit.get(name)}
        for name, method in methods.items()
    }
    metrics["faithfulness_reference"] = reference
    metrics["interchange_pairs"] = causal["interchange_pairs"]
    metrics["margins"] = M.headline_margins(metrics["slot_accuracy"], metrics["baselines"])
    metrics["expected_results"] = M.expected_results(metrics)
    return metrics


def answered_rules(index) -> np.ndarray:
    """Per row: which of the person's attributes the LM's first answer token is (6: none)."""
    answers = person_answer_tokens(index)
    return M.match_answered_rule(index["lm_predicted_first_token"].to_numpy(),
                                 [[-1 if t is None else t for t in answers[p]] for p in index["person_id"]],
                                 index["rule_idx"].to_numpy())


def aligned_untrained_slots(inputs: EvaluationInputs) -> np.ndarray | None:
    """The untrained-LM SAE's argmax slot for each row of the trained LM's index (same QA rows)."""
    untrained = inputs.untrained_index
    if len(untrained) != len(inputs.index) or not np.array_equal(untrained["row"].to_numpy(), inputs.index["row"].to_numpy()):
        return None
    return slot_predictions(inputs.untrained_sae, inputs.untrained_activations)
