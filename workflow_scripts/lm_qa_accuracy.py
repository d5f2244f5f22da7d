"""Snakemake adapter: greedy exact-match QA accuracy per cell, rule and template."""

import torch
from _common import job_device, rule_context

from biosae.dataset.questions import load_question_files
from biosae.io import write_json
from biosae.lm.model import load_model_dir
from biosae.lm.qa_accuracy import accuracy_report, encode_rows, score_answers

smk = snakemake  # noqa: F821
with rule_context(smk) as log:
    torch.set_num_threads(smk.threads)
    model, tokenizer = load_model_dir(smk.input.model, job_device(smk))
    rows = load_question_files({key: path for key, path in smk.input.items() if key != "model"})
    scores = score_answers(model, encode_rows(tokenizer, rows), tokenizer.pad_token_id, smk.params.batch_size)
    report = accuracy_report(rows, scores)
    write_json(smk.output[0], report)
    log.info("QA accuracy: %s", {cell: (entry["exact"], entry["n"]) for cell, entry in report.items()})
