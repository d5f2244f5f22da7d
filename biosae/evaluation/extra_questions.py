"""New questions on a finished run (``evaluate.extra_questions``): every file a cell of its own,
scored at every layer of the profile by the SAEs and methods the run trained, in one job per LM.

The finished run's files stay as they are: its metrics.json, summary and figures hold the shipped
cells, and the new cells get ``extra_questions.json`` and ``extra_questions.md`` of their own
(:func:`biosae.layout.extra_questions_metrics`). So adding a question file runs the LM over its rows
(activations of both LMs and the QA accuracy) and this job, and nothing else: no training, no pass
over the shipped rows, no shipped cell tested again.

Each number is the one the finished run's evaluation would give the cell: the same correlational
tests, each method fitted on the same train rows, and the causal tests on the same kind of sample
at the alpha the run's train cell picked (read from its metrics.json, since the train cell is not
tested again here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from biosae import layout
from biosae.devices import pick_device
from biosae.evaluation.baselines import LinearProbe
from biosae.evaluation.comparison import readout_tests
from biosae.evaluation.evaluate import (
    aligned_untrained_slots,
    answered_rules,
    causal_sae_methods,
    correlational_metrics,
    joined_methods,
    load_evaluation_inputs,
    ordered_cells,
    sae_causal_metrics,
)
from biosae.evaluation.markdown import format_number, markdown_table
from biosae.evaluation.method_tests import SAE_METHOD, cell_samples, evaluate_methods, load_trained_methods
from biosae.evaluation.metrics import headline_margins
from biosae.io import read_json
from biosae.lm.model import load_model_dir
from biosae.methods.causal_variants import VARIANTS as CAUSAL_VARIANTS
from biosae.methods.sae_slot import SaeSlotMethod

EXTRA_CELL_PREFIX = "extra:"


@dataclass
class ExtraQuestionFiles:
    """One LM's files that the scoring reads (paths; each layer's activation file lies beside its index)."""

    model_dir: str
    qa_accuracy: str  # the shipped cells' (read for the join; the new cells' is extra_qa_accuracy)
    extra_qa_accuracy: str
    index: str
    untrained_index: str
    extra_index: str
    untrained_extra_index: str
    lmrun: str  # the LM's prefix (biosae.layout): where each layer's SAEs and trained methods lie
    metrics: dict  # layer -> that layer's finished metrics.json (the alphas its train cell picked)


def score_extra_questions(
    files: ExtraQuestionFiles,
    layers: list[int],
    methods: list[str],
    max_prompts_per_cell: int,
    swap_alphas,
    seed: int,
    progress=None,
    device=None,
) -> dict:
    """The new cells' tests at every layer: {"cells": [...], "layers": {layer_<L>: {...}}}, each
    layer's entry holding metrics.json's per-cell sections for the new cells only. ``device``:
    where the LM runs (biosae.devices.pick_device; None is auto)."""
    lm = load_model_dir(files.model_dir, pick_device(device))
    samples, cells, answered = None, None, None
    by_layer = {}
    for layer in layers:
        # the methods the finished run tested at this layer (the causal SAE's controls at one only)
        tested = [name for name in methods if name in files.metrics[layer]["methods"]]
        inputs = load_evaluation_inputs(
            causal_sae_dirs={
                name: layout.causal_sae_dir(files.lmrun, layer, name) for name in tested if name in CAUSAL_VARIANTS
            },
            model_dir=files.model_dir,
            lm=lm,
            activations=layout.activation_file_beside(files.index, layer),
            index=files.index,
            sae_dir=layout.sae_dir(files.lmrun, layer),
            candidates=layout.sae_file(files.lmrun, layer, "value_candidates.json"),
            untrained_activations=layout.activation_file_beside(files.untrained_index, layer),
            untrained_index=files.untrained_index,
            untrained_sae_dir=layout.sae_dir(files.lmrun, layer, layout.UNTRAINED_LM),
            qa_accuracy=files.qa_accuracy,
            layer=layer,
            methods=tested,
            extra_activations=layout.activation_file_beside(files.extra_index, layer),
            extra_index=files.extra_index,
            untrained_extra_activations=layout.activation_file_beside(files.untrained_extra_index, layer),
            untrained_extra_index=files.untrained_extra_index,
            extra_qa_accuracy=files.extra_qa_accuracy,
            # the lens read-out of a lower layer fits its translator to the last block's rows
            **(
                {
                    "last_block_activations": layout.activation_file_beside(files.index, -1),
                    "extra_last_block_activations": layout.activation_file_beside(files.extra_index, -1),
                }
                if layer != -1 and -1 in layers
                else {}
            ),
        )
        if samples is None:  # the joined index is every layer's: sample, cache and pairs once
            cells = [cell for cell in ordered_cells(inputs.index) if cell.startswith(EXTRA_CELL_PREFIX)]
            samples = cell_samples(*lm, inputs.index, cells, max_prompts_per_cell, seed)
            answered = answered_rules(inputs.index)
        # a method whose steering the train cell found no alpha for (pick_alpha: None) steers nowhere
        picked = {
            name: result["alpha"]
            for name, result in files.metrics[layer]["methods"].items()
            if result.get("alpha") is not None
        }
        by_layer[layout.layer_name(layer)] = score_layer(
            inputs, cells, samples, answered, swap_alphas, seed, picked, files.lmrun, progress
        )
    return {"cells": cells, "layers": by_layer}


def score_layer(inputs, cells, samples, answered, swap_alphas, seed, picked, lmrun, progress) -> dict:
    """One layer's tests of the new cells, as :func:`biosae.evaluation.evaluate.evaluate` runs them."""
    methods = list(inputs.method_names)
    train = (inputs.index["split"] == "train").to_numpy()
    train_rules = inputs.index["rule_idx"].to_numpy()[train]
    probe = LinearProbe().fit(inputs.activations[torch.from_numpy(train.copy())].numpy(), train_rules)
    result = {"layer": inputs.layer, **correlational_metrics(inputs, cells, probe)}
    sae = sae_causal_metrics(inputs, samples, swap_alphas, picked_alpha=picked.get(SAE_METHOD))
    trained, fit = load_trained_methods(
        layout.das_dir(lmrun, inputs.layer) if "das" in methods else None,
        layout.topk_sae_dir(lmrun, inputs.layer) if "sae_unsupervised" in methods else None,
    )
    inputs.method_tests = evaluate_methods(
        samples,
        inputs.layer,
        inputs.activations,
        inputs.index,
        methods,
        alphas=swap_alphas,
        seed=seed,
        answered_rule=answered,
        fit=fit,
        picked_alpha=picked,
        progress=progress,
        **trained,
    )
    causal = causal_sae_methods(inputs, samples, swap_alphas, cells, progress, picked_alpha=picked)
    sae_only = {SAE_METHOD: SaeSlotMethod(inputs.sae)} if SAE_METHOD in methods else {}
    readouts, reference = readout_tests(
        sae_only, inputs.activations, inputs.index, cells, answered, aligned_untrained_slots(inputs)
    )
    result["ablation"] = {
        "slot": sae["method"]["ablation"],
        "direction": sae["direction"],
        "random_direction": inputs.method_tests["random_direction"],
    }
    result["swap"] = sae["swap"]
    result["methods"] = joined_methods(inputs, sae["method"], readouts.get(SAE_METHOD, {}), causal)
    result["faithfulness_reference"] = reference
    result["interchange_pairs"] = sae["interchange_pairs"]
    result["margins"] = headline_margins(result["slot_accuracy"], result["baselines"])
    return result


