"""Snakemake adapter for stage 3: answer-position activations of every QA row at every layer of
the profile, from one forward pass per batch, one file per layer."""

import torch
from _common import job_device, rule_context

from biosae.dataset.questions import check_extra_words, load_question_files
from biosae.lm.activations import layer_of_file, write_activation_files
from biosae.lm.model import load_model_dir
from biosae.lm.tokenization import first_unknown_word

smk = snakemake  # noqa: F821
with rule_context(smk) as log:
    torch.set_num_threads(smk.threads)
    model, tokenizer = load_model_dir(smk.input.model, job_device(smk))
    files = {key: path for key, path in smk.input.items() if key != "model"}
    check_extra_words(files, lambda text: first_unknown_word(tokenizer, text))
    rows = load_question_files(files)
    layer_paths = {layer_of_file(path): path for path in smk.output.layers}
    write_activation_files(
        model, tokenizer, rows, layer_paths, smk.output.index, smk.params.dtype, smk.input.model, smk.params.batch_size
    )
    log.info("%d rows at layers %s, stored as %s", len(rows), list(layer_paths), smk.params.dtype)
