"""bench/results.md from the figures bench/run.py measured: targets with PASS/MISS, then one
section per measurement, each figure beside the call or command that produced it."""

from __future__ import annotations

import json
from dataclasses import dataclass

from .activations import ActivationCollection
from .common import SLOW_SLURM_PROBE_SECONDS, BenchRun
from .dataset import DatasetGeneration
from .evaluate import Evaluate
from .machine import MachineLimits
from .pipeline import Accuracy, Pipeline, ProfileRuns, Stage
from .training import Training

# name: (threshold, "max" if the figure must stay at or below it, "min" if at or above)
TARGETS = {
    "pipeline_minutes": (15.0, "max"),
    "trainer_speedup": (1.5, "min"),
    "activation_fraction": (0.8, "min"),
    "sae_rerun_fraction": (0.05, "max"),
    "dataset_seconds": (60.0, "max"),
    # the evaluate stage with every localization method: at most twice the 35.3 s that the SAE and
    # the random control alone take at the default hook
    "evaluate_seconds": (70.6, "max"),
    # the same, like for like: every method ÷ SAE + random only, both timed in one process on this
    # machine (section 7)
    "evaluate_ratio": (2.0, "max"),
    # the default run with the whole layer profile against the same pipeline restricted to the
    # seed's hook: at most 1.25x
    "layer_profile_ratio": (1.25, "max"),
    # two files of 1,800 new questions scored on the finished default run
    "extra_questions_fraction": (0.10, "max"),
    # the first look: config/quick.yaml's whole pipeline from a clean directory
    "quick_minutes": (3.0, "max"),
    # the default run against the same run without the supervised SAE's causal variants
    "causal_sae_cost": (1.2, "max"),
}
QUICK_CONFIG = "quick"
WITHOUT_CAUSAL_CONFIG = "without_causal_sae"
TORCH_DTYPES = {"fp32": "torch.float32", "bf16": "torch.bfloat16"}


@dataclass
class BenchResults:
    """Every section's figures; None where a section was not measured."""

    machine: MachineLimits | None = None
    training: Training | None = None
    activations: ActivationCollection | None = None
    dataset: DatasetGeneration | None = None
    pipeline: Pipeline | None = None
    evaluate: Evaluate | None = None
    accuracy: Accuracy | None = None  # from a finished run's training log when the pipeline is not measured


def verdict(name: str, value) -> str:
    if value is None:
        return "not measured"
    threshold, direction = TARGETS[name]
    passed = value <= threshold if direction == "max" else value >= threshold
    return "PASS" if passed else "MISS"


def fmt(value, spec: str = ",.1f", unit: str = "", missing: str = "–") -> str:
    return missing if value is None else format(value, spec) + unit


def page(results: BenchResults, run: BenchRun) -> str:
    """The whole page."""
    title = "# biosae speed benchmark" + (" — TINY SMOKE RUN (sizes shrunk; verdicts mean nothing)" if run.tiny else "")
    lines = [
        title,
        "",
        f"Measured {run.started:%Y-%m-%d %H:%M} on {run.environment}.",
        slurm_probe_line(run.slurm_probe_seconds),
        f"Command: `{run.command}` ({run.minutes:.1f} min in all). Every figure below comes from this one run, "
        "so that each ratio compares two measurements taken under the same load.",
    ]
    lines += targets_section(results)
    lines += machine_section(results.machine)
    lines += training_section(results.training)
    lines += accuracy_section((results.pipeline.accuracy if results.pipeline else None) or results.accuracy)
    lines += activations_section(results.activations, results.training, run.sizes)
    lines += dataset_section(results.dataset)
    lines += pipeline_section(results.pipeline, run.threads)
    lines += evaluate_section(results.evaluate)
    lines += ["", f"Sizes: `{json.dumps(run.sizes)}`.", ""]
    return "\n".join(lines)


def slurm_probe_line(seconds: float | None) -> str:
    """What Snakemake's start costs here beyond Snakemake itself: the SLURM plugin's probe."""
    if seconds is None:
        return "No SLURM client here: Snakemake's SLURM plugin starts without probing a cluster."
    if seconds > SLOW_SLURM_PROBE_SECONDS:
        return (
            f"**Every Snakemake command here waited {seconds:.1f} s at its start** for `scontrol show config` (the "
            "SLURM plugin's probe; a SLURM client with no controller answering): the pipeline figures below "
            "include it, a laptop without SLURM or a cluster would not."
        )
    return f"The SLURM plugin's probe at each Snakemake start (`scontrol show config`) took {seconds:.2f} s."


