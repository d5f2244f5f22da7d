"""Stage 5a: the causal tests shared by every localization method, and the job that runs every
method but the supervised SAE at every layer of the profile.

None of those methods' tests depends on the SAE, so they run in a job of their own (rule
``evaluate_methods``, one per LM), and evaluate joins their results with the SAE's into
metrics.json: changing the SAE's settings (say ``sae.lambda_align``) reruns the SAE and evaluate,
not DAS's, the probe's, DiffMean's, the TopK SAE's and the random control's tests. One job per LM
because what they need beside a layer's activations doesn't depend on the layer: the LM is loaded
once, and each cell's causal sample, its prompt-prefix cache and its interchange pairs are built
once for every layer and method (:func:`cell_samples`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from biosae.errors import BiosaeError
from biosae.evaluation.comparison import (
    CausalSample,
    CellPrompts,
    EditBatch,
    ablation_edits,
    ablation_result,
    interchange_edits,
    interchange_result,
    isolate_result,
    pick_alpha,
    readout_tests,
    steering_edits,
    steering_result,
)
from biosae.evaluation.metrics import disentanglement
from biosae.io import read_json
from biosae.lm.activations import encode_prompts
from biosae.lm.prompt_cache import PromptCache
from biosae.methods.base import FitInputs
from biosae.methods.causal_variants import VARIANTS
from biosae.methods.das import das_fit_summary, load_das
from biosae.methods.pairs import InterchangePairs, evaluation_pairs, person_answer_tokens, same_rule_pairs
from biosae.methods.probe import LinearProbe
from biosae.methods.random_control import fit_random
from biosae.methods.registry import build_methods
from biosae.methods.sae_slot_causal import fit_summary as causal_fit_summary
from biosae.methods.sae_slot_causal import load_causal_sae
from biosae.rules import RULES
from biosae.sae.topk import CFG_FILENAME as TOPK_CFG_FILENAME
from biosae.sae.topk import load_topk_sae

SAE_METHOD = "sae_slot"  # tested inside evaluate, beside its SAE's other tests
# tested inside evaluate too: they are fine-tuned from the SAE, so they change when it does
TESTED_IN_EVALUATE = (SAE_METHOD, *VARIANTS)
CONTROL_METHOD = "random"  # always tested: metrics.json's ``ablation.random_direction`` is its ablation


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


@dataclass
class CellSample(CausalSample):
    """What the causal tests of one cell need, at any layer: its sample, prefix cache and pairs
    (the IIA's, and the same-rule pairs of RAVEL's Isolate)."""

    pairs: InterchangePairs
    same_rule: InterchangePairs

    def at_layer(self, layer: int) -> CellPrompts:
        """The sample's prompts with their clean pass at ``layer`` (what every edit is scored against)."""
        return CellPrompts(self.rows, self.rules, self.first, self.person_tokens, self.cache, layer)


def cell_samples(model, tokenizer, index, cells: list[str], max_prompts: int, seed: int) -> dict[str, CellSample]:
    """Every cell's causal sample with its prompt cache and interchange pairs (cells without rows left out)."""
    answers = person_answer_tokens(index)
    samples = {}
    for cell in cells:
        rows = causal_sample(index, cell, max_prompts, seed)
        if len(rows) == 0:
            continue
        sub = index.iloc[rows]
        prompts, first = encode_prompts(tokenizer, sub.to_dict("records"))
        person_tokens = np.array([[t if t is not None else -1 for t in answers[p]] for p in sub["person_id"]])
        samples[cell] = CellSample(
            rows,
            sub["rule_idx"].to_numpy(),
            first,
            person_tokens,
            PromptCache(model, prompts),
            evaluation_pairs(index, cell, rows, seed),
            same_rule_pairs(index, cell, rows, seed),
        )
    return samples


