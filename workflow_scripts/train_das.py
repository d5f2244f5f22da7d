"""Snakemake adapter: train the DAS subspace on train-cell interchange pairs (LM frozen)."""

import os

import torch
from _common import rule_context

from biosae.lm.activations import load_activation_table
from biosae.evaluation.evaluate import causal_sample
from biosae.lm.model import load_model_dir, pick_device
from biosae.methods.das import DASConfig, save_das, train_das

smk = snakemake  # noqa: F821
with rule_context(smk) as log:
    torch.set_num_threads(smk.threads)
    model, tokenizer = load_model_dir(smk.input.model, pick_device())
    activations, index = load_activation_table(smk.input.activations, smk.input.index)
    cfg = DASConfig(d_model=activations.shape[1], layer=smk.params.layer, seed=smk.params.seed, **smk.params.das)
    # the train cell's scored bases (evaluate's causal sample) never enter DAS's training pool
    scored = causal_sample(index, "train", smk.params.max_prompts_per_cell, smk.params.seed)
    subspace, history, training, validation = train_das(model, tokenizer, index, activations, cfg, scored,
                                                        progress=lambda row: log.info("DAS %s", row))
    save_das(os.path.dirname(smk.output.cfg), subspace, cfg, history, training, validation)
    log.info("DAS rank %d trained on %d pairs: %s", cfg.rank, int(training.scored.sum()), history[-1])