def targets_section(results: BenchResults) -> list[str]:
    training, activations, pipeline = results.training, results.activations, results.pipeline
    dataset, evaluate = results.dataset, results.evaluate
    rerun = pipeline.rerun if pipeline else None
    minutes = pipeline.wall / 60 if pipeline else None
    speedup = training.speedup if training else None
    packed_speedup = training.packed_speedup if training else None
    rerun_fraction = rerun.fraction if rerun else None
    rows = [
        ("whole default pipeline ≤ 15 min on 2 cores", "pipeline_minutes", minutes, fmt(minutes, unit=" min")),
        (
            "LM training ≥ 1.5× transformers.Trainer's tokens/s (as users write it: a padded document per row)",
            "trainer_speedup",
            speedup,
            fmt(speedup, ".2f", "×") + (f" (0 padding for both: {packed_speedup:.2f}×)" if packed_speedup else ""),
        ),
        (
            "activation collection ≥ 0.8 of a plain batched forward",
            "activation_fraction",
            activations.fraction if activations else None,
            fmt(activations.fraction if activations else None, ".2f"),
        ),
        (
            "SAE-only rerun ≤ 5% of the full run",
            "sae_rerun_fraction",
            rerun_fraction,
            fmt(rerun_fraction, ".1%")
            + (" (estimated from the run's stage times, not rerun)" if rerun and rerun.estimated else ""),
        ),
        (
            "dataset generation at 100,000 persons < 1 min",
            "dataset_seconds",
            dataset.seconds if dataset else None,
            fmt(dataset.seconds if dataset else None, unit=" s"),
        ),
        (
            "evaluate stage with every localization method ≤ 2× the 35.3 s of SAE + random only (default hook)",
            "evaluate_seconds",
            evaluate_seconds(pipeline),
            fmt(evaluate_seconds(pipeline), unit=" s"),
        ),
        (
            "the same like for like: every method ÷ SAE + random only, one process on this machine (section 7) ≤ 2×",
            "evaluate_ratio",
            evaluate.ratio if evaluate else None,
            fmt(evaluate.ratio if evaluate else None, ".2f", "×"),
        ),
        (
            "default run with the whole layer profile ≤ 1.25× the same run restricted to the seed's hook",
            "layer_profile_ratio",
            *layer_profile_figure(pipeline),
        ),
        (
            "scoring 2 × 1,800 new questions on the finished default run ≤ 10% of the full run",
            "extra_questions_fraction",
            extra_questions_fraction(pipeline),
            fmt(extra_questions_fraction(pipeline), ".1%"),
        ),
        (
            "the first look, `config/quick.yaml`'s whole pipeline, ≤ 3 min on 2 cores",
            "quick_minutes",
            quick_minutes(pipeline),
            fmt(quick_minutes(pipeline), ".1f", " min"),
        ),
        (
            "default run ≤ 1.2× the same run without the causal SAE and its two controls",
            "causal_sae_cost",
            causal_sae_cost(pipeline),
            fmt(causal_sae_cost(pipeline), ".2f", "×"),
        ),
    ]
    lines = ["", "## Targets", "", "| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {label} | {shown} | {verdict(name, value)} |" for label, name, value, shown in rows]
    notes = limiting_notes(results)
    if notes:
        lines += ["", "What limits the missed targets (figures from this run):", ""] + [f"- {note}" for note in notes]
    return lines


def config_run(pipeline: Pipeline | None, name: str):
    """The bench's run of the configuration file named ``name`` (its stem), or None."""
    return next((run for run in pipeline.config_runs if run.name == name), None) if pipeline else None


def quick_minutes(pipeline: Pipeline | None) -> float | None:
    run = config_run(pipeline, QUICK_CONFIG)
    return run.seconds / 60 if run else None


def causal_sae_cost(pipeline: Pipeline | None) -> float | None:
    """The default run's wall time ÷ the run without the causal SAE's (both in this bench run)."""
    run = config_run(pipeline, WITHOUT_CAUSAL_CONFIG)
    return pipeline.wall / run.seconds if run else None


