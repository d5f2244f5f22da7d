"""Snakemake adapter for stage 2: train the LM (scratch or pretrained) with mixed training."""

import torch
from _common import job_device, rule_context

from biosae.io import read_jsonl, write_json
from biosae.lm.model import (
    TrainingConfig,
    build_scratch_model,
    load_pretrained,
    measure_matmul_flops,
    train_language_model,
)
from biosae.lm.qa_accuracy import monitor_for_cells
from biosae.lm.tokenization import train_word_tokenizer

smk = snakemake  # noqa: F821 - injected by Snakemake
with rule_context(smk) as log:
    torch.set_num_threads(smk.threads)
    model_section, training_section, seed = smk.params.model, smk.params.training, smk.params.seed
    texts = [row["text"] for row in read_jsonl(smk.input.corpus)]
    if model_section["init"] == "scratch":
        tokenizer = train_word_tokenizer(texts)
        model = build_scratch_model(tokenizer, model_section, seed)
    else:
        model, tokenizer = load_pretrained(model_section["name"])
    device = job_device(smk)
    cfg = TrainingConfig.from_sections(training_section, model_section, seed, device)
    log.info(
        "model: %s parameters, vocabulary %d, device %s",
        sum(p.numel() for p in model.parameters()),
        len(tokenizer),
        device,
    )
    qa_rows = read_jsonl(smk.input.qa_train) + read_jsonl(smk.input.qa_test)
    monitor = monitor_for_cells(tokenizer, qa_rows, cells=("train", "ood_person"), per_cell=300, seed=seed)
    summary = train_language_model(
        model,
        tokenizer,
        texts,
        cfg,
        smk.output.model,
        smk.params.checkpoint_dir,
        smk.output.log_csv,
        monitor=monitor,
        device=device,
    )
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float32
    peak = measure_matmul_flops(dtype, device=device)
    summary["peak_matmul_flops_per_s"] = round(peak, 1)
    summary["mfu"] = round(summary["model_flops_per_s"] / peak, 4)
    write_json(smk.output.summary, summary)
    log.info("trained: %s", summary)
    print(
        f"LM training: {summary['tokens_per_s']:,.0f} tokens/s, MFU {summary['mfu']:.1%} "
        f"of the measured {cfg.precision} matmul peak ({peak / 1e9:,.0f} GFLOP/s)"
    )