def extra_questions_summary(scores: dict, methods: list[str]) -> str:
    """extra_questions.md: per new cell and layer, the LM's accuracy, the SAE's slot accuracy with
    its margin over the untrained LM's, and every method's interchange accuracy."""
    lines = [
        "# Your questions, scored on the finished run",
        "",
        "Each file of `evaluate.extra_questions` is a cell, scored by the LM, SAEs and methods the run "
        "trained (nothing retrained). LM: its first answer token's accuracy. Slot accuracy: the SAE's "
        "argmax slot names the asked rule (margin: over the same SAE trained on the untrained LM). "
        "IIA: interchange accuracy of each method (the same test as summary.md's).",
        "",
    ]
    header = ["cell", "layer", "prompts", "LM", "slot accuracy (margin)", *(f"{name} IIA" for name in methods)]
    rows = []
    for cell in scores["cells"]:
        for name, layer in scores["layers"].items():
            margin = layer["margins"][cell]["over_untrained_lm"]
            rows.append(
                [
                    cell,
                    name.removeprefix("layer_"),
                    str(layer["n_prompts"][cell]),
                    format_number(layer["lm_qa_accuracy"][cell].get("first_token")),
                    f"{format_number(layer['slot_accuracy'][cell])} ({_signed(margin)})",
                    *(format_number(_iia(layer["methods"].get(method, {}), cell)) for method in methods),
                ]
            )
    return "\n".join([*lines, *markdown_table(header, rows), ""])


def _iia(result: dict, cell: str):
    return (result.get("interchange", {}).get(cell) or {}).get("iia")


def _signed(value) -> str:
    return "–" if value is None else f"{value:+.3f}"


def read_layer_metrics(paths: list[str]) -> dict:
    """layer -> metrics.json of each finished run of one LM's profile (its ``layer`` key)."""
    return {metrics["layer"]: metrics for metrics in map(read_json, paths)}