def config_runs_lines(pipeline: Pipeline, threads: int) -> list[str]:
    """Section 6's table of the other configurations, each run whole after the default's."""
    if not pipeline.config_runs:
        return ["Other configurations: none run (`--config-runs` with no file)."]
    origin = "this bench run's" if pipeline.ran_here else f"the finished run's in `{pipeline.source}`"
    lines = [
        f"Other configurations, each run whole from a clean directory (`snakemake --cores {threads}`, the file "
        f"layered on config.yaml as `./run.sh --configfile FILE` does), against the default's wall time "
        f"({origin}, {pipeline.wall / 60:.1f} min):",
        "",
        "| configuration | whole run | ÷ default | the LM | LM steps | jobs |",
        "|---|---|---|---|---|---|",
    ]
    for run in pipeline.config_runs:
        lines.append(
            f"| `{run.config_file}` | {run.seconds / 60:.1f} min ({run.seconds:,.0f} s) | {fmt(run.ratio, '.2f', '×')} "
            f"| {fmt(run.lm_seconds, ',.0f', ' s')} | {fmt(run.lm_steps, ',d')} | {run.jobs} |"
        )
    return lines


def extra_questions_fraction(pipeline: Pipeline | None) -> float | None:
    return pipeline.extra_questions.fraction if pipeline else None


def extra_questions_lines(extra, threads: int) -> list[str]:
    """Section 6's paragraph on new questions scored on the finished run."""
    if not extra.measured:
        return [f"New questions on the finished run not scored: {extra.why or 'skipped'}."]
    jobs = ", ".join(f"{s.stage} {s.seconds:.1f} s" for s in extra.jobs)
    return [
        f"New questions on the finished run: two files of held-out rows of its dataset "
        f"({extra.questions:,} questions in all) listed in `evaluate.extra_questions` of a copy of the run, "
        f"then `snakemake --cores {threads}` (its dry run first: no training and no pass over the shipped rows "
        f"planned): **{extra.seconds:.1f} s = {extra.fraction:.1%}** of the full run. Jobs: {jobs}; Snakemake "
        f"start-up and DAG work: {extra.overhead_seconds:.1f} s.",
    ]


def evaluate_seconds(pipeline: Pipeline | None) -> float | None:
    """The default run's evaluation of the seed's hook, or None: its evaluate job (the flat
    ``evaluate`` benchmark) and the seed hook's share of the evaluate_methods job, which tests the
    other methods at every layer: that layer's own seconds and all that the layers share (the LM,
    the samples and their prompt caches), both measured in process (section 6)."""
    if pipeline is None:
        return None
    seconds = next((stage.seconds for stage in pipeline.stages if stage.stage == "evaluate"), None)
    tests = pipeline.method_tests_layers
    if seconds is None or not tests:
        return seconds
    seed_layer = {int(layer): value for layer, value in tests.seconds.items()}[int(tests.seed_layer)]
    return seconds + seed_layer + tests.shared_seconds


def is_profile_stage(stage: Stage) -> bool:
    """A job the layer profile adds to the seed's one-hook pipeline: another layer's evaluate
    (benchmarks/sweep/seed_<s>/layer_<l>/), and the layer aggregate. The other layers' SAEs, TopK
    SAEs and DAS train inside their LM's one job of each: their share is
    :func:`lm_job_profile_seconds`."""
    return stage.stage.startswith("sweep/") or stage.stage == "aggregate"


def lm_job_profile_seconds(pipeline: Pipeline | None) -> dict[str, float]:
    """What the profile's other layers add to the jobs that train every layer of an LM at once:

    - the two SAE jobs (trained and untrained LM, same shapes): twice the in-process difference
      between every layer's SAE at once and the seed hook's alone (section 6);
    - the TopK SAE job (trained LM): that difference, measured the same way;
    - the DAS job and the evaluate_methods job: the other layers' own seconds in the job's work,
      measured in process layer by layer (what all layers share counts as the seed hook's).

    Empty when not measured."""
    if pipeline is None:
        return {}
    out = {}
    sae, topk, das, tests = pipeline.sae_layers, pipeline.topk_layers, pipeline.das_layers, pipeline.method_tests_layers
    if sae:
        out["other layers' SAEs in the two SAE jobs"] = 2 * max(0.0, sae.all_seconds - sae.one_seconds)
    if topk:
        out["other layers' TopK SAEs in their job"] = max(0.0, topk.all_seconds - topk.one_seconds)
    if das:
        out["other layers' DAS in their job"] = das.other_layers()
    if tests:
        out["other layers' method tests in their job"] = tests.other_layers()
    return out


def layer_profile_ratio(pipeline: Pipeline | None) -> float | None:
    """Stage seconds of the whole default run ÷ those of its seed-hook jobs alone: the pipeline a
    user gets with ``sweep.layers: [-1]``, measured as a subset of the same run (the per-LM
    training jobs less :func:`lm_job_profile_seconds`). The activation job is counted whole on
    both sides (it collects every layer in one pass; what that costs over one layer is section 4's
    "seed's layer only" row), so the ratio is, if anything, an underestimate."""
    stages = pipeline.stages if pipeline else []
    if not any(is_profile_stage(stage) for stage in stages):
        return None
    total = sum(stage.seconds for stage in stages)
    seed_hook = sum(stage.seconds for stage in stages if not is_profile_stage(stage))
    return total / (seed_hook - sum(lm_job_profile_seconds(pipeline).values()))


