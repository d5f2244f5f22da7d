"""Snakemake adapter: the evaluate.extra_questions cells scored at every profile layer of one LM by
what the finished run trained (biosae.evaluation.extra_questions)."""

import torch
from _common import job_device, rule_context

from biosae.evaluation.extra_questions import (
    ExtraQuestionFiles,
    extra_questions_summary,
    read_layer_metrics,
    score_extra_questions,
)
from biosae.io import write_json, write_text

smk = snakemake  # noqa: F821
with rule_context(smk) as log:
    torch.set_num_threads(smk.threads)
    files = ExtraQuestionFiles(
        model_dir=smk.input.model,
        qa_accuracy=smk.input.qa_accuracy,
        extra_qa_accuracy=smk.input.extra_qa_accuracy,
        index=smk.input.index,
        untrained_index=smk.input.untrained_index,
        extra_index=smk.input.extra_index,
        untrained_extra_index=smk.input.untrained_extra_index,
        lmrun=smk.wildcards.lmrun,
        metrics=read_layer_metrics(smk.input.metrics),
    )
    section = smk.params.evaluate
    scores = score_extra_questions(
        files,
        smk.params.layers,
        smk.params.methods,
        section["max_prompts_per_cell"],
        section["swap_alphas"],
        smk.params.seed,
        progress=lambda cell: log.info("causal tests done: %s", cell),
        device=job_device(smk),
    )
    write_json(smk.output.scores, scores)
    write_text(smk.output.summary, extra_questions_summary(scores, smk.params.methods))
    log.info("scored %s at layers %s", ", ".join(scores["cells"]), ", ".join(map(str, smk.params.layers)))
