"""Snakemake adapter: fine-tune the supervised SAE of every profile layer of one LM with the
interchange loss (sae_slot_causal), and its controls at their one layer (biosae.methods.sae_slot_causal).
The LM, the pairs and their prompt caches are built once; each layer's activations are read in turn."""

import os
from collections import defaultdict

import torch
from _common import rule_context

from biosae import layout
from biosae.evaluation.method_tests import causal_sample
from biosae.lm.activations import load_activation_table
from biosae.lm.model import load_model_dir, pick_device
from biosae.methods.causal_variants import NO_LABELS
from biosae.methods.sae_slot_causal import (
    CausalSAEConfig,
    no_labels_config,
    prepare_prompts,
    save_causal_sae,
    train_causal_sae,
)
from biosae.sae.inputs import training_tensors, value_candidates
from biosae.sae.model import load_sae
from biosae.sae.training import train_sae

smk = snakemake  # noqa: F821
with rule_context(smk) as log:
    torch.set_num_threads(smk.threads)
    model, tokenizer = load_model_dir(smk.input.model, pick_device())
    lmrun = smk.wildcards.lmrun
    variants_of = defaultdict(list)  # layer -> the variants trained there, each with its output directory
    for path in smk.output.weights:
        variants_of[layout.layer_of(path)].append((os.path.basename(os.path.dirname(os.path.dirname(path))), path))
    prompts = None
    for layer, variants in variants_of.items():
        activations, index = load_activation_table(
            layout.activation_file_beside(smk.input.index, layer), smk.input.index
        )
        seed_sae = load_sae(layout.sae_dir(lmrun, layer))
        sae_rows = training_tensors(
            activations, index, value_candidates(index), smk.params.sae["max_train_rows"], smk.params.seed
        )
        for method, path in variants:
            cfg = CausalSAEConfig.for_variant(smk.params.causal, smk.params.seed, method)
            if prompts is None:
                # the train cell's scored bases (evaluate's causal sample) never enter the training pool
                scored = causal_sample(index, "train", smk.params.max_prompts_per_cell, smk.params.seed)
                prompts = prepare_prompts(model, tokenizer, index, scored, cfg, activations.shape[1])
            start = seed_sae
            if method == NO_LABELS:
                # the seed's recipe without the rule labels' loss, from scratch
                start, _ = train_sae(*sae_rows, no_labels_config(seed_sae.cfg), progress=False)
            sae, history, selection = train_causal_sae(
                start,
                model,
                prompts,
                index,
                activations,
                sae_rows,
                layer,
                cfg,
                progress=lambda row, method=method, layer=layer: log.info("%s layer %s: %s", method, layer, row),
            )
            save_causal_sae(os.path.dirname(path), sae, history, selection, prompts)
            log.info("%s layer %s: chose %s", method, layer, {k: v for k, v in selection.items() if k != "config"})
        del activations