def layer_profile_figure(pipeline: Pipeline | None) -> tuple[float | None, str]:
    """The target's figure and how it is shown: the wall-time ratio of the two runs after the LM
    (section 6) when the bench ran them, else the stage-seconds estimate from the one run."""
    runs = pipeline.profile_runs if pipeline else None
    estimate = layer_profile_ratio(pipeline)
    if runs and runs.measured:
        return runs.ratio, (
            f"{runs.ratio:.2f}× wall time (both run; stage-seconds estimate {fmt(estimate, '.2f', '×')})"
        )
    return estimate, fmt(estimate, ".2f", "×") + (" (stage seconds, estimated from one run)" if estimate else "")


def profile_runs_lines(runs: ProfileRuns, threads: int) -> list[str]:
    """Section 6's paragraph on the two runs after the LM (bench/pipeline.py, measure_profile_runs)."""
    if not runs.measured:
        return [f"Layer profile against the seed's hook alone, run: not measured ({runs.why or 'skipped'}).", ""]
    profile, seed_hook, shared = runs.profile, runs.seed_hook, runs.shared_seconds
    return [
        f"Layer profile against the seed's hook alone, **run**: everything after the LM, on copies of the finished "
        f"run that keep its dataset and trained LM, by `snakemake --cores {threads}`, back to back: with the "
        f"profile ({profile.job_count} jobs) **{profile.seconds:.1f} s**, restricted to the seed's hook "
        f"(`sweep.layers: [{runs.seed_layer}]`, {seed_hook.job_count} jobs) **{seed_hook.seconds:.1f} s**. With the "
        f"dataset and LM training both share ({shared:.1f} s, this run's stages): {(shared + profile.seconds) / 60:.1f} "
        f"min against {(shared + seed_hook.seconds) / 60:.1f} min, **{runs.ratio:.2f}×**.",
        "",
    ]


def profile_cost_line(pipeline: Pipeline) -> str:
    """What the layer profile adds to the seed hook's pipeline, per rule, in words."""
    per_rule: dict[str, float] = dict(lm_job_profile_seconds(pipeline))
    for stage in pipeline.stages:
        if is_profile_stage(stage):
            per_rule[stage.rule] = per_rule.get(stage.rule, 0.0) + stage.seconds
    return (
        f"the other layers and the aggregate add {sum(per_rule.values()) / 60:.1f} min ("
        + ", ".join(f"{rule} {seconds:.0f} s" for rule, seconds in sorted(per_rule.items(), key=lambda item: -item[1]))
        + ") to the seed hook's pipeline; its LM training is shared"
    )


