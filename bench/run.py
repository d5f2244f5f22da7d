#!/usr/bin/env python
"""Speed benchmark: biosae against this machine's limits and against what users would pick instead.

Everything is measured in ONE run, so that each ratio compares two figures taken under the same
load of a noisy shared machine:

  1. machine limits       fp32 and bf16 matrix-product FLOP/s through torch (the MFU denominators)
  2. LM training          our loop: tokens/s, model FLOP/s, MFU, on the default model and corpus;
                          minutes of training to 95% exact match on unseen persons (pipeline log)
  3. Trainer baselines    the same model and schedule through transformers.Trainer: as most users
                          write it (a padded document per row), and fed our packed blocks
  4. activations          every hook point of the layer profile for every QA row, one pass, written to
                          per-layer files ÷ a plain batched forward pass
  5. dataset generation   write_dataset at 100,000 persons
  6. pipeline             the default Snakemake pipeline: wall time and peak memory per stage (its
                          benchmark: files), in total, the rerun after changing one SAE λ (and
                          what of it any rerun computes: the SAEs' training, the SAE's causal
                          tests), and everything after the LM run twice: with the layer
                          profile, then with the seed's hook alone; then other configurations
                          run whole (the quick first look, the phrases setting, the default
                          without the causal SAE), each against the default's wall time
  7. evaluate             the seed hook's evaluation of that run, in-process: every configured
                          method against the SAE and the random control only

and writes bench/results.md atomically, with PASS/MISS per target. Each section is a module of
bench/ (machine, training, activations, dataset, pipeline with layers and configurations, evaluate); this script
only reads the command line, runs them and writes the page (bench/results_page.py).

    python bench/run.py                        # everything, ~85 min on 2 cores (machine alone)
    python bench/run.py --pipeline-dir .       # per-stage figures from a finished default run here
    python bench/run.py --tiny --out /tmp/x.md # every size shrunk: checks the script in ~a minute
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

# Run as a script, Python puts bench/ first on the path, where its modules (dataset, evaluate, ...)
# would shadow packages of those names: bench is imported as the package it is instead.
_REPO = str(Path(__file__).resolve().parent.parent)
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = _REPO
elif _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from bench.activations import measure_activations
from bench.common import (
    REPO,
    SLOW_SLURM_PROBE_SECONDS,
    TINY,
    BenchRun,
    Sizes,
    environment,
    experiment_config,
    say,
    set_up_process,
    slurm_probe_seconds,
    validated,
)
from bench.configurations import DEFAULT_CONFIG_RUNS, measure_config_runs
from bench.dataset import measure_dataset_generation
from bench.evaluate import measure_evaluate
from bench.machine import measure_machine_limits
from bench.pipeline import measure_pipeline, minutes_to_accuracy
from bench.results_page import BenchResults, page
from bench.training import measure_training, prepare_lm
from biosae import layout
from biosae.io import write_text
from biosae.lm.model import build_scratch_model

SECTIONS = ("machine", "training", "activations", "dataset", "pipeline", "evaluate")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results.md", help="markdown to write")
    parser.add_argument("--tiny", action="store_true", help="shrink every size (smoke test; figures mean nothing)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads and snakemake --cores (default 2)")
    parser.add_argument("--skip-pipeline", action="store_true", help="leave out section 6 (the Snakemake pipeline)")
    parser.add_argument(
        "--pipeline-dir",
        type=Path,
        help="a finished default pipeline run (e.g. the repository): per-stage figures and the "
        "training log come from it; the SAE-only rerun runs on a copy. Nothing in it is written",
    )
    parser.add_argument(
        "--no-rerun",
        action="store_true",
        help="do not rerun the SAE jobs after a λ change; estimate that from the run's stage times",
    )
    parser.add_argument(
        "--no-profile-runs",
        action="store_true",
        help="do not run the pipeline after the LM twice (with the layer profile, then the seed's "
        "hook alone); estimate the profile's cost from the run's stage seconds",
    )
    parser.add_argument(
        "--no-extra-questions",
        action="store_true",
        help="do not score two files of new questions on a copy of the finished run",
    )
    parser.add_argument(
        "--config-runs",
        nargs="*",
        default=list(DEFAULT_CONFIG_RUNS),
        metavar="FILE",
        help="config files (relative to the repository) whose whole pipeline runs after the default's, each "
        "layered on config.yaml and set against the default's wall time (default: %(default)s); none: "
        "--config-runs with no file",
    )
    parser.add_argument(
        "--keep-config-runs",
        type=Path,
        metavar="DIR",
        help="keep each configuration's finished run in DIR/<name> (default: removed once measured)",
    )
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="measure only these sections")
    parser.add_argument("--train-steps", type=int, help="LM training steps for ours and the Trainer (default 200)")
    args = parser.parse_args(argv)
    if args.pipeline_dir is not None:
        args.pipeline_dir = args.pipeline_dir.resolve()
    return args


def measure(args, sizes: Sizes, sections: set[str], workdir: Path) -> BenchResults:
    """Every asked-for section, in the order of the page."""
    config = validated(experiment_config(sizes.config_overrides))
    results = BenchResults()
    if "machine" in sections:
        results.machine = measure_machine_limits(sizes)
    lm = prepare_lm(config) if {"training", "activations"} & sections else None
    model = None
    if "training" in sections:
        results.training = measure_training(
            config, lm, results.machine.flops if results.machine else None, sizes, workdir / "training"
        )
        model = results.training.ours.model
    if "activations" in sections:
        model = model or build_scratch_model(lm[1], config["model"], config["seed"])
        results.activations = measure_activations(config, lm, model, sizes, workdir / "activations")
    if "dataset" in sections:
        results.dataset = measure_dataset_generation(config, sizes, workdir / "dataset")
    if "pipeline" in sections:
        results.pipeline = measure_pipeline(
            sizes.config_overrides,
            args.threads,
            args.pipeline_dir,
            workdir,
            rerun=not args.no_rerun,
            profile_runs=not args.no_profile_runs,
            extra_questions=not args.no_extra_questions,
        )
        results.pipeline.config_runs = measure_config_runs(
            args.config_runs,
            sizes.config_overrides,
            args.threads,
            workdir / "configs",
            results.pipeline.wall,
            keep_in=args.keep_config_runs.resolve() if args.keep_config_runs else None,
        )
    else:
        results.accuracy = minutes_to_accuracy((args.pipeline_dir or REPO) / layout.lm_train_log(""))
    if "evaluate" in sections:
        finished = Path(results.pipeline.source) if results.pipeline else args.pipeline_dir
        if finished is None:
            say("[evaluate] not measured: needs a finished run (--pipeline-dir, or the pipeline section)")
        else:
            results.evaluate = measure_evaluate(finished, workdir / "evaluate")
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    sizes = TINY if args.tiny else Sizes()
    if args.train_steps:
        sizes = replace(sizes, train_steps=args.train_steps)
    sections = set(args.only or SECTIONS) - ({"pipeline"} if args.skip_pipeline else set())
    set_up_process(args.threads)
    started, start = datetime.datetime.now(), time.perf_counter()
    probe = slurm_probe_seconds()
    if probe is not None and probe > SLOW_SLURM_PROBE_SECONDS:
        say(
            f"warning: `scontrol show config` took {probe:.1f} s (SLURM's client, no controller answering): every "
            "Snakemake command below waits as long at its start (bench/README.md)"
        )
    with tempfile.TemporaryDirectory(prefix="biosae-bench-") as tmp:
        results = measure(args, sizes, sections, Path(tmp))
    run = BenchRun(
        command=" ".join(["python bench/run.py", *sys.argv[1:]]),
        started=started,
        tiny=args.tiny,
        minutes=(time.perf_counter() - start) / 60,
        threads=args.threads,
        environment=environment(),
        slurm_probe_seconds=probe,
        sizes={key: value for key, value in vars(sizes).items() if value},
    )
    write_text(args.out, page(results, run))
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
