"""Snakemake adapter for stage 1 (biosae.dataset.build)."""

from _common import rule_context

from biosae.dataset.build import DatasetConfig, write_dataset

with rule_context(snakemake) as log:  # noqa: F821 - injected by Snakemake
    summary = write_dataset(DatasetConfig.from_config(snakemake.params.dataset), dict(snakemake.output))
    log.info("dataset written: %s", summary)