def limiting_notes(results: BenchResults) -> list[str]:
    """For each missed target, the figures of this run that say where the time goes."""
    notes = []
    pipeline, training, activations = results.pipeline, results.training, results.activations
    if pipeline and verdict("pipeline_minutes", pipeline.wall / 60) == "MISS":
        top = sorted(pipeline.stages, key=lambda s: -s.seconds)[:3]
        notes.append(
            "pipeline: the longest stages are "
            + ", ".join(f"{s.stage} ({s.seconds / 60:.1f} min, {s.seconds / pipeline.wall:.0%})" for s in top)
            + "."
        )
    ratio, _ = layer_profile_figure(pipeline)
    if ratio is not None and verdict("layer_profile_ratio", ratio) == "MISS":
        notes.append(f"layer profile: {profile_cost_line(pipeline)}.")
    rerun = pipeline.rerun if pipeline else None
    if rerun and rerun.estimated and verdict("sae_rerun_fraction", rerun.fraction) == "MISS":
        per_rule: dict[str, float] = {}
        for stage in rerun.jobs:
            per_rule[stage.rule] = per_rule.get(stage.rule, 0.0) + stage.seconds
        notes.append(
            "SAE-only rerun (estimate): "
            + ", ".join(
                f"{rule} {seconds:.0f} s" for rule, seconds in sorted(per_rule.items(), key=lambda item: -item[1])
            )
            + " over every layer of the profile."
        )
    if rerun and rerun.measured and verdict("sae_rerun_fraction", rerun.fraction) == "MISS":
        notes.append(
            f"SAE-only rerun: jobs {sum(s.seconds for s in rerun.jobs):.1f} s ("
            + ", ".join(f"{s.stage} {s.seconds:.1f} s" for s in rerun.jobs)
            + f"), Snakemake start-up and DAG work {rerun.overhead_seconds:.1f} s."
        )
    floor = rerun.floor if rerun else None
    if floor and verdict("sae_rerun_fraction", rerun.fraction) == "MISS":
        notes.append(
            f"SAE-only rerun: training the two SAEs and the SAE's causal tests alone take {floor.fraction:.1%} "
            "of the full run (section 6): the rest is job start-up, loading, prompt caches, correlational "
            "tests and figures."
        )
    quick = config_run(pipeline, QUICK_CONFIG)
    if quick and verdict("quick_minutes", quick.seconds / 60) == "MISS":
        notes.append(
            f"first look: of its {quick.seconds:.0f} s, training the LM took {fmt(quick.lm_seconds, '.0f', ' s')} "
            f"({fmt(quick.lm_steps, ',d')} steps); the other {quick.jobs - 1} jobs, two at a time on two cores, "
            "each load torch and transformers (about 3 s) before their work."
        )
    if training and verdict("trainer_speedup", training.speedup) == "MISS":
        ours, hf = training.ours, training.trainer
        notes.append(
            f"LM training: against the Trainer on our packed blocks, {training.steps} steps took {ours.step_seconds:.1f} s in our loop and "
            f"{hf.step_seconds:.1f} s in the Trainer (MFU {fmt(ours.mfu, '.1%')} against "
            f"{fmt(hf.mfu, '.1%')}); both call the same GPT-2 forward and backward, so the gap is what the "
            "loops do around them (see where: `py-spy record -o profile.svg -- python bench/run.py --only "
            "training`)."
        )
    if activations and verdict("activation_fraction", activations.fraction) == "MISS":
        extra = activations.collection_seconds - activations.ceiling_seconds
        notes.append(
            f"activations: the collection takes {extra:.2f} s more than the plain forward, of which "
            f"{activations.tokenize_seconds:.2f} s is tokenizing the prompts."
        )
    dataset = results.dataset
    if dataset and verdict("dataset_seconds", dataset.seconds) == "MISS":
        notes.append(
            f"dataset: {dataset.seconds:.1f} s for {dataset.persons:,} persons "
            "(see where: `py-spy record -o profile.svg -- python bench/run.py --only dataset`)."
        )
    return notes


def machine_section(machine: MachineLimits | None) -> list[str]:
    if not machine:
        return []
    lines = ["", "## 1. Machine limits", "", "| figure | value | how |", "|---|---|---|"]
    for name, flops in machine.flops.items():
        lines.append(
            f"| {name} matrix product | {flops / 1e9:,.1f} GFLOP/s | "
            f"`{machine.how.replace('dtype', TORCH_DTYPES[name])}` |"
        )
    return lines


def rounds_lines(t: Training) -> list[str]:
    """Which round the table shows, and every round's ratios (the three loops ran back to back in each)."""
    rounds = t.round_speedups or []
    if len(rounds) < 2 or t.trainer_missing:  # one loop alone has no ratio to take per round
        return []

    def listed(values):
        return ", ".join(fmt(value, ".2f", "×") for value in values)

    which = "the median round" + (" (the lower of two)" if len(rounds) == 2 else "")
    return [
        f"{len(rounds)} rounds, each running the three loops back to back (so that each ratio compares runs minutes "
        f"apart), each loop in a fresh process, in an order rotated from round to round (no loop always runs "
        f"first); the table shows {which} "
        f"(round {t.median_round}, by ours ÷ Trainer as users write it). Ours ÷ Trainer as users write it, per "
        f"round: {listed(rounds)}; ÷ Trainer on our packed blocks: {listed(t.round_packed_speedups)}; our "
        f"tokens/s: {', '.join(f'{v:,.0f}' for v in t.round_tokens_per_s)}.",
        "",
    ]


