"""Snakemake adapter for stage 4: train the supervised 6-slot SAE of every profile layer of one LM."""

import os
import shutil

import torch
from _common import job_device, profile_layer_files, rule_context

from biosae.io import write_json
from biosae.sae.inputs import load_training_layers, sae_config
from biosae.sae.model import save_sae
from biosae.sae.training import train_sae_layers

smk = snakemake  # noqa: F821
with rule_context(smk) as log:
    torch.set_num_threads(smk.threads)
    max_rows = smk.params.sae["max_train_rows"]
    names, paths = zip(*profile_layer_files(smk.output.cfg, smk.input.index))
    layers, rule_idx, value_target, candidates, index = load_training_layers(
        paths, smk.input.index, max_rows, smk.params.seed
    )
    cfg = sae_config(smk.params.sae, layers[0].shape[1], candidates, smk.params.seed)
    device = job_device(smk)
    trained = train_sae_layers(
        layers.to(device),
        rule_idx.to(device),
        value_target.to(device),
        cfg,
        log_paths=smk.output.log_csv,
        checkpoint_dir=smk.params.checkpoint_dir,
        progress=True,
        layer_names=[name.replace("_", " ") for name in names],
    )
    for (model, history), cfg_path, candidates_path, name in zip(trained, smk.output.cfg, smk.output.candidates, names):
        os.makedirs(os.path.dirname(cfg_path), exist_ok=True)
        save_sae(os.path.dirname(cfg_path), model)
        write_json(candidates_path, candidates)
        log.info(
            "%s: SAE trained on %d of %d train-cell rows (sae.max_train_rows: %s); last epoch: %s",
            name,
            len(rule_idx),
            int((index["split"] == "train").sum()),
            max_rows,
            history[-1],
        )
    shutil.rmtree(smk.params.checkpoint_dir, ignore_errors=True)
