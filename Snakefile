# biosae: does a language model's answer-position representation separate which attribute
# is asked, in a way a 6-slot supervised SAE captures, causally and out of distribution?
# Table of contents: load and validate config, include one file per stage, declare targets.

import os
import sys

sys.path.insert(0, workflow.basedir)

# MKL and OpenMP may run a call on fewer threads than asked when they judge it better, and a
# matmul split otherwise sums in another order. Fixed thread counts are Intel's condition for
# run-to-run reproducibility; every job inherits them from here. It is not sufficient on every
# host: a CI host's activation job once gave rows 2e-5 away from its own rerun, so tests that
# compare two processes' floats use a tolerance.
os.environ.setdefault("MKL_DYNAMIC", "FALSE")
os.environ.setdefault("OMP_DYNAMIC", "FALSE")

from snakemake.utils import min_version, validate

from biosae.config import validate_config
from biosae.errors import BiosaeError

min_version("9.0")


configfile: "config.yaml"


# One line naming the key, before any job runs (snakemake.utils.validate's own message is a
# page of schema). The global config is replaced by the canonical one (typed by the schema,
# keys in its order, defaults filled), so that the same values rerun nothing whether they come
# from config.yaml, --configfile or --config.
try:
    canonical_config = validate_config(config, workflow.source_path("schemas/config.schema.yaml"))
except BiosaeError as error:
    sys.exit(f"biosae config error: {error}")
config.clear()
config.update(canonical_config)
validate(config, "schemas/config.schema.yaml")


include: "rules/common.smk"
include: "rules/dataset.smk"
include: "rules/lm.smk"
include: "rules/activations.smk"
include: "rules/sae.smk"
include: "rules/methods.smk"
include: "rules/evaluate.smk"
include: "rules/aggregate.smk"


rule all:
    default_target: True
    input:
        all_targets(),


# The end of a run: what the default run found and which files to open, or each failed job's log
# (biosae/evaluation/run_end.py; imported here, not at the top, so that no job pays for it).
onsuccess:
    from biosae.evaluation.run_end import print_run_end

    print_run_end(run_targets(), DEFAULT_SEED, DEFAULT_LAYER, PROFILE_LAYERS, N_BLOCKS)


onerror:
    from biosae.evaluation.run_end import print_failed_job_logs

    print_failed_job_logs(log)