def training_section(training: Training | None) -> list[str]:
    if not training:
        return []
    t, ours, hf, padded = training, training.ours, training.trainer, training.trainer_padded
    how_hf = (
        f"`transformers.Trainer.train()` ({t.steps} steps, bf16={t.precision == 'bf16'}, same blocks, "
        "batch, lr, warm-up + cosine, AdamW β₂ 0.95, clip)"
    )
    how_padded = (
        "the same Trainer over one document per row (cut at the block), padded per batch by "
        "`DataCollatorForLanguageModeling(mlm=False)`; corpus tokens only"
    )
    lines = [
        "",
        "## 2.–3. LM training: our loop against transformers.Trainer",
        "",
        f"Model of the config ({t.model}, {t.parameters:,} parameters, vocabulary {t.vocabulary:,}), its "
        f"corpus ({t.documents:,} documents), batch {t.batch_size} × block {t.block_size}, precision "
        f"{t.precision}; {t.flops_per_token / 1e6:.1f} MFLOP/token (6·N + attention). tokens/s is steady state: "
        f"step time (forward, backward, clip, optimizer) of steps {t.skip + 1}–{t.steps}, the first {t.skip} "
        "left out for all. It counts corpus tokens (every position of a packed block is one; padding is not). "
        "*Whole call* divides by the wall time of the training call (ours includes tokenizing, packing and saving "
        "the model; the Trainer's its set-up); building the model is left out of all.",
        "",
        "Two Trainer runs, each as many steps of the same batch size: the one most users write first (a document "
        "per row, padded to the batch's longest), and the same Trainer fed our packed blocks, which isolates what "
        "the loops themselves cost.",
        "",
        *rounds_lines(t),
        "| figure | ours (packed) | Trainer, padded documents | Trainer, our packed blocks |",
        "|---|---|---|---|",
        f"| tokens/s | {ours.tokens_per_s:,.0f} | {fmt(padded and padded.tokens_per_s, ',.0f')} | "
        f"{fmt(hf and hf.tokens_per_s, ',.0f')} |",
        f"| positions computed/s (padding included) | {ours.tokens_per_s:,.0f} | "
        f"{fmt(padded and padded.padded_tokens_per_s, ',.0f')} | {fmt(hf and hf.tokens_per_s, ',.0f')} |",
        f"| share of positions that are padding | 0% | {fmt(padded and padded.padding_fraction, '.0%')} | 0% |",
        f"| model GFLOP/s (corpus tokens) | {ours.model_flops_per_s / 1e9:,.1f} | "
        f"{fmt(padded and t.flops_per_token * padded.tokens_per_s / 1e9)} | {fmt(hf and hf.model_flops_per_s / 1e9)} |",
        f"| MFU (vs the {t.precision} matmul limit) | {fmt(ours.mfu, '.1%')} | – | {fmt(hf and hf.mfu, '.1%')} |",
        f"| step time, all {t.steps} steps | {ours.step_seconds:,.1f} s | "
        f"{fmt(padded and padded.step_seconds, unit=' s')} | {fmt(hf and hf.step_seconds, unit=' s')} |",
        f"| tokens/s, whole call | {ours.call_tokens_per_s:,.0f} | {fmt(padded and padded.call_tokens_per_s, ',.0f')} | "
        f"{fmt(hf and hf.call_tokens_per_s, ',.0f')} |",
        f"| torch threads | {ours.threads} | {fmt(padded and padded.threads, 'd')} | {fmt(hf and hf.threads, 'd')} |",
        f"| how | `biosae.lm.model.train_language_model` ({t.steps} steps) | {how_padded} | {how_hf} |",
        "",
    ]
    if hf and padded:
        step = (
            "our loop is no slower per position"
            if t.packed_speedup >= 1
            else f"per position our loop is {1 - t.packed_speedup:.0%} slower than the Trainer's"
        )
        lines.append(
            f"Ours ÷ Trainer as users write it: **{t.speedup:.2f}×** corpus tokens/s. Ours ÷ the Trainer "
            f"on our packed blocks: **{t.packed_speedup:.2f}×**: what we gain is packing (no compute "
            f"spent on padding), not a faster step ({step}; both run the same GPT-2 forward and backward)."
        )
    else:
        lines.append(f"Trainer baseline not measured: {t.trainer_missing}.")
    return lines


def accuracy_section(accuracy: Accuracy | None) -> list[str]:
    lines = ["", "### Minutes of training to 95% exact match on unseen persons (default config)", ""]
    if accuracy is None:
        lines.append(
            "Not measured: no pipeline training log (run without `--skip-pipeline`, or pass `--pipeline-dir`)."
        )
    elif accuracy.reached:
        lines.append(
            f"**{accuracy.minutes:.1f} min** of training (epoch {accuracy.epoch:g}: ood_person exact "
            f"match {accuracy.value:.3f}); from `{accuracy.source}` (`monitor` column, checked at each "
            "epoch end, so the resolution is one epoch; `elapsed_s` counts training steps, not the monitor)."
        )
    else:
        lines.append(
            f"Not reached in {accuracy.epochs_run:g} epochs: best ood_person exact match "
            f"{accuracy.value:.3f} at {accuracy.minutes:.1f} min; from `{accuracy.source}`."
        )
    return lines


