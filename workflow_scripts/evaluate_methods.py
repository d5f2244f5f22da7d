"""Snakemake adapter for stage 5a: every localization method but the supervised SAE, tested at
every profile layer of one LM (biosae.evaluation.method_layers), one JSON file per layer that
evaluate joins into metrics.json."""

import torch
from _common import job_device, rule_context

from biosae import layout
from biosae.evaluation.method_layers import LayerMethodTests
from biosae.io import write_json
from biosae.lm.model import load_model_dir

smk = snakemake  # noqa: F821
with rule_context(smk) as log:
    torch.set_num_threads(smk.threads)
    names, section, lmrun = smk.params.methods, smk.params.evaluate, smk.wildcards.lmrun
    model, tokenizer = load_model_dir(smk.input.model, job_device(smk))
    # The trained methods' files of each layer lie beside the seed hook's (rules/methods.smk says
    # why those are the inputs).
    tests_of = LayerMethodTests(
        model,
        tokenizer,
        smk.input.index,
        names,
        section["max_prompts_per_cell"],
        section["swap_alphas"],
        smk.params.seed,
        das_dir=(lambda layer: layout.das_dir(lmrun, layer)) if "das" in names else None,
        topk_sae_dir=(lambda layer: layout.topk_sae_dir(lmrun, layer)) if "sae_unsupervised" in names else None,
    )
    for path in smk.output:
        layer = layout.layer_of(path)
        name = layout.layer_name(layer)
        activations, index = tests_of.load_layer(layer)
        tests = tests_of.test_layer(
            layer, activations, index, progress=lambda cell: log.info("%s: causal tests done: %s", name, cell)
        )
        write_json(path, tests)
        log.info("%s: %s tested", name, ", ".join(tests["methods"]) or "the random control")
        del activations
