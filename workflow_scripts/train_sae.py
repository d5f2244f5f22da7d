"""Snakemake adapter for stage 4: train the supervised 6-slot SAE on the train cell."""

import os
import shutil

import torch
from _common import rule_context

from biosae.lm.activations import load_activation_table
from biosae.io import write_json
from biosae.sae.model import SAEConfig, save_sae
from biosae.sae.inputs import training_tensors, value_candidates
from biosae.sae.training import train_sae

smk = snakemake  # noqa: F821
with rule_context(smk) as log:
    torch.set_num_threads(smk.threads)
    activations, index = load_activation_table(smk.input.activations, smk.input.index)
    candidates = value_candidates(index)
    max_rows = smk.params.sae["max_train_rows"]
    h, rule_idx, value_target = training_tensors(activations, index, candidates, max_rows, smk.params.seed)
    section = {key: value for key, value in smk.params.sae.items() if key not in ("n_slots", "max_train_rows")}
    cfg = SAEConfig(d_model=h.shape[1], value_vocab_sizes=[len(candidates[r]) for r in candidates],
                    n_slots=smk.params.sae["n_slots"], seed=smk.params.seed, **section)
    model, history = train_sae(h, rule_idx, value_target, cfg, log_path=smk.output.log_csv,
                               checkpoint_dir=smk.params.checkpoint_dir, progress=True)
    os.makedirs(os.path.dirname(smk.output.cfg), exist_ok=True)
    save_sae(os.path.dirname(smk.output.cfg), model)
    write_json(smk.output.candidates, candidates)
    shutil.rmtree(smk.params.checkpoint_dir, ignore_errors=True)
    log.info("SAE trained on %d of %d train-cell rows (sae.max_train_rows: %s); last epoch: %s", len(h),
             int((index["split"] == "train").sum()), max_rows, history[-1])