def activations_section(a: ActivationCollection | None, training: Training | None, sizes: dict) -> list[str]:
    if not a:
        return []
    trained = f"trained {training.steps} steps" if training else "random init"
    return [
        "",
        "## 4. Activation collection",
        "",
        f"All {a.prompts:,} QA rows (qa_train + qa_test + qa_hard), batch {a.batch_size}, the config's model "
        f"({trained}; speed does not depend on the weights), best of {sizes['activation_repeats']}.",
        "",
        "| figure | value | how |",
        "|---|---|---|",
        f"| collection, {len(a.layers)} hook points ({a.dtype}) | {a.collection_prompts_per_s:,.0f} prompts/s "
        f"({a.collection_seconds:.2f} s) | `biosae.lm.activations.write_activation_files`: tokenizing, every layer of "
        "the profile from one pass (LM head at the answer position only), one file per layer, index table |",
        f"| the same, seed's layer only | {a.prompts / a.one_layer_seconds:,.0f} prompts/s "
        f"({a.one_layer_seconds:.2f} s) | what the other layers cost |",
        f"| plain forward (ceiling) | {a.ceiling_prompts_per_s:,.0f} prompts/s ({a.ceiling_seconds:.2f} s) | "
        "the same length-sorted batches, `model(input_ids, attention_mask)` only, pre-tokenized |",
        f"| fraction of the ceiling | **{a.fraction:.2f}** | |",
        f"| of which tokenizing the prompts | {a.tokenize_seconds:.2f} s | `biosae.lm.activations.encode_prompts` |",
    ]


def dataset_section(d: DatasetGeneration | None) -> list[str]:
    if not d:
        return []
    return [
        "",
        "## 5. Dataset generation",
        "",
        "| figure | value | how |",
        "|---|---|---|",
        f"| {d.persons:,} persons | {d.seconds:.1f} s, **{d.persons_per_s:,.0f} persons/s** | "
        f"`biosae.dataset.build.write_dataset` (num_persons={d.persons}, other dataset keys from the config) |",
        f"| written | {d.megabytes:,.0f} MB, {d.qa_rows:,} QA rows | |",
    ]


def evaluate_section(e: Evaluate | None) -> list[str]:
    if not e:
        return []
    return [
        "",
        "## 7. The evaluate stage: every method against SAE + random only",
        "",
        f"The seed hook's (layer {e.layer}) evaluation of the finished run in `{e.source}`, in one process, as "
        f"its two jobs run it: `biosae.evaluation.method_tests.evaluate_methods` (every method but the SAE, at this "
        f"layer alone, its prompt caches built), then `biosae.evaluation.evaluate.evaluate` (correlational tests, "
        f"the SAE's causal tests, the join; causal tests on at most {e.prompts_per_cell} prompts per cell) and "
        f"`write_figures`. The files are loaded once ({e.load_seconds:.1f} s, in neither figure).",
        "",
        "| methods | tests s | figures s | total s |",
        "|---|---|---|---|",
        *(
            f"| {', '.join(timing.methods)} | {timing.tests:.1f} | {timing.figures:.1f} | {timing.seconds:.1f} |"
            for timing in (e.baseline, e.every_method)
        ),
        "",
        f"Every method ÷ SAE + random only: **{e.ratio:.2f}×**.",
    ]