def causal_tests(
    samples: dict[str, CellSample],
    layer: int,
    activations: torch.Tensor,
    index,
    methods: dict,
    alphas,
    *,
    every_alpha: tuple = (),
    extra_ablations: dict | None = None,
    das_training_pairs: set = frozenset(),
    picked_alpha: dict | None = None,
    progress=None,
) -> dict:
    """Ablation, interchange and steering of every method in ``methods`` on every cell's sample, at ``layer``.

    The train cell runs first: it picks each additive method's alpha, scored on every cell
    (``picked_alpha``: method -> the alpha a finished run's train cell picked, for samples without
    the train cell: new questions on a finished run). A method
    in ``every_alpha`` is also scored at every alpha on every cell (its ``steering_by_alpha``: the
    SAE's swap). ``extra_ablations``: name -> six edits, ablations that are not a method's (the
    SAE's decoder directions). Isolate's edits run in a batch of their own, after the others: the
    others' passes are then the ones they are without it. Returns {"methods": {name: {...}},
    "extra_ablations": {name: {cell: ...}}, "interchange_pairs": {cell: ...}}.
    """
    extra_ablations = extra_ablations or {}
    per_method = {
        name: {
            "ablation": {},
            "interchange": {},
            "isolate": {},
            "disentanglement": {},
            "steering": {},
            "alpha_selection": {},
        }
        for name in methods
    }
    by_alpha = {name: {} for name in every_alpha}
    extra = {name: {} for name in extra_ablations}
    chosen_alpha: dict[str, float] = dict(picked_alpha or {})
    pairs_summary = {}
    for cell in sorted(samples, key=lambda c: c != "train"):
        sample = samples[cell]
        prompts_of_cell = sample.at_layer(layer)
        pairs = sample.pairs
        leaked_pairs = pairs.as_set() & das_training_pairs
        if leaked_pairs:
            raise BiosaeError(
                f"DAS or a causal SAE trained on {len(leaked_pairs)} pair(s) scored on cell {cell}, e.g. "
                f"{sorted(leaked_pairs)[0]}: its training pool must exclude the scored bases"
            )
        pairs_summary[cell] = {
            "n": int(pairs.scored.sum()),
            "without_source": int((~pairs.scored).sum()),
            "same_rule_n": int(sample.same_rule.scored.sum()),
        }
        # every alpha on the train cell (to pick one) and for the every_alpha methods; elsewhere only
        # the alpha the train cell picked
        alphas_of = {
            name: [float(a) for a in alphas]
            if cell == "train" or name in every_alpha
            else [chosen_alpha[name]]
            if name in chosen_alpha
            else []
            for name, method in methods.items()
            if method.steerable
        }
        batch = EditBatch()
        for name, method in methods.items():
            batch.add((name, "ablation"), ablation_edits(method))
            batch.add((name, "interchange"), interchange_edits(prompts_of_cell, method, pairs, activations))
            for alpha in alphas_of.get(name, []):
                batch.add((name, alpha), steering_edits(prompts_of_cell, method, alpha))
        for name, edits in extra_ablations.items():
            batch.add((name, "extra"), [lambda idx, edit=edit: edit for edit in edits])
        outcome = batch.run(prompts_of_cell)
        isolate_batch = EditBatch()
        for name, method in methods.items():
            isolate_batch.add(name, interchange_edits(prompts_of_cell, method, sample.same_rule, activations))
        isolated = isolate_batch.run(prompts_of_cell)
        for name in extra_ablations:
            extra[name][cell] = ablation_result(prompts_of_cell, *outcome[(name, "extra")])
        for name, result in per_method.items():
            result["ablation"][cell] = ablation_result(prompts_of_cell, *outcome[(name, "ablation")])
            result["interchange"][cell] = interchange_result(
                prompts_of_cell, outcome[(name, "interchange")][0][0], pairs, index
            )
            result["isolate"][cell] = isolate_result(prompts_of_cell, isolated[name][0][0], sample.same_rule, index)
            result["disentanglement"][cell] = disentanglement(
                result["interchange"][cell]["iia"], result["isolate"][cell]["isolate"]
            )
            steering = {
                alpha: steering_result(prompts_of_cell, outcome[(name, alpha)][0]) for alpha in alphas_of.get(name, [])
            }
            if cell == "train" and steering:
                result["alpha_selection"] = {f"alpha={alpha}": value for alpha, value in steering.items()}
                if pick_alpha(result["alpha_selection"]) is not None:
                    chosen_alpha[name] = pick_alpha(result["alpha_selection"])
            if name in every_alpha:
                for alpha, value in steering.items():
                    by_alpha[name].setdefault(f"alpha={alpha}", {})[cell] = value
            if name in chosen_alpha:
                result["steering"][cell] = steering[chosen_alpha[name]]
        if progress:
            progress(cell)
    for name, result in per_method.items():
        result["alpha"] = chosen_alpha.get(name)
        result["alpha_selection"] = {
            key: value["mean_off_diagonal"] for key, value in result["alpha_selection"].items()
        }
        if name in every_alpha:
            result["steering_by_alpha"] = by_alpha[name]
    return {"methods": per_method, "extra_ablations": extra, "interchange_pairs": pairs_summary}


