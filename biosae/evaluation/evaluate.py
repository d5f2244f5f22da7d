"""Stage 5: the seed's three tests and what a researcher needs beside them, per evaluation cell.

Correlational tests (slot assignment, value heads, baselines) use every row of a cell; causal
tests (ablations, swap) run the LM with edited activations on a rule-stratified sample of at most
``max_prompts_per_cell`` rows per cell (seeded), since each needs 6 forward passes per mode.
Here run the SAE's tests; the other localization methods' come from their own job
(biosae.evaluation.method_tests), on the same samples and pairs, and are joined in. All numbers go
into one metrics dict (structure: biosae.evaluation.metrics module docstring).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from biosae.devices import pick_device
from biosae.errors import BiosaeError
from biosae.evaluation import metrics as M
from biosae.evaluation.baselines import BagOfWordsClassifier, LinearProbe, chance_accuracy
from biosae.evaluation.comparison import readout_tests
from biosae.evaluation.edits import project_out, slot_direction
from biosae.evaluation.method_tests import SAE_METHOD, causal_tests, cell_samples, load_trained_methods
from biosae.evaluation.value_readout import lens_predictions, seen_unseen
from biosae.io import read_json
from biosae.lm.activations import load_activation_tables
from biosae.lm.model import load_model_dir
from biosae.methods.pairs import person_answer_tokens
from biosae.methods.sae_slot import SaeSlotMethod
from biosae.methods.sae_slot_causal import CausalSaeSlotMethod
from biosae.rules import EVALUATION_CELLS, HARD_CELLS, RULES
from biosae.sae.inputs import value_targets
from biosae.sae.model import load_sae

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
    method_names: tuple = ("sae_slot", "random")  # config methods.names (biosae.methods.registry), in report order
    # the other methods' tests at this layer (biosae.evaluation.method_tests.evaluate_methods)
    method_tests: dict = field(default_factory=dict)
    # the SAEs fine-tuned from this layer's SAE (biosae.methods.sae_slot_causal), by method name,
    # the pairs they trained on and what their training reported
    causal_saes: dict = field(default_factory=dict)
    causal_training_pairs: set = field(default_factory=set)
    causal_fit: dict = field(default_factory=dict)
    # the same rows at the last block's output (hook -1), for the lens read-out's translator; None
    # at the last block itself, and where the profile lacks it (then no lens read-out below it)
    last_block_activations: torch.Tensor | None = None

    @property
    def has_lens(self) -> bool:
        return self.layer == -1 or self.last_block_activations is not None


def load_evaluation_inputs(
    *,
    model_dir,
    activations,
    index,
    sae_dir,
    candidates,
    untrained_activations,
    untrained_index,
    untrained_sae_dir,
    qa_accuracy,
    layer: int,
    methods,
    method_tests=None,
    lm=None,
    causal_sae_dirs=None,
    extra_activations=None,
    extra_index=None,
    untrained_extra_activations=None,
    untrained_extra_index=None,
    extra_qa_accuracy=None,
    last_block_activations=None,
    extra_last_block_activations=None,
    device=None,
) -> EvaluationInputs:
    """Everything one evaluation reads, from the files of a run (the evaluate rule's inputs; the
    benchmark times evaluate in-process from the same files). ``method_tests``: the JSON file of
    the other methods' tests at this layer (rule evaluate_methods); None: set them before evaluating.
    ``lm``: the (model, tokenizer) of ``model_dir`` when already loaded. ``causal_sae_dirs``:
    method -> the directory of its fine-tuned SAE at this layer (rule train_causal_sae). The
    ``extra_`` files: the evaluate.extra_questions rows' activations of both LMs and the LM's QA
    accuracy on them, joined after the shipped rows' (None: no extra questions). ``device``: where
    the LM runs (biosae.devices.pick_device; None is auto). ``last_block_activations`` (and its
    ``extra_`` twin): the activation files of hook -1 beside ``activations``, for the lens
    read-out of a lower layer (biosae.evaluation.value_readout)."""
    model, tokenizer = lm or load_model_dir(model_dir, pick_device(device))
    trained, table = load_activation_tables((activations, index), *_present((extra_activations, extra_index)))
    untrained, untrained_table = load_activation_tables(
        (untrained_activations, untrained_index), *_present((untrained_extra_activations, untrained_extra_index))
    )
    last_block = None
    if last_block_activations is not None and layer != -1:
        last_block, last_table = load_activation_tables(
            (last_block_activations, index), *_present((extra_last_block_activations, extra_index))
        )
        if list(last_table["question"]) != list(table["question"]):
            raise BiosaeError(f"{last_block_activations}: its rows are not those of {activations}")
    accuracy = read_json(qa_accuracy)
    if extra_qa_accuracy is not None:
        accuracy.update(read_json(extra_qa_accuracy))
    causal, causal_fit = load_trained_methods(causal_sae_dirs=causal_sae_dirs or {})
    return EvaluationInputs(
        model=model,
        tokenizer=tokenizer,
        layer=layer,
        sae=load_sae(sae_dir),
        activations=trained,
        index=table,
        candidates=read_json(candidates),
        untrained_sae=load_sae(untrained_sae_dir),
        untrained_activations=untrained,
        untrained_index=untrained_table,
        qa_accuracy=accuracy,
        method_names=tuple(methods),
        method_tests=read_json(method_tests) if method_tests is not None else {},
        causal_saes=causal.get("causal_saes", {}),
        causal_training_pairs=causal.get("das_training_pairs", set()),
        causal_fit=causal_fit,
        last_block_activations=last_block,
    )


def _present(*tables) -> list[tuple]:
    """The (activations, index) pairs whose files are given."""
    return [table for table in tables if table[1] is not None]


def ordered_cells(index) -> list[str]:
    present = list(dict.fromkeys(index["split"]))
    known = [cell for cell in (*EVALUATION_CELLS, *HARD_CELLS) if cell in present]
    return known + sorted(cell for cell in present if cell not in known)


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
    # predicted on the reported cells' rows only (a finished run's new questions are a few of them)
    reported = np.isin(split, cells)
    predicted = np.full(len(split), -1, dtype=np.int64)
    predicted[reported] = probe.predict(error[torch.from_numpy(reported)])
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


def only_on(rows: np.ndarray, predict) -> np.ndarray:
    """``predict(rows)`` (an int array over the rows where the bool mask ``rows`` is set) scattered
    into an array over every row, -1 elsewhere."""
    out = np.full(len(rows), -1, dtype=np.int64)
    if rows.any():
        out[rows] = predict(rows)
    return out


def correlational_metrics(inputs: EvaluationInputs, cells: list[str], probe: LinearProbe | None = None) -> dict:
    """The per-cell sections of metrics.json that need no edited pass, for ``cells``. The fits read
    the train cell's rows; the predictions are made on the rows of ``cells`` only (every row in a
    run's evaluation; a finished run's new questions alone when they are scored)."""
    index, acts = inputs.index, inputs.activations
    rules = index["rule_idx"].to_numpy()
    train = (index["split"] == "train").to_numpy()
    reported = np.array(index["split"].isin(cells), dtype=bool)
    slots = slot_predictions(inputs.sae, acts)
    untrained_slots = slot_predictions(inputs.untrained_sae, inputs.untrained_activations)
    untrained_rules = inputs.untrained_index["rule_idx"].to_numpy()
    untrained_split = inputs.untrained_index["split"].to_numpy()

    bag_of_words = BagOfWordsClassifier().fit(
        list(index["question"][train]), list(index["full_name"][train]), rules[train]
    )
    probe = probe or LinearProbe().fit(acts[torch.from_numpy(train)].numpy(), rules[train])
    probe_predictions = only_on(reported, lambda rows: probe.predict(acts[torch.from_numpy(rows)].numpy()))
    bow_predictions = only_on(
        reported, lambda rows: bag_of_words.predict(list(index["question"][rows]), list(index["full_name"][rows]))
    )

    targets = value_targets(index, inputs.candidates)
    value_pred = inputs.sae.value_predictions(acts, torch.tensor(rules)).numpy()
    lens = (
        lens_predictions(
            inputs.model,
            acts,
            inputs.last_block_activations,
            train,
            inputs.candidates,
            {"lens_by_slot": slots, "lens_by_rule": rules},
            rows=reported,
        )
        if inputs.has_lens
        else {}
    )
    lm_correct = index["lm_first_token_correct"].to_numpy().astype(bool)
    templates = index["template_idx"].to_numpy()

    out = {
        key: {}
        for key in (
            "n_prompts",
            "slot_accuracy",
            "confusion",
            "baselines",
            "value_accuracy",
            "lm_qa_accuracy",
            "asked_vs_answered",
        )
    }
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
            "sae": sae_value["accuracy"],
            "majority_baseline": majority["accuracy"],
            "sae_by_rule": sae_value["by_rule"],
            "majority_baseline_by_rule": majority["by_rule"],
        }
        for name, predicted in lens.items():
            read = M.value_accuracy(predicted[mask], targets[mask], rules[mask])
            out["value_accuracy"][cell][name] = read["accuracy"]
            out["value_accuracy"][cell][f"{name}_by_rule"] = read["by_rule"]
        lm = M.lm_answer_accuracy(lm_correct[mask], rules[mask], templates[mask])
        exact = inputs.qa_accuracy.get(cell, {})
        lm["exact"] = exact.get("exact")
        lm["exact_by_template"] = {k: v["exact"] for k, v in exact.get("by_template", {}).items()}
        out["lm_qa_accuracy"][cell] = lm
        person_ids = index["person_id"].to_numpy()[mask]
        answered = M.match_answered_rule(
            index["lm_predicted_first_token"].to_numpy()[mask],
            [[-1 if t is None else t for t in answers[p]] for p in person_ids],
            rules[mask],
        )
        out["asked_vs_answered"][cell] = M.asked_vs_answered(rules[mask], answered)
    return out


def sae_causal_metrics(inputs: EvaluationInputs, samples: dict, alphas, progress=None, picked_alpha=None) -> dict:
    """The SAE's causal tests on every cell's sample: its slots as a method (ablation, interchange,
    steering at the alpha the train cell picks, or ``picked_alpha`` when the samples hold no train
    cell) and the SAE's own sections: the slot swap at every alpha and the ablation of each slot's
    decoder direction."""
    directions = [project_out(slot_direction(inputs.sae, k)) for k in range(len(RULES))]
    causal = causal_tests(
        samples,
        inputs.layer,
        inputs.activations,
        inputs.index,
        {SAE_METHOD: SaeSlotMethod(inputs.sae)},
        alphas,
        every_alpha=(SAE_METHOD,),
        extra_ablations={"direction": directions},
        picked_alpha={SAE_METHOD: picked_alpha} if picked_alpha is not None else None,
        progress=progress,
    )
    result = causal["methods"][SAE_METHOD]
    swaps = result.pop("steering_by_alpha")
    return {
        "method": result,
        "direction": causal["extra_ablations"]["direction"],
        "swap": {f"alpha={float(a)}": swaps.get(f"alpha={float(a)}", {}) for a in alphas},
        "interchange_pairs": causal["interchange_pairs"],
    }


def causal_sae_methods(
    inputs: EvaluationInputs, samples: dict, alphas, cells: list[str], progress=None, picked_alpha=None
) -> dict:
    """The tests of the SAEs fine-tuned from this layer's (biosae.methods.sae_slot_causal), as
    metrics.json's ``methods`` holds them. A call of their own: the SAE's edited passes are the
    ones they are without them. ``picked_alpha``: as biosae.evaluation.method_tests.causal_tests'."""
    if not inputs.causal_saes:
        return {}
    methods = {name: CausalSaeSlotMethod(sae, name) for name, sae in inputs.causal_saes.items()}
    causal = causal_tests(
        samples,
        inputs.layer,
        inputs.activations,
        inputs.index,
        methods,
        alphas,
        das_training_pairs=inputs.causal_training_pairs,
        picked_alpha=picked_alpha,
        progress=progress,
    )
    readouts, _ = readout_tests(methods, inputs.activations, inputs.index, cells, answered_rules(inputs.index), None)
    return {
        name: {
            "rank": method.rank,
            "steerable": True,
            **causal["methods"][name],
            **readouts[name],
            "fit": inputs.causal_fit.get(name),
        }
        for name, method in methods.items()
    }


