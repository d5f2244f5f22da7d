"""Snakemake adapter for stage 3: answer-position activations of every QA row."""

import torch
from _common import rule_context

from biosae.activations import build_activation_table, save_activation_table
from biosae.lm import load_model_dir, pick_device
from biosae.questions import load_question_files

smk = snakemake  # noqa: F821
with rule_context(smk) as log:
    torch.set_num_threads(smk.threads)
    model, tokenizer = load_model_dir(smk.input.model, pick_device())
    rows = load_question_files({key: path for key, path in smk.input.items() if key != "model"})
    activations, index = build_activation_table(model, tokenizer, rows, smk.params.layer, smk.params.batch_size)
    save_activation_table(activations, index, smk.output.activations, smk.output.index, smk.params.layer,
                          smk.input.model)
    log.info("%d activations of width %d at layer %s", *activations.shape, smk.params.layer)
