"""Snakemake adapter for stage 5a: every localization method but the supervised SAE, tested at
every profile layer of one LM (biosae.evaluation.method_tests), one JSON file per layer that
evaluate joins into metrics.json. The LM and each cell's causal sample, prompt cache and pairs are
loaded and built once for all layers; each layer's activations and trained methods are read in turn."""

import torch
from _common import rule_context

from biosae import layout
from biosae.evaluation.evaluate import answered_rules, ordered_cells
from biosae.evaluation.method_tests import cell_samples, evaluate_methods, load_trained_methods
from biosae.io import write_json
from biosae.lm.activations import load_activation_tables
from biosae.lm.model import load_model_dir, pick_device

smk = snakemake  # noqa: F821
with rule_context(smk) as log:
    torch.set_num_threads(smk.threads)
    names, section, seed, lmrun = smk.params.methods, smk.params.evaluate, smk.params.seed, smk.wildcards.lmrun
    model, tokenizer = load_model_dir(smk.input.model, pick_device())
    samples = answered = None
    for path in smk.output:
        # One file per layer. The activations lie beside the index, and the trained methods' files
        # of each layer beside the seed hook's (rules/methods.smk says why those are the inputs).
        layer = layout.layer_of(path)
        name = layout.layer_name(layer)
        # the extra questions' rows (evaluate.extra_questions) after the shipped ones
        indexes = [smk.input.index] + ([extra] if (extra := getattr(smk.input, "extra_index", None)) else [])
        activations, index = load_activation_tables(
            *[(layout.activation_file_beside(path, layer), path) for path in indexes]
        )
        if samples is None:
            samples = cell_samples(model, tokenizer, index, ordered_cells(index), section["max_prompts_per_cell"], seed)
            answered = answered_rules(index)
        trained, fit = load_trained_methods(
            layout.das_dir(lmrun, layer) if "das" in names else None,
            layout.topk_sae_dir(lmrun, layer) if "sae_unsupervised" in names else None,
        )
        tests = evaluate_methods(
            samples,
            layer,
            activations,
            index,
            names,
            alphas=section["swap_alphas"],
            seed=seed,
            answered_rule=answered,
            fit=fit,
            progress=lambda cell: log.info("%s: causal tests done: %s", name, cell),
            **trained,
        )
        write_json(path, tests)
        log.info("%s: %s tested", name, ", ".join(tests["methods"]) or "the random control")
        del activations