def joined_methods(inputs: EvaluationInputs, sae_result: dict, sae_readout: dict, causal: dict | None = None) -> dict:
    """metrics.json's ``methods``, in ``inputs.method_names`` order: the SAE's and those fine-tuned
    from it (``causal``, :func:`causal_sae_methods`) from this job, the others' from the
    evaluate_methods job of this layer."""
    others = {**inputs.method_tests.get("methods", {}), **(causal or {})}
    joined = {}
    for name in inputs.method_names:
        if name == SAE_METHOD:
            joined[name] = {"rank": inputs.sae.cfg.n_slots, "steerable": True, **sae_result, **sae_readout, "fit": None}
        elif name in others:
            joined[name] = others[name]
        else:
            raise BiosaeError(
                f"the method tests of layer {inputs.layer} hold no {name!r} "
                f"(they hold {', '.join(others) or 'none'}): rerun evaluate_methods"
            )
    return joined


def evaluate(inputs: EvaluationInputs, max_prompts_per_cell: int, swap_alphas, seed: int, progress=None) -> dict:
    cells = ordered_cells(inputs.index)
    metrics = {"cells": cells, "layer": inputs.layer}
    if inputs.method_tests.get("layer") != inputs.layer:
        raise BiosaeError(
            f"the method tests are of layer {inputs.method_tests.get('layer')}, this evaluation of layer {inputs.layer}"
        )
    train = (inputs.index["split"] == "train").to_numpy()
    train_rules = inputs.index["rule_idx"].to_numpy()[train]
    probe = LinearProbe().fit(inputs.activations[torch.from_numpy(train.copy())].numpy(), train_rules)  # a baseline
    metrics.update(correlational_metrics(inputs, cells, probe))
    metrics["value_readouts"] = seen_unseen(metrics["value_accuracy"])
    samples = cell_samples(inputs.model, inputs.tokenizer, inputs.index, cells, max_prompts_per_cell, seed)
    sae = sae_causal_metrics(inputs, samples, swap_alphas, progress)
    if sae["interchange_pairs"] != inputs.method_tests.get("interchange_pairs"):
        raise BiosaeError(
            f"the method tests of layer {inputs.layer} were scored on other interchange pairs "
            "(another seed or evaluate.max_prompts_per_cell?): rerun evaluate_methods"
        )
    sae_only = {SAE_METHOD: SaeSlotMethod(inputs.sae)} if SAE_METHOD in inputs.method_names else {}
    readouts, reference = readout_tests(
        sae_only, inputs.activations, inputs.index, cells, answered_rules(inputs.index), aligned_untrained_slots(inputs)
    )
    metrics["ablation"] = {
        "slot": sae["method"]["ablation"],
        "direction": sae["direction"],
        "random_direction": inputs.method_tests["random_direction"],
    }
    metrics["swap"] = sae["swap"]
    causal = causal_sae_methods(inputs, samples, swap_alphas, cells, progress)
    metrics["methods"] = joined_methods(inputs, sae["method"], readouts.get(SAE_METHOD, {}), causal)
    metrics["faithfulness_reference"] = reference
    metrics["interchange_pairs"] = sae["interchange_pairs"]
    metrics["margins"] = M.headline_margins(metrics["slot_accuracy"], metrics["baselines"])
    metrics["expected_results"] = M.expected_results(metrics)
    return metrics


def answered_rules(index) -> np.ndarray:
    """Per row: which of the person's attributes the LM's first answer token is (6: none)."""
    answers = person_answer_tokens(index)
    return M.match_answered_rule(
        index["lm_predicted_first_token"].to_numpy(),
        [[-1 if t is None else t for t in answers[p]] for p in index["person_id"]],
        index["rule_idx"].to_numpy(),
    )


def aligned_untrained_slots(inputs: EvaluationInputs) -> np.ndarray | None:
    """The untrained-LM SAE's argmax slot for each row of the trained LM's index (same QA rows)."""
    untrained = inputs.untrained_index
    if len(untrained) != len(inputs.index) or not np.array_equal(
        untrained["row"].to_numpy(), inputs.index["row"].to_numpy()
    ):
        return None
    return slot_predictions(inputs.untrained_sae, inputs.untrained_activations)