def pipeline_section(p: Pipeline | None, threads: int) -> list[str]:
    if not p:
        return ["", "## 6. The default pipeline", "", "Not measured (`--skip-pipeline`)."]
    origin = "run by this benchmark" if p.ran_here else f"the finished run in `{p.source}`"
    lines = [
        "",
        "## 6. The default pipeline",
        "",
        f"Per stage from Snakemake's `benchmark:` files ({origin}; `snakemake --cores {threads}`): `s` and "
        "`max_rss` (peak resident memory).",
        "",
        "| stage | wall s | share | peak RSS MB |",
        "|---|---|---|---|",
    ]
    for stage in p.stages:
        lines.append(
            f"| {stage.stage} | {stage.seconds:,.1f} | {stage.seconds / p.wall:.0%} | {fmt(stage.max_rss_mb, ',.0f')} |"
        )
    lines += [f"| **total** | **{p.wall:,.1f}** ({p.wall / 60:.1f} min) | | {p.wall_how} |", ""]
    sae = p.sae_layers
    if sae:
        lines += [
            f"SAE training (in process, 1 thread as the rule, on this run's activations: {sae.rows:,} rows, "
            f"{sae.epochs} epochs of batch {sae.batch_size}): every layer of the profile at once "
            f"({len(sae.layers)} layers, the LM's one `train_sae` job) **{sae.all_seconds:.1f} s**; the "
            f"seed's hook (layer {sae.seed_layer}) alone {sae.one_seconds:.1f} s, so "
            f"{sae.all_seconds / sae.one_seconds:.2f}× one layer for {len(sae.layers)} layers. The "
            f"difference, twice (trained and untrained LM), is the profile's share of the two SAE jobs in the "
            f"layer-profile ratio.",
            "",
        ]
    topk = p.topk_layers
    if topk:
        lines += [
            f"TopK SAE training (the same way: {topk.rows:,} rows, batch {topk.batch_size}; timed over "
            f"{topk.measured_epochs} of its {topk.epochs} epochs and scaled, the epochs being alike): every "
            f"layer at once **{topk.all_seconds:.1f} s**, the seed's hook alone {topk.one_seconds:.1f} s "
            f"({topk.all_seconds / topk.one_seconds:.2f}×). The difference is the profile's share of the "
            f"`train_unsupervised_sae` job.",
            "",
        ]
    das = p.das_layers
    if das:
        per_layer = ", ".join(f"layer {layer} {seconds:.1f} s" for layer, seconds in das.seconds.items())
        lines += [
            f"DAS, from the run's own `train_das` job done again in process, layer by layer as the job runs "
            f"(1 thread as the rule, on this run's LM and activations; the LM's loading in neither): "
            f"{per_layer}; the prompts and caches every layer shares {das.shared_seconds:.1f} s. The other "
            f"layers' seconds are the profile's share of the job.",
            "",
        ]
    tests = p.method_tests_layers
    if tests:
        per_layer = ", ".join(f"layer {layer} {seconds:.1f} s" for layer, seconds in tests.seconds.items())
        lines += [
            f"Every method but the SAE, tested again in process layer by layer as the run's `evaluate_methods` "
            f"job tests them (1 thread as the rule): {per_layer}; the LM, samples and prompt caches every layer shares "
            f"{tests.shared_seconds:.1f} s. The other layers' seconds are the profile's share of the job; the "
            f"seed hook's, with the shared seconds, count in the evaluate target.",
            "",
        ]
    ratio = layer_profile_ratio(p)
    if ratio is not None:
        lines += [
            f"Layer profile, estimated from this run's stage seconds: {profile_cost_line(p)}; {ratio:.2f}× the "
            "seed hook's stage seconds (jobs that ran side by side count in full).",
            "",
        ]
    lines += profile_runs_lines(p.profile_runs, threads)
    rerun = p.rerun
    if rerun.estimated:
        jobs = ", ".join(f"{s.stage} {s.seconds:.1f} s" for s in rerun.jobs)
        lines.append(
            f"SAE-only rerun **estimated, not run** (`--no-rerun`): the jobs a change of one SAE λ reruns "
            f"took **{rerun.seconds:.1f} s = {rerun.fraction:.1%}** of the full run in it, one after "
            f"another, without Snakemake's start-up. Jobs: {jobs}."
        )
    elif rerun.measured:
        jobs = ", ".join(f"{s.stage} {s.seconds:.1f} s" for s in rerun.jobs)
        lines.append(
            f"Rerun after `{rerun.change}` (`snakemake --cores {threads}` on a copy of the finished run): "
            f"**{rerun.seconds:.1f} s = {rerun.fraction:.1%}** of the full run. Jobs: {jobs}; "
            f"Snakemake start-up and DAG work: {rerun.overhead_seconds:.1f} s."
        )
    else:
        lines.append(f"SAE-only rerun not measured: {rerun.why or 'skipped'}.")
    lines += ["", *extra_questions_lines(p.extra_questions, threads)]
    lines += ["", *config_runs_lines(p, threads)]
    causal, floor = p.sae_causal, rerun.floor
    if causal and floor:
        per_layer = ", ".join(f"layer {layer} {seconds:.1f} s" for layer, seconds in causal.seconds.items())
        lines += [
            "",
            f"What any SAE-only rerun must compute, whatever its jobs: training the two SAEs (the longer of "
            f"the two jobs above, which run side by side) {floor.sae_training_seconds:.1f} s, and the SAE's "
            f"causal tests at every layer (the LM's edited passes; in process at one thread, at most "
            f"{causal.prompts_per_cell} prompts per cell: {per_layer}; the LM and prompt caches, "
            f"{causal.shared_seconds:.1f} s, apart), {sum(causal.seconds.values()):.1f} s, "
            f"{floor.causal_seconds:.1f} s on {threads} cores: **{floor.seconds:.1f} s = "
            f"{floor.fraction:.1%}** of the full run.",
        ]
    return lines
