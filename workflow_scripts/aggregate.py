"""Snakemake adapter for the sweep aggregate: summary.csv, per_run.csv, summary.md and figures."""

from _common import rule_context
from transformers import AutoConfig

from biosae.io import atomic_directory, read_json, write_text
from biosae.studies.aggregate import (
    SUMMARY_COLUMNS,
    SweepRun,
    per_run_values,
    render_summary,
    summarize,
    write_csv,
    write_figures,
)

smk = snakemake  # noqa: F821
with rule_context(smk) as log:
    # Inputs and params.runs are in the same order (rules/common.smk: sweep_metrics, sweep_runs).
    runs = [
        SweepRun(seed=run["seed"], layer=run["layer"], metrics=read_json(path))
        for run, path in zip(smk.params.runs, smk.input.metrics, strict=True)
    ]
    # Layer -1 is the model's last block: its block count, for scratch and pretrained models alike.
    n_layer = AutoConfig.from_pretrained(smk.input.model).num_hidden_layers
    rows = summarize(runs, n_layer)
    write_csv(smk.output.summary_csv, rows, SUMMARY_COLUMNS)
    write_csv(smk.output.per_run_csv, per_run_values(runs), ("metric", "cell", "seed", "layer", "value"))
    with atomic_directory(smk.output.figures) as tmp:
        figures = write_figures(rows, tmp, n_layer)
    summary = render_summary(rows, runs, n_layer, {caption: f"figures/{name}" for caption, name in figures.items()})
    write_text(smk.output.summary, summary)
    log.info("aggregated %d runs (%d-block model) into %d rows", len(runs), n_layer, len(rows))
