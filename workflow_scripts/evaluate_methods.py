"""Snakemake adapter for stage 5a: every localization method but the supervised SAE, tested at
every profile layer of one LM (biosae.evaluation.method_tests), one JSON file per layer that
evaluate joins into metrics.json. The LM and each cell's causal sample, prompt cache and pairs are
loaded and built once for all layers; each layer's activations and trained methods are read in turn."""

import time
from pathlib import Path

import torch
from _common import rule_context

from biosae.evaluation.evaluate import answered_rules, ordered_cells
from biosae.evaluation.method_tests import cell_samples, evaluate_methods, load_trained_methods
from biosae.io import write_json
from biosae.lm.activations import load_activation_table
from biosae.lm.model import load_model_dir, pick_device

smk = snakemake  # noqa: F821
with rule_context(smk) as log:
    torch.set_num_threads(smk.threads)
    names, section, seed = smk.params.methods, smk.params.evaluate, smk.params.seed
    start = time.perf_counter()
    model, tokenizer = load_model_dir(smk.input.model, pick_device())
    samples = answered = None
    shared_seconds = time.perf_counter() - start
    for path in smk.output:
        # …/tests/layer_<L>.json. The activations lie beside the index, and the trained methods'
        # files of layer L beside the seed hook's (rules/methods.smk says why those are the inputs).
        start = time.perf_counter()
        name = Path(path).stem
        activations, index = load_activation_table(Path(smk.input.index).parent / f"{name}.safetensors", smk.input.index)
        if samples is None:
            built = time.perf_counter()
            samples = cell_samples(model, tokenizer, index, ordered_cells(index), section["max_prompts_per_cell"], seed)
            answered = answered_rules(index)
            shared_seconds += time.perf_counter() - built
            start += time.perf_counter() - built
        trained, fit = load_trained_methods(
            Path(smk.input.das_cfg).parent.parent / name if "das" in names else None,
            Path(smk.input.unsupervised_sae_cfg).parent.parent / name if "sae_unsupervised" in names else None)
        tests = evaluate_methods(samples, int(name.removeprefix("layer_")), activations, index, names,
                                 alphas=section["swap_alphas"], seed=seed, answered_rule=answered, fit=fit,
                                 progress=lambda cell: log.info("%s: causal tests done: %s", name, cell), **trained)
        # what this layer took, and what every layer shared (the LM, the samples and their prompt
        # caches): bench/run.py tells one layer's cost from them
        tests["seconds"] = round(time.perf_counter() - start, 2)
        tests["shared_seconds"] = round(shared_seconds, 2)
        write_json(path, tests)
        log.info("%s: %s tested in %.1f s", name, ", ".join(tests["methods"]) or "the random control", tests["seconds"])
        del activations
