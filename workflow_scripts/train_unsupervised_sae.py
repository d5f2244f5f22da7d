"""Snakemake adapter: train the unsupervised TopK SAE on the train cell's activations."""

import os

import torch
from _common import rule_context

from biosae.lm.activations import load_activation_table
from biosae.methods.unsupervised_sae import TopKSAEConfig, save_topk_sae, train_topk_sae

smk = snakemake  # noqa: F821
with rule_context(smk) as log:
    torch.set_num_threads(smk.threads)
    activations, index = load_activation_table(smk.input.activations, smk.input.index)
    train = torch.from_numpy((index["split"] == "train").to_numpy())
    cfg = TopKSAEConfig(d_model=activations.shape[1], seed=smk.params.seed, **smk.params.sae_unsupervised)
    model, history = train_topk_sae(activations[train], cfg, progress=lambda row: log.info("TopK SAE %s", row))
    save_topk_sae(os.path.dirname(smk.output.cfg), model, {"history": history})
    log.info("unsupervised SAE trained on %d rows: %s", int(train.sum()), history[-1])
