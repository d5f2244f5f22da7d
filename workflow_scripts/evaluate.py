"""Snakemake adapter for stage 5: the SAE's tests joined with the other methods' (evaluate_methods)
into metrics.json, figures and summary.md."""

import os

import torch
from _common import job_device, rule_context

from biosae.evaluation.evaluate import evaluate, load_evaluation_inputs
from biosae.evaluation.figures import write_figures
from biosae.evaluation.report import write_summary
from biosae.io import atomic_directory, read_json, write_json
from biosae.lm.activations import transformer_blocks

smk = snakemake  # noqa: F821
with rule_context(smk) as log:
    torch.set_num_threads(smk.threads)
    inputs = load_evaluation_inputs(
        model_dir=smk.input.model,
        activations=smk.input.activations,
        index=smk.input.index,
        sae_dir=os.path.dirname(smk.input.sae_cfg),
        candidates=smk.input.candidates,
        untrained_activations=smk.input.untrained_activations,
        untrained_index=smk.input.untrained_index,
        untrained_sae_dir=os.path.dirname(smk.input.untrained_sae_cfg),
        qa_accuracy=smk.input.qa_accuracy,
        layer=smk.params.layer,
        methods=smk.params.methods,
        method_tests=smk.input.method_tests,
        last_block_activations=smk.input.get("last_block_activations"),
        device=job_device(smk),
        causal_sae_dirs={
            name.removesuffix("_causal_weights"): os.path.dirname(path)
            for name, path in smk.input.items()
            if name.endswith("_causal_weights")
        },
    )
    section = smk.params.evaluate
    metrics = evaluate(
        inputs,
        section["max_prompts_per_cell"],
        section["swap_alphas"],
        smk.params.seed,
        progress=lambda cell: log.info("causal tests done: %s", cell),
    )
    with atomic_directory(smk.output.figures) as tmp:
        figures = write_figures(metrics, tmp, smk.input.lm_log, smk.input.sae_log)
    write_json(smk.output.metrics, metrics)
    # the default run: every other layer of the default seed first (the layer profile)
    profile = [read_json(path) for path in smk.input.profile] + [metrics] if smk.input.profile else None
    write_summary(
        metrics,
        smk.output.summary,
        {caption: f"figures/{name}" for caption, name in figures.items()},
        profile,
        len(transformer_blocks(inputs.model)),
    )
    for line in metrics["expected_results"]:
        log.info("%s", line)
