"""Section 6, the default Snakemake pipeline: wall time and peak memory per stage (the rules'
``benchmark:`` files), in total, the rerun after changing one SAE λ (and what of it any rerun
computes), and everything after the LM run twice: with the layer profile, then with the seed's
hook alone; then two files of new questions scored on a copy of the finished run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from biosae import layout
from biosae.io import read_yaml
from biosae.job_stats import job_stats
from biosae.lm.layers import profile_layers

from .common import REPO, experiment_config, run_config, say, seconds_of
from .layers import (
    LayerSeconds,
    LayerTraining,
    measure_das_layers,
    measure_method_tests_layers,
    measure_sae_causal_layers,
    measure_sae_layers,
    measure_topk_layers,
)

SAE_TRAINING_JOBS = {"train_sae", "untrained_sae"}  # the supervised SAE of the trained and the untrained LM
# the SAEs fine-tuned from the supervised SAE (sae_slot_causal) follow it
SAE_RERUN_JOBS = SAE_TRAINING_JOBS | {"train_causal_sae", "evaluate", "aggregate", "all"}
# what adding question files to a finished run must never run: a training or a shipped-rows pass
RETRAINING_JOBS = {"train_lm", "train_sae", "untrained_sae", "train_das", "train_unsupervised_sae", "train_causal_sae"}
SHIPPED_PASSES = {"dataset", "untrained_lm", "activations", "untrained_activations", "lm_qa_accuracy"}
# two files of new questions, each as many rows as the target names: held-out rows of the
# run's own dataset (ood_both, ood_template), which the finished run scored under their own cells
EXTRA_QUESTION_CELLS = ("ood_both", "ood_template")
EXTRA_QUESTIONS_PER_FILE = 1800
IDLE_GAP_SECONDS = 60.0  # longer than Snakemake ever takes between two jobs of one invocation

# The layer-profile comparison runs two pipelines that share the dataset and the trained LM (the
# profile changes nothing upstream of the LM's outputs), so the bench trains the LM once, in the
# finished run, and reruns everything after it twice: once with the config's profile and once
# restricted to the seed's hook (`sweep.layers: [<seed's hook>]`, the README's one config line).
SHARED_STAGES = ("dataset", "train_lm")
SHARED_OUTPUTS = (
    layout.dataset_dir(),
    layout.lm_final(""),
    layout.lm_train_log(""),
    layout.lm_train_summary(""),
    layout.lm_checkpoint(""),
)


@dataclass
class Stage:
    """One Snakemake benchmark file: its job (the file's path under benchmarks/, no suffix)."""

    stage: str
    seconds: float
    max_rss_mb: float | None = None
    finished: float = 0.0  # the file's modification time

    @property
    def rule(self) -> str:
        return self.stage.rsplit("/", 1)[-1]


@dataclass
class Accuracy:
    """Training minutes to the first epoch end where unseen persons' exact match reached the
    threshold, or the best value seen (``reached`` False)."""

    reached: bool
    minutes: float
    epoch: float
    value: float
    source: str
    epochs_run: float | None = None


@dataclass
class RerunFloor:
    """The SAE-only rerun's work that stays whatever its jobs."""

    sae_training_seconds: float
    causal_seconds: float
    seconds: float
    fraction: float


@dataclass
class Rerun:
    """The SAE-only rerun: measured (run), estimated (from the run's stage times) or neither."""

    measured: bool
    estimated: bool = False
    seconds: float | None = None
    jobs: list[Stage] = field(default_factory=list)
    change: str | None = None
    overhead_seconds: float | None = None  # Snakemake's own time
    why: str | None = None
    fraction: float | None = None
    floor: RerunFloor | None = None


@dataclass
class DownstreamRun:
    seconds: float
    jobs: dict[str, int]
    job_count: int


@dataclass
class ProfileRuns:
    """Everything after the LM, with the profile and with the seed's hook alone, both run."""

    measured: bool
    why: str | None = None
    shared_seconds: float | None = None  # dataset and LM training, which both share
    seed_layer: int | None = None
    profile: DownstreamRun | None = None
    seed_hook: DownstreamRun | None = None
    ratio: float | None = None


@dataclass
class ExtraQuestionsRun:
    """New questions scored on a copy of the finished run (evaluate.extra_questions)."""

    measured: bool
    why: str | None = None
    questions: int = 0
    seconds: float | None = None
    jobs: list[Stage] = field(default_factory=list)
    overhead_seconds: float | None = None  # Snakemake's own time
    fraction: float | None = None


@dataclass
class Pipeline:
    stages: list[Stage]
    wall: float = 0.0
    wall_how: str = ""
    source: str = ""
    ran_here: bool = False
    accuracy: Accuracy | None = None
    rerun: Rerun = field(default_factory=lambda: Rerun(measured=False))
    sae_layers: LayerTraining | None = None
    topk_layers: LayerTraining | None = None
    das_layers: LayerSeconds | None = None
    method_tests_layers: LayerSeconds | None = None
    sae_causal: LayerSeconds | None = None
    profile_runs: ProfileRuns = field(default_factory=lambda: ProfileRuns(measured=False, why="skipped"))
    extra_questions: ExtraQuestionsRun = field(default_factory=lambda: ExtraQuestionsRun(measured=False, why="skipped"))
    config_runs: list = field(default_factory=list)  # bench.configurations.ConfigRun, one per config file


def snakemake(workdir: Path, threads: int, *extra: str) -> tuple[float, str]:
    """Run the repository's Snakefile in ``workdir``; (wall seconds, its output). Fails loudly."""
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        "--cores",
        str(threads),
        *extra,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    seconds, result = seconds_of(subprocess.run, command, capture_output=True, text=True, env=env, cwd=workdir)
    output = result.stdout + result.stderr
    with open(workdir / "bench_snakemake.log", "a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(command)}\n{output}\n")
    if result.returncode != 0:
        raise RuntimeError(f"snakemake {' '.join(extra)} failed in {workdir}:\n{output[-4000:]}")
    return seconds, output


def stage_benchmarks(directory: Path) -> list[Stage]:
    """One stage per Snakemake benchmark file of the default run, in finishing order: its seed's
    jobs at the flat paths, the other layers of its profile under their run prefix and the layer
    aggregate; other seeds' jobs are a sweep's."""
    import pandas as pd

    stages = []
    config = directory / "config.yaml"
    seed = (read_yaml(config) or {}).get("seed", 0) if config.is_file() else 0
    paths = [
        *directory.glob(layout.benchmark("", "*")),
        *directory.glob(layout.benchmark(layout.sweep_run_prefix(seed, "*"), "*")),
    ]
    for path in sorted(paths):
        table = pd.read_csv(path, sep="\t")
        rss = pd.to_numeric(table.get("max_rss"), errors="coerce")
        stages.append(
            Stage(
                stage=str(path.relative_to(directory / layout.BENCHMARKS).with_suffix("")),
                seconds=float(table["s"].iloc[-1]),
                max_rss_mb=None if rss is None or rss.isna().all() else float(rss.iloc[-1]),
                finished=path.stat().st_mtime,
            )
        )
    return sorted(stages, key=lambda stage: stage.finished)


def wall_from_benchmarks(stages: list[Stage]) -> tuple[float, str]:
    """A finished run's wall time from its benchmark files: first job start to last job end, less
    any stretch of over IDLE_GAP_SECONDS in which no job ran (stages redone by a later invocation,
    e.g. a --forcerun, leave such a gap); the sum of stage times when even that span is far longer
    than the jobs."""
    total = sum(stage.seconds for stage in stages)
    intervals = sorted((s.finished - s.seconds, s.finished) for s in stages)
    idle, reach = 0.0, intervals[0][1]
    for start, end in intervals[1:]:
        if start - reach > IDLE_GAP_SECONDS:
            idle += start - reach
        reach = max(reach, end)
    span = reach - intervals[0][0]
    how = "first job start to last job end (from the benchmark files' times)"
    if idle:
        how += f", less {idle:,.0f} s in which no job ran (stages redone by a later Snakemake call)"
    if span - idle <= 1.5 * total:
        return span - idle, how
    return total, "sum of stage times (the benchmark files span several runs)"


def minutes_to_accuracy(log_csv: Path, key: str = "ood_person_exact", threshold: float = 0.95) -> Accuracy | None:
    """Training minutes (elapsed_s: step time, monitor excluded) at the first epoch end where the
    monitor's ``key`` reached ``threshold``; the best value seen when it never did."""
    import pandas as pd

    if not log_csv.is_file():
        return None
    log = pd.read_csv(log_csv, keep_default_na=False)
    best, epochs = None, 0.0
    for _, row in log.iterrows():
        if not row["monitor"]:
            continue
        value = json.loads(row["monitor"]).get(key)
        if value is None:
            continue
        epochs = float(row["epoch"])
        if best is None or value > best.value:
            best = Accuracy(
                reached=False, minutes=float(row["elapsed_s"]) / 60, epoch=epochs, value=value, source=str(log_csv)
            )
        if value >= threshold:
            return Accuracy(
                reached=True, minutes=float(row["elapsed_s"]) / 60, epoch=epochs, value=value, source=str(log_csv)
            )
    if best is None:
        return None
    best.epochs_run = epochs
    return best


def copy_finished_run(source: Path, target: Path) -> None:
    """What Snakemake needs to see a finished run as up to date: config, inputs, outputs, metadata.
    copy2 keeps modification times, so nothing looks stale; the source is only read."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / "config.yaml", target / "config.yaml")
    for name in ("data", layout.RESULTS, ".snakemake/metadata"):
        if (source / name).is_dir():
            shutil.copytree(source / name, target / name, symlinks=True)


def measure_sae_rerun(workdir: Path, threads: int) -> Rerun:
    """Double sae.lambda_indep in ``workdir``'s config and time the rerun Snakemake then does."""
    import yaml

    config_path = workdir / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    before = config.get("sae", {}).get("lambda_indep", 1e-2)
    config.setdefault("sae", {})["lambda_indep"] = before * 2
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    _, dry_run = snakemake(workdir, threads, "-n")
    jobs = job_stats(dry_run)
    if not set(jobs) <= SAE_RERUN_JOBS:
        return Rerun(measured=False, why=f"the run is not up to date: changing one λ would run {sorted(jobs)}")
    start = time.time()
    seconds, _ = snakemake(workdir, threads)
    rerun_stages = [s for s in stage_benchmarks(workdir) if s.finished >= start]
    # Jobs may overlap (two 1-thread SAE jobs on 2 cores): the rest is Snakemake's own time.
    busy = max(s.finished for s in rerun_stages) - min(s.finished - s.seconds for s in rerun_stages)
    return Rerun(
        measured=True,
        seconds=seconds,
        change=f"sae.lambda_indep {before:g} → {before * 2:g}",
        jobs=rerun_stages,
        overhead_seconds=max(0.0, seconds - busy),
    )


def measure_extra_questions(source: Path, workdir: Path, threads: int) -> ExtraQuestionsRun:
    """Add two files of EXTRA_QUESTIONS_PER_FILE questions to a copy of the finished run in
    ``source`` and time what Snakemake then runs (after checking that it plans no training)."""
    import yaml

    copy_finished_run(source, workdir)
    rows = [json.loads(line) for line in (workdir / layout.dataset_file("qa_test")).read_text().splitlines()]
    paths = []
    for cell in EXTRA_QUESTION_CELLS:
        chosen = [{k: v for k, v in row.items() if k != "split"} for row in rows if row["split"] == cell]
        path = workdir / f"questions_{cell}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in chosen[:EXTRA_QUESTIONS_PER_FILE]))
        paths.append(str(path))
    config_path = workdir / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config.setdefault("evaluate", {})["extra_questions"] = paths
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    _, dry_run = snakemake(workdir, threads, "-n")
    planned = set(job_stats(dry_run))
    if planned & (RETRAINING_JOBS | SHIPPED_PASSES):
        return ExtraQuestionsRun(
            measured=False,
            why=f"adding question files would run {sorted(planned & (RETRAINING_JOBS | SHIPPED_PASSES))}",
        )
    questions = sum(len(Path(path).read_text().splitlines()) for path in paths)
    start = time.time()
    seconds, _ = snakemake(workdir, threads)
    jobs = [s for s in stage_benchmarks(workdir) if s.finished >= start]
    busy = max(s.finished for s in jobs) - min(s.finished - s.seconds for s in jobs) if jobs else 0.0
    return ExtraQuestionsRun(
        measured=True, questions=questions, seconds=seconds, jobs=jobs, overhead_seconds=max(0.0, seconds - busy)
    )


def rerun_from_stages(stages: list[Stage]) -> Rerun:
    """What the SAE-only rerun costs, read from the finished run's own stage times instead of rerun:
    the sum of the jobs a λ change reruns (every layer's two SAEs and evaluate, the aggregate),
    without Snakemake's start-up. Labelled an estimate wherever it is shown."""
    jobs = [stage for stage in stages if stage.rule in SAE_RERUN_JOBS]
    return Rerun(
        measured=False,
        estimated=True,
        seconds=sum(stage.seconds for stage in jobs),
        jobs=jobs,
        why="--no-rerun: estimated from the finished run's stage times of the jobs a λ change reruns",
    )


def rerun_floor(rerun: Rerun, causal: LayerSeconds | None, wall: float, threads: int) -> RerunFloor | None:
    """The SAE-only rerun's work that stays whatever its jobs: the two SAE trainings (their jobs in
    the rerun, side by side on ``threads`` cores: the longer one) and the SAE's causal tests of
    every layer spread over the cores, as a share of the full run."""
    training = [stage.seconds for stage in rerun.jobs if stage.rule in SAE_TRAINING_JOBS]
    if not training or not causal:
        return None
    sae_seconds = max(training) if threads >= 2 else sum(training)
    causal_seconds = sum(causal.seconds.values()) / threads
    return RerunFloor(
        sae_training_seconds=sae_seconds,
        causal_seconds=causal_seconds,
        seconds=sae_seconds + causal_seconds,
        fraction=(sae_seconds + causal_seconds) / wall,
    )


def prepare_downstream_run(source: Path, target: Path, layers: list[int] | None, threads: int) -> dict[str, int]:
    """A copy of the finished run ``source`` in ``target`` that keeps only the dataset and the
    trained LM (and their Snakemake records), with ``sweep.layers`` set to ``layers`` (None: as
    it is); returns the jobs Snakemake plans there (its dry run's job table)."""
    import yaml

    copy_finished_run(source, target)
    _keep_only(target, target / layout.RESULTS, SHARED_OUTPUTS)
    if layers is not None:
        config_path = target / "config.yaml"
        config = yaml.safe_load(config_path.read_text())
        config.setdefault("sweep", {})["layers"] = layers
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    _, dry_run = snakemake(target, threads, "-n")
    return job_stats(dry_run)


def _keep_only(root: Path, directory: Path, kept: tuple[str, ...]) -> None:
    """Delete everything under ``directory`` but the paths ``kept`` (relative to ``root``)."""
    for child in directory.iterdir():
        name = child.relative_to(root).as_posix()
        if any(name == path or name.startswith(path + "/") for path in kept):
            continue
        if child.is_dir() and not child.is_symlink():
            if any(path.startswith(name + "/") for path in kept):
                _keep_only(root, child, kept)
            else:
                shutil.rmtree(child)
        else:
            child.unlink()


def measure_profile_runs(source: Path, stages: list[Stage], workdir: Path, threads: int) -> ProfileRuns:
    """The layer profile's cost as wall time, both sides run here back to back: everything after
    the LM with the config's profile, then restricted to the seed's hook, each by ``snakemake``
    on a copy of the finished run ``source`` (:func:`prepare_downstream_run`). The LM part both
    pipelines share is the run's own dataset and train_lm seconds."""
    config = run_config(source)
    seed_layer = config["activations"]["layer"]
    if config["sweep"]["seeds"]:
        return ProfileRuns(measured=False, why="the run has sweep seeds (each its own LM); the comparison is one LM's")
    if profile_layers(config, config["model"]["n_layer"]) == [seed_layer]:
        return ProfileRuns(measured=False, why="the run's profile is the seed's hook alone")
    shared = sum(stage.seconds for stage in stages if stage.stage in SHARED_STAGES)
    runs = {}
    for name, layers in (("profile", None), ("seed_hook", [seed_layer])):
        target = workdir / f"downstream_{name}"
        jobs = prepare_downstream_run(source, target, layers, threads)
        if set(jobs) & set(SHARED_STAGES):
            return ProfileRuns(
                measured=False,
                why=f"the copy would rerun {sorted(set(jobs) & set(SHARED_STAGES))}: the run's LM is not up to date",
            )
        seconds, _ = snakemake(target, threads)
        runs[name] = DownstreamRun(seconds=seconds, jobs=jobs, job_count=sum(jobs.values()) - jobs.get("all", 0))
        say(f"[pipeline] after the LM, {name.replace('_', ' ')} ({runs[name].job_count} jobs): {seconds:.1f} s")
        shutil.rmtree(target)
    return ProfileRuns(
        measured=True,
        shared_seconds=shared,
        seed_layer=seed_layer,
        profile=runs["profile"],
        seed_hook=runs["seed_hook"],
        ratio=profile_wall_ratio(shared, runs["profile"].seconds, runs["seed_hook"].seconds),
    )


def profile_wall_ratio(shared_seconds: float, profile_seconds: float, seed_hook_seconds: float) -> float:
    """Wall time of the pipeline with the profile ÷ without, both sharing the dataset and LM."""
    return (shared_seconds + profile_seconds) / (shared_seconds + seed_hook_seconds)


def method_names(run_dir: Path) -> list[str]:
    return run_config(run_dir)["methods"]["names"]


def measure_pipeline(
    config_overrides: dict,
    threads: int,
    pipeline_dir: Path | None,
    workdir: Path,
    rerun: bool = True,
    profile_runs: bool = True,
    extra_questions: bool = True,
) -> Pipeline:
    """Run the default pipeline in ``workdir`` (or read a finished one), then the SAE-only rerun
    and the two runs after the LM that compare the layer profile with the seed's hook alone."""
    run_dir = workdir / "pipeline"
    if pipeline_dir is None:
        run_dir.mkdir(parents=True)
        import yaml

        (run_dir / "config.yaml").write_text(yaml.safe_dump(experiment_config(config_overrides), sort_keys=False))
        shutil.copytree(REPO / "data", run_dir / "data")
        say(f"[pipeline] running the default pipeline in {run_dir} (--cores {threads}) ...")
        wall, _ = snakemake(run_dir, threads)
        stages, wall_how = stage_benchmarks(run_dir), "wall clock of the snakemake command"
        source = run_dir
    else:
        stages = stage_benchmarks(pipeline_dir)
        if not stages:
            raise RuntimeError(
                f"--pipeline-dir {pipeline_dir}: no {layout.BENCHMARKS}/*.tsv (not a finished pipeline run)"
            )
        wall, wall_how = wall_from_benchmarks(stages)
        copy_finished_run(pipeline_dir, run_dir)
        source = pipeline_dir
    for stage in stages:
        say(f"[pipeline] {stage.stage}: {stage.seconds:,.1f} s, peak RSS {stage.max_rss_mb or 0:,.0f} MB")
    say(f"[pipeline] total {wall / 60:.1f} min ({wall_how})")
    names = method_names(source)
    result = Pipeline(
        stages=stages,
        wall=wall,
        wall_how=wall_how,
        source=str(source),
        ran_here=pipeline_dir is None,
        accuracy=minutes_to_accuracy(source / layout.lm_train_log("")),
        sae_layers=measure_sae_layers(source),
        topk_layers=measure_topk_layers(source) if "sae_unsupervised" in names else None,
        das_layers=measure_das_layers(source) if "das" in names else None,
        method_tests_layers=measure_method_tests_layers(source),
    )
    result.rerun = measure_sae_rerun(run_dir, threads) if rerun else rerun_from_stages(stages)
    result.sae_causal = measure_sae_causal_layers(source)
    # Where this bench ran the pipeline itself, ``source`` is the run the rerun changed (its λ
    # doubled): that changes nothing upstream of the SAEs, and both sides of the comparison use it.
    result.profile_runs = (
        measure_profile_runs(source, stages, workdir, threads)
        if profile_runs
        else ProfileRuns(measured=False, why="--no-profile-runs")
    )
    if not result.profile_runs.measured:
        say(f"[pipeline] layer profile against the seed's hook alone not run: {result.profile_runs.why}")
    rerun_result = result.rerun
    if rerun_result.estimated:
        rerun_result.fraction = rerun_result.seconds / wall
        say(
            f"[pipeline] SAE-only rerun estimated from stage times: {rerun_result.seconds:.1f} s = "
            f"{rerun_result.fraction:.1%}"
        )
    elif rerun_result.measured:
        rerun_result.fraction = rerun_result.seconds / wall
        say(
            f"[pipeline] rerun after {rerun_result.change}: {rerun_result.seconds:.1f} s = {rerun_result.fraction:.1%} "
            "of the full run"
        )
    else:
        say(f"[pipeline] SAE-only rerun not measured: {rerun_result.why}")
    rerun_result.floor = rerun_floor(rerun_result, result.sae_causal, wall, threads)
    if rerun_result.floor:
        say(
            f"[pipeline] of it, the SAE trainings and the SAE's causal tests: {rerun_result.floor.seconds:.1f} s = "
            f"{rerun_result.floor.fraction:.1%} of the full run"
        )
    if extra_questions:
        extra = result.extra_questions = measure_extra_questions(source, workdir / "extra_questions", threads)
        if extra.measured:
            extra.fraction = extra.seconds / wall
            say(
                f"[pipeline] {extra.questions:,} new questions scored on the finished run: {extra.seconds:.1f} s = "
                f"{extra.fraction:.1%} of the full run"
            )
        else:
            say(f"[pipeline] new questions not scored: {extra.why}")
    else:
        result.extra_questions = ExtraQuestionsRun(measured=False, why="--no-extra-questions")
    return result