def train_cell_fit_inputs(activations: torch.Tensor, index, seed: int, *, with_probe: bool, **artifacts) -> FitInputs:
    """What every method is fitted on: the train cell's rows of a layer's activation table, and the
    linear probe fitted there when ``with_probe``; ``artifacts``: the trained ones (FitInputs' fields)."""
    train = (index["split"] == "train").to_numpy()
    train_rules = index["rule_idx"].to_numpy()[train]
    train_activations = activations[torch.from_numpy(train.copy())]
    probe = LinearProbe().fit(train_activations.numpy(), train_rules) if with_probe else None
    return FitInputs(train_activations, train_rules, seed, probe=probe, **artifacts)


def evaluate_methods(
    samples: dict[str, CellSample],
    layer: int,
    activations: torch.Tensor,
    index,
    names,
    *,
    alphas,
    seed: int,
    answered_rule: np.ndarray,
    das_basis=None,
    das_training_pairs: set = frozenset(),
    unsupervised_sae=None,
    fit: dict | None = None,
    picked_alpha: dict | None = None,
    progress=None,
) -> dict:
    """Every method of ``names`` but the supervised SAE and those fine-tuned from it
    (``TESTED_IN_EVALUATE``), and the random control, at one layer:
    causal tests and read-outs, as evaluate puts them in metrics.json's ``methods``. JSON-able.

    ``answered_rule``: per row, which of the person's attributes the LM answered
    (biosae.evaluation.evaluate.answered_rules). ``fit``: method -> what its training reported.
    ``picked_alpha``: as :func:`causal_tests`'. ``das_training_pairs``: every pair DAS trained on.
    """
    tested = [name for name in names if name not in TESTED_IN_EVALUATE]
    inputs = train_cell_fit_inputs(
        activations,
        index,
        seed,
        with_probe="probe" in tested,
        das_basis=das_basis,
        unsupervised_sae=unsupervised_sae,
    )
    methods = build_methods(tested, inputs)
    if CONTROL_METHOD not in methods:
        # not compared, but tested all the same: one random direction per rule (the rank
        # build_methods gives it when no method is wider)
        methods[CONTROL_METHOD] = fit_random(
            FitInputs(inputs.train_activations, inputs.train_rule_idx, seed, rank=len(RULES))
        )
    causal = causal_tests(
        samples,
        layer,
        activations,
        index,
        methods,
        alphas,
        das_training_pairs=das_training_pairs,
        picked_alpha=picked_alpha,
        progress=progress,
    )
    # samples holds every cell, in evaluation order
    readouts, _ = readout_tests(methods, activations, index, list(samples), answered_rule, None)
    fit = fit or {}
    return {
        "layer": layer,
        "methods": {
            name: {
                "rank": getattr(methods[name], "rank", None),
                "steerable": bool(methods[name].steerable),
                **causal["methods"][name],
                **readouts[name],
                "fit": fit.get(name),
            }
            for name in tested
        },
        "random_direction": causal["methods"][CONTROL_METHOD]["ablation"],
        "interchange_pairs": causal["interchange_pairs"],
    }


def load_trained_methods(das_dir=None, unsupervised_sae_dir=None, causal_sae_dirs=None) -> tuple[dict, dict]:
    """One layer's trained methods, as :func:`evaluate_methods`' keyword arguments (a directory
    None: that method is not compared; ``causal_sae_dirs``: variant -> directory of the causal
    SAEs at this layer), and what each one's training reported (metrics.json's ``fit``). The
    pairs that DAS and the causal SAEs trained on are joined: none of them may be scored."""
    trained, fit = {}, {}
    if das_dir is not None:
        trained["das_basis"], das_cfg, trained["das_training_pairs"] = load_das(das_dir)
        fit["das"] = das_fit_summary(das_cfg, Path(das_dir) / "train_log.csv")
    for name, directory in (causal_sae_dirs or {}).items():
        sae, selection, seen = load_causal_sae(directory)
        trained.setdefault("causal_saes", {})[name] = sae
        trained["das_training_pairs"] = trained.get("das_training_pairs", set()) | seen
        fit[name] = causal_fit_summary(selection)
    if unsupervised_sae_dir is not None:
        trained["unsupervised_sae"] = load_topk_sae(unsupervised_sae_dir)
        fit["sae_unsupervised"] = (read_json(Path(unsupervised_sae_dir) / TOPK_CFG_FILENAME).get("history") or [{}])[-1]
    return trained, fit
