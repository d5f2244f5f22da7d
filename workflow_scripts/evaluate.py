"""Snakemake adapter for stage 5: metrics.json, figures and summary.md."""

import os

import torch
from _common import rule_context

from biosae.lm.activations import load_activation_table, transformer_blocks
from biosae.evaluation.evaluate import EvaluationInputs, evaluate
from biosae.evaluation.figures import write_figures
from biosae.io import atomic_directory, read_json, write_json
from biosae.lm.model import load_model_dir, pick_device
from biosae.methods.das import das_fit_summary, load_das
from biosae.methods.unsupervised_sae import load_topk_sae
from biosae.evaluation.report import write_summary
from biosae.sae.model import load_sae

smk = snakemake  # noqa: F821
with rule_context(smk) as log:
    torch.set_num_threads(smk.threads)
    model, tokenizer = load_model_dir(smk.input.model, pick_device())
    activations, index = load_activation_table(smk.input.activations, smk.input.index)
    untrained_activations, untrained_index = load_activation_table(smk.input.untrained_activations,
                                                                   smk.input.untrained_index)
    inputs = EvaluationInputs(
        model=model, tokenizer=tokenizer, layer=smk.params.layer,
        sae=load_sae(os.path.dirname(smk.input.sae_cfg)), activations=activations, index=index,
        candidates=read_json(smk.input.candidates),
        untrained_sae=load_sae(os.path.dirname(smk.input.untrained_sae_cfg)),
        untrained_activations=untrained_activations, untrained_index=untrained_index,
        qa_accuracy=read_json(smk.input.qa_accuracy),
        method_names=tuple(smk.params.methods),
    )
    if "das_weights" in smk.input.keys():
        inputs.das_basis, das_cfg, inputs.das_training_pairs = load_das(os.path.dirname(smk.input.das_weights))
        inputs.method_fit["das"] = das_fit_summary(das_cfg, smk.input.das_log)
    if "unsupervised_sae_weights" in smk.input.keys():
        inputs.unsupervised_sae = load_topk_sae(os.path.dirname(smk.input.unsupervised_sae_weights))
        inputs.method_fit["sae_unsupervised"] = (read_json(smk.input.unsupervised_sae_cfg).get("history") or [{}])[-1]
    section = smk.params.evaluate
    metrics = evaluate(inputs, section["max_prompts_per_cell"], section["swap_alphas"], smk.params.seed,
                       progress=lambda cell: log.info("causal tests done: %s", cell))
    with atomic_directory(smk.output.figures) as tmp:
        figures = write_figures(metrics, tmp, smk.input.lm_log, smk.input.sae_log)
    write_json(smk.output.metrics, metrics)
    # the default run: every other layer of the default seed first (the layer profile)
    profile = [read_json(path) for path in smk.input.profile] + [metrics] if smk.input.profile else None
    write_summary(metrics, smk.output.summary, {caption: f"figures/{name}" for caption, name in figures.items()},
                  profile, len(transformer_blocks(model)))
    for line in metrics["expected_results"]:
        log.info("%s", line)
