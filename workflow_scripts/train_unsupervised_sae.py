"""Snakemake adapter: train the unsupervised TopK SAE of every profile layer of one LM at once,
on the train cell's activations (or a seeded subsample: methods.sae_unsupervised.max_train_rows)."""

import os

import torch
from _common import job_device, profile_layer_files, rule_context

from biosae.sae.inputs import load_training_layers
from biosae.sae.topk import TopKSAEConfig, save_topk_sae, train_topk_sae_layers

smk = snakemake  # noqa: F821
with rule_context(smk) as log:
    torch.set_num_threads(smk.threads)
    section = dict(smk.params.sae_unsupervised)
    max_rows = section.pop("max_train_rows")
    names, paths = zip(*profile_layer_files(smk.output.cfg, smk.input.index))
    layers, _, _, _, index = load_training_layers(paths, smk.input.index, max_rows, smk.params.seed)
    cfg = TopKSAEConfig(d_model=layers.shape[2], seed=smk.params.seed, **section)
    trained = train_topk_sae_layers(
        layers.to(job_device(smk)), cfg, progress=lambda layer, row: log.info("TopK SAE %s %s", names[layer], row)
    )
    for (model, history), cfg_path, name in zip(trained, smk.output.cfg, names):
        save_topk_sae(os.path.dirname(cfg_path), model, {"history": history})
        log.info(
            "%s: unsupervised SAE trained on %d of %d train-cell rows: %s",
            name,
            layers.shape[1],
            int((index["split"] == "train").sum()),
            history[-1],
        )
