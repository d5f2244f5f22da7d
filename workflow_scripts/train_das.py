"""Snakemake adapter: train the DAS subspace of every profile layer of one LM on train-cell
interchange pairs (LM frozen). The LM, the pairs and their prompt caches are loaded and built once
for all layers; each layer's activations are read in turn."""

import os

import torch
from _common import job_device, profile_layer_files, rule_context

from biosae.evaluation.method_tests import causal_sample
from biosae.lm.activations import load_activation_table
from biosae.lm.model import load_model_dir
from biosae.methods.das import DASConfig, prepare_das_prompts, save_das, train_das

smk = snakemake  # noqa: F821
with rule_context(smk) as log:
    torch.set_num_threads(smk.threads)
    model, tokenizer = load_model_dir(smk.input.model, job_device(smk))
    prompts = None
    for cfg_path, (name, path) in zip(smk.output.cfg, profile_layer_files(smk.output.cfg, smk.input.index)):
        activations, index = load_activation_table(path, smk.input.index)
        cfg = DASConfig(
            d_model=activations.shape[1], layer=int(name.removeprefix("layer_")), seed=smk.params.seed, **smk.params.das
        )
        # the train cell's scored bases (evaluate's causal sample) never enter DAS's training pool
        scored = causal_sample(index, "train", smk.params.max_prompts_per_cell, smk.params.seed)
        if prompts is None:
            prompts = prepare_das_prompts(model, tokenizer, index, scored, cfg)
        subspace, history, training, validation = train_das(
            model,
            tokenizer,
            index,
            activations,
            cfg,
            scored,
            prompts=prompts,
            progress=lambda row: log.info("DAS %s %s", name, row),
        )
        save_das(os.path.dirname(cfg_path), subspace, cfg, history, training, validation)
        log.info("%s: DAS rank %d trained on %d pairs: %s", name, cfg.rank, int(training.scored.sum()), history[-1])
        del activations
