"""Snakemake adapter: the untrained baseline, same architecture and tokenizer, random weights."""

from _common import rule_context

from biosae.lm.model import save_untrained_copy

smk = snakemake  # noqa: F821
with rule_context(smk) as log:
    save_untrained_copy(smk.input.model, smk.output.model, seed=smk.params.seed)
    log.info("random-init copy of %s written to %s", smk.input.model, smk.output.model)
