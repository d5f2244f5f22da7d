"""The speed benchmark (bench/run.py) at tiny sizes: it runs end to end and reports every figure.

The benchmark itself is not a test (its figures depend on the machine); these keep the script
working: the in-process measurements on a tiny corpus and model, the pipeline figures read from
benchmark files and a training log, and the SAE-only rerun on a finished tiny pipeline.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from biosae import layout
from biosae.job_stats import job_stats
from biosae.methods.causal_variants import CONTROLS
from tests.conftest import REPO

pytestmark = pytest.mark.slow

SCRIPT = REPO / "bench" / "run.py"


def load_bench():
    """bench/pipeline.py, the pipeline benchmark's module (bench/ is a package beside biosae/)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module("bench.pipeline")


def run_bench(*args, timeout=600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )
    assert result.returncode == 0, f"bench/run.py failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def test_tiny_run_measures_every_in_process_figure(tmp_path):
    out = tmp_path / "results.md"
    result = run_bench("--skip-pipeline", "--out", str(out))
    text = out.read_text()
    assert "TINY SMOKE RUN" in text
    for heading in (
        "## Targets",
        "## 1. Machine limits",
        "## 2.–3. LM training",
        "## 4. Activation collection",
        "## 5. Dataset generation",
        "## 6. The default pipeline",
    ):
        assert heading in text
    for figure in (
        "fp32 matrix product",
        "bf16 matrix product",
        "| tokens/s |",
        "| MFU",
        "fraction of the ceiling",
        "persons/s",
        "Trainer, padded documents",
        "share of positions that are padding",
    ):
        assert figure in text
    # Both Trainer baselines ran: as users write it (the target's) and on our packed blocks.
    speedups = re.search(r"as users write it: \*\*([\d.]+)×\*\*.*packed blocks: \*\*([\d.]+)×\*\*", text)
    assert speedups and all(float(value) > 0 for value in speedups.groups())
    # Two rounds ran (the tiny sizes); the table shows the lower median round, the slower ratio of two.
    rounds = re.search(
        r"2 rounds, .* the median round \(the lower of two\) \(round (\d)\b.*per round: ([\d.]+)×, ([\d.]+)×;", text
    )
    assert rounds, text
    round_ratios = sorted(float(v) for v in rounds.groups()[1:])
    assert float(speedups.group(1)) == round_ratios[0]
    # Each target has a verdict; the ones measured here are PASS or MISS, the pipeline's are not measured.
    targets = text.split("## Targets")[1].split("## 1.")[0]
    verdicts = [
        line.rsplit("|", 2)[-2].strip()
        for line in targets.splitlines()
        if line.startswith("| ") and "verdict" not in line
    ]
    assert len(verdicts) == 11
    assert verdicts.count("not measured") == 8 and all(v in ("PASS", "MISS", "not measured") for v in verdicts)
    assert "Not measured (`--skip-pipeline`)" in text
    assert "[evaluate] not measured: needs a finished run" in result.stdout
    # Figures are printed as the run goes.
    for tag in ("[machine]", "[training]", "[activations]", "[dataset]"):
        assert tag in result.stdout


def write_benchmark(path: Path, seconds: float, max_rss: float, finished: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time"
    path.write_text(f"{header}\n{seconds}\t0:00:00\t{max_rss}\t1\t1\t1\t0\t0\t50\t{seconds}\n")
    os.utime(path, (finished, finished))


def test_pipeline_figures_come_from_benchmark_files_and_the_training_log(tmp_path):
    bench = load_bench()
    now = time.time()
    write_benchmark(tmp_path / "benchmarks" / "dataset.tsv", 10.0, 300.0, now - 100)
    write_benchmark(tmp_path / "benchmarks" / "train_lm.tsv", 80.0, 900.5, now - 15)
    write_benchmark(tmp_path / "benchmarks" / "evaluate.tsv", 15.0, 700.0, now)
    write_benchmark(tmp_path / "benchmarks" / "sweep" / "seed_1" / "train_lm.tsv", 99.0, 1.0, now)
    write_benchmark(tmp_path / "benchmarks" / "sweep" / "seed_1" / "layer_0" / "evaluate.tsv", 99.0, 1.0, now)
    write_benchmark(tmp_path / "benchmarks" / "sweep" / "seed_0" / "layer_0" / "evaluate.tsv", 5.0, 1.0, now - 50)
    stages = bench.stage_benchmarks(tmp_path)
    # In finishing order: the default run's jobs, its seed's (0, no config.yaml here) other layers
    # included; another seed's are a sweep's.
    assert [s.stage for s in stages] == ["dataset", "sweep/seed_0/layer_0/evaluate", "train_lm", "evaluate"]
    assert stages[2].seconds == 80.0 and stages[2].max_rss_mb == 900.5
    wall, how = bench.wall_from_benchmarks(stages)
    assert wall == pytest.approx(110.0, abs=0.5) and "first job start" in how and "less" not in how
    # Stages redone by a later call leave a gap in which no job ran: it is not the pipeline's time.
    redone = [*stages, bench.Stage(stage="train_sae", seconds=20.0, finished=now + 1000, max_rss_mb=None)]
    wall, how = bench.wall_from_benchmarks(redone)
    assert wall == pytest.approx(130.0, abs=0.5) and "less 980 s in which no job ran" in how
    # The layer profile's cost: every stage ÷ the seed hook's stages (layer 0's evaluate is extra).
    from bench.layers import LayerSeconds, LayerTraining
    from bench.results_page import layer_profile_ratio

    Pipeline = bench.Pipeline
    assert layer_profile_ratio(Pipeline(stages=stages)) == pytest.approx(110.0 / 105.0)
    assert layer_profile_ratio(Pipeline(stages=[s for s in stages if not s.stage.startswith("sweep/")])) is None
    # The other layers' SAEs train inside the LM's two SAE jobs: their in-process share leaves the base.
    sae_layers = LayerTraining(all_seconds=4.0, one_seconds=1.5)
    assert layer_profile_ratio(Pipeline(stages=stages, sae_layers=sae_layers)) == pytest.approx(110.0 / (105.0 - 5.0))
    # ... and so do the other layers' TopK SAEs (in-process difference) and DAS (the job's work
    # timed per layer in process; the shared prompts stay with the seed hook)
    topk_layers = LayerTraining(all_seconds=3.0, one_seconds=2.0)
    das_layers = LayerSeconds(seconds={"0": 2.0, "-1": 1.5}, shared_seconds=0.5, seed_layer=-1)
    assert layer_profile_ratio(
        Pipeline(stages=stages, sae_layers=sae_layers, topk_layers=topk_layers, das_layers=das_layers)
    ) == pytest.approx(110.0 / (105.0 - 5.0 - 1.0 - 2.0))
    # --no-rerun: the SAE-only rerun estimated from the jobs a λ change reruns, every layer's.
    estimate = bench.rerun_from_stages(stages)
    assert estimate.estimated and not estimate.measured
    assert [s.stage for s in estimate.jobs] == ["sweep/seed_0/layer_0/evaluate", "evaluate"]
    assert estimate.seconds == pytest.approx(20.0)
    # The rerun's floor: the longer of the two SAE jobs (side by side on 2 cores, one after the
    # other on 1) and the SAE's causal tests of every layer spread over the cores.
    jobs = [
        bench.Stage(stage="train_sae", seconds=30.0),
        bench.Stage(stage="untrained_sae", seconds=34.0),
        bench.Stage(stage="sweep/seed_0/layer_0/evaluate", seconds=25.0),
    ]
    causal = LayerSeconds(seconds={0: 6.0, -1: 4.0}, shared_seconds=3.0, prompts_per_cell=24)
    floor = bench.rerun_floor(bench.Rerun(measured=True, jobs=jobs), causal, 400.0, 2)
    assert floor.seconds == pytest.approx(34.0 + 5.0) and floor.fraction == pytest.approx(39.0 / 400.0)
    assert bench.rerun_floor(bench.Rerun(measured=True, jobs=jobs), causal, 400.0, 1).seconds == pytest.approx(
        64.0 + 10.0
    )
    assert bench.rerun_floor(bench.Rerun(measured=False, why="not up to date"), causal, 400.0, 2) is None

    log = tmp_path / "train_log.csv"
    monitor = [json.dumps({"train_exact": 0.5, "ood_person_exact": v}).replace('"', '""') for v in (0.4, 0.96, 0.99)]
    log.write_text(
        "step,epoch,lr,loss,tokens_per_s,elapsed_s,monitor\n10,0.5,0.001,3.0,5000,30,\n"
        + "".join(f'{20 * (i + 1)},{i + 1},0.001,1.0,,{60.0 * (i + 1)},"{m}"\n' for i, m in enumerate(monitor))
    )
    reached = bench.minutes_to_accuracy(log)
    assert reached.reached and reached.minutes == pytest.approx(2.0) and reached.epoch == 2
    missed = bench.minutes_to_accuracy(log, threshold=0.999)
    assert not missed.reached and missed.value == 0.99 and missed.epochs_run == 3
    assert bench.minutes_to_accuracy(tmp_path / "absent.csv") is None


def test_verdicts_and_job_table_parsing():
    load_bench()  # puts the repository on sys.path, where the bench package lives
    from bench.results_page import verdict

    assert verdict("pipeline_minutes", 14.9) == "PASS" and verdict("pipeline_minutes", 15.1) == "MISS"
    assert verdict("trainer_speedup", 1.5) == "PASS" and verdict("trainer_speedup", 1.2) == "MISS"
    assert verdict("sae_rerun_fraction", None) == "not measured"
    output = (
        "Building DAG of jobs...\nJob stats:\njob              count\n-------------  -------\n"
        "all                  1\nevaluate             1\ntrain_sae            1\ntotal                3\n"
    )
    assert job_stats(output) == {"all": 1, "evaluate": 1, "train_sae": 1}


def test_sae_rerun_on_a_copy_of_a_finished_tiny_pipeline(tiny_pipeline, tmp_path):
    before = {p: p.stat().st_mtime for p in (tiny_pipeline / "results").rglob("*") if p.is_file()}
    out = tmp_path / "results.md"
    # --no-profile-runs: the two runs after the LM are tested apart (below), their planning only
    result = run_bench(
        "--only",
        "pipeline",
        "evaluate",
        "--pipeline-dir",
        str(tiny_pipeline),
        "--no-profile-runs",
        "--config-runs",  # none: a configuration's whole run is tested apart (below)
        "--out",
        str(out),
    )
    text = out.read_text()
    assert "| train_lm |" in text and "| evaluate |" in text and "| **total** |" in text
    assert "Rerun after `sae.lambda_indep 0.01 → 0.02`" in text, result.stdout
    rerun_line = next(line for line in text.splitlines() if line.startswith("Rerun after"))
    assert "train_sae" in rerun_line and "untrained_sae" in rerun_line and "evaluate" in rerun_line
    assert "train_lm" not in rerun_line
    # ... and what of it no arrangement of the jobs removes: the SAE trainings and the SAE's causal
    # tests of every layer, timed in process; part of the rerun, so less than all of it
    floor = re.search(
        r"causal tests at every layer .*?: layer 0 [\d.]+ s, layer 1 [\d.]+ s, layer -1 [\d.]+ s; .*"
        r"\*\*([\d.]+) s = [\d.]+%\*\* of the full run",
        text,
    )
    assert floor, text
    assert float(floor.group(1)) < float(re.search(r"^Rerun after .*?\*\*([\d.]+) s = ", rerun_line).group(1))
    assert "### Minutes of training to 95%" in text
    # the per-LM jobs' layer-profile shares: TopK SAE in process, DAS from the job's own record
    assert re.search(r"TopK SAE training .* every layer at once \*\*[\d.]+ s\*\*", text)
    assert re.search(
        r"DAS, from the run's own `train_das` job .*: layer 0 [\d.]+ s, layer 1 [\d.]+ s, layer -1 [\d.]+ s", text
    )
    # Section 7: the seed hook's evaluate timed in-process for every method and for SAE + random only.
    section = text.split("## 7. The evaluate stage")[1]
    # The rows name the methods each evaluation's metrics hold: the two really differ. Their times
    # are not compared here (on the tiny run the extra methods cost less than the timing noise).
    rows = re.findall(r"^\| ([a-z_, ]+) \| [\d.]+ \| [\d.]+ \| [\d.]+ \|$", section, flags=re.M)
    config = yaml.safe_load((tiny_pipeline / "config.yaml").read_text())
    # (the causal SAE's controls are trained at layer 1 only, not at the seed's hook)
    at_hook = [name for name in config["methods"]["names"] if name not in CONTROLS]
    assert [sorted(row.split(", ")) for row in rows] == [["random", "sae_slot"], sorted(at_hook)]
    assert float(re.search(r"SAE \+ random only: \*\*([\d.]+)×\*\*", section).group(1)) > 0
    assert re.search(r"\| the same like for like: .* \| [\d.]+× \| (PASS|MISS) \|", text)
    # Without the two runs after the LM, the layer profile's figure is the stage-seconds estimate.
    assert re.search(
        r"\| default run with the whole layer profile .* \| [\d.]+× \(stage seconds, estimated from one run\) "
        r"\| (PASS|MISS) \|",
        text,
    )
    assert "against the seed's hook alone, run: not measured (--no-profile-runs)" in text
    # New questions scored on a copy of the run: their four jobs, no training
    extra_line = next(line for line in text.splitlines() if line.startswith("New questions on the finished run:"))
    assert "score_extra_questions" in extra_line and "extra_activations" in extra_line, extra_line
    assert "train_" not in extra_line and "| evaluate" not in extra_line
    assert re.search(r"\| scoring 2 × 1,800 new questions .* \| [\d.]+% \| (PASS|MISS) \|", text)
    assert "Other configurations: none run (`--config-runs` with no file)." in text
    assert re.search(r"\| the first look, .* \| – \| not measured \|", text)
    # The finished run it read is left exactly as it was.
    assert {p: p.stat().st_mtime for p in (tiny_pipeline / "results").rglob("*") if p.is_file()} == before
    assert (tiny_pipeline / "config.yaml").read_text().count("lambda_indep: 0.01") == 1


def test_profile_runs_keep_the_lm_and_plan_everything_after_it(tiny_pipeline, tmp_path):
    """The layer-profile comparison's two copies: each keeps the finished run's dataset and LM and
    plans all the rest again, with the profile's every layer or with the seed's hook alone."""
    bench = load_bench()
    before = {p: p.stat().st_mtime for p in (tiny_pipeline / "results").rglob("*") if p.is_file()}
    # every hook point: the embeddings, each block's output but the last, and the last (-1)
    layers = yaml.safe_load((tiny_pipeline / "config.yaml").read_text())["model"]["n_layer"] + 1
    profile = bench.prepare_downstream_run(tiny_pipeline, tmp_path / "profile", None, 2)
    seed_hook = bench.prepare_downstream_run(tiny_pipeline, tmp_path / "seed_hook", [-1], 2)
    for jobs in (profile, seed_hook):
        assert "train_lm" not in jobs and "dataset" not in jobs
        for rule in (
            "lm_qa_accuracy",
            "activations",
            "untrained_lm",
            "train_sae",
            "untrained_sae",
            "train_das",
            "evaluate_methods",
        ):
            assert jobs[rule] == 1, (rule, jobs)
    assert profile["evaluate"] == layers and profile["aggregate"] == 1
    assert seed_hook["evaluate"] == 1 and "aggregate" not in seed_hook
    kept = tmp_path / "seed_hook" / "results"
    assert (kept / "lm" / "final").is_dir() and (kept / "dataset" / "qa_train.jsonl").is_file()
    assert not (kept / "activations").exists() and not (kept / "lm" / "qa_accuracy.json").exists()
    assert yaml.safe_load((tmp_path / "seed_hook" / "config.yaml").read_text())["sweep"]["layers"] == [-1]
    # The finished run it copied is left exactly as it was.
    assert {p: p.stat().st_mtime for p in (tiny_pipeline / "results").rglob("*") if p.is_file()} == before
    # The ratio: both sides share the dataset and the LM.
    assert bench.profile_wall_ratio(100.0, 50.0, 20.0) == pytest.approx(150.0 / 120.0)
    from bench.results_page import layer_profile_figure

    runs = bench.ProfileRuns(
        measured=True,
        ratio=1.1,
        shared_seconds=100.0,
        seed_layer=-1,
        profile=bench.DownstreamRun(seconds=50.0, jobs={"evaluate": 3, "all": 1}, job_count=3),
        seed_hook=bench.DownstreamRun(seconds=20.0, jobs={"evaluate": 1, "all": 1}, job_count=1),
    )
    value, shown = layer_profile_figure(bench.Pipeline(stages=[], profile_runs=runs))
    assert value == 1.1 and shown.startswith("1.10× wall time")


def test_a_configuration_runs_whole_from_a_clean_directory_beside_the_default(tmp_path):
    """A config file layered on config.yaml as Snakemake layers it (mappings merge, lists
    replace), run whole in a directory of its own, then set against the default's wall time."""
    load_bench()
    from bench.common import TINY
    from bench.configurations import ConfigRun, measure_config_runs
    from bench.pipeline import Pipeline
    from bench.results_page import causal_sae_cost, config_runs_lines, quick_minutes
    from biosae.config import layered

    base = {"methods": {"names": ["a", "b"], "das": {"rank": 8, "epochs": 8}}, "seed": 0}
    overlay = {"methods": {"names": ["a"], "das": {"rank": 4}}}
    assert layered(base, overlay) == {"methods": {"names": ["a"], "das": {"rank": 4, "epochs": 8}}, "seed": 0}
    assert base["methods"]["das"]["rank"] == 8  # the base is left as it was

    # the seed's hook alone and two methods: the smallest whole pipeline
    config_file = tmp_path / "quick.yaml"
    config_file.write_text("sweep:\n  layers: [-1]\nmethods:\n  names: [sae_slot, random]\n")
    workdir = tmp_path / "configs"
    kept = tmp_path / "kept"
    (run,) = measure_config_runs(
        [str(config_file)], TINY.config_overrides, 2, workdir, default_seconds=1000.0, keep_in=kept
    )
    assert run.name == "quick" and run.seconds > 0 and run.ratio == pytest.approx(run.seconds / 1000.0)
    # the tiny overrides apply after the file: a 24-person corpus, not the default's 1,690 steps
    assert 0 < run.lm_steps < 100 and run.lm_seconds < run.seconds
    # dataset, the LM and its QA accuracy, activations, the untrained LM's three jobs, the SAE, the
    # method tests and one evaluation: no aggregate without a profile
    assert run.jobs == 10, run
    # measured, the run moves where it was asked to be kept: a finished run of that configuration
    assert not (workdir / "quick").exists()
    assert yaml.safe_load((kept / "quick" / "config.yaml").read_text())["methods"]["names"] == ["sae_slot", "random"]
    assert (kept / "quick" / layout.eval_metrics("")).is_file()
    pipeline = Pipeline(stages=[], wall=1000.0, ran_here=True, config_runs=[run])
    assert quick_minutes(pipeline) == pytest.approx(run.seconds / 60) and causal_sae_cost(pipeline) is None
    row = next(line for line in config_runs_lines(pipeline, 2) if line.startswith(f"| `{config_file}`"))
    assert f"{run.ratio:.2f}×" in row and f"{run.lm_steps:,d}" in row
    # several files joined by commas layer in that order, named by their stems
    assert measure_config_runs([], {}, 2, workdir, None) == []
    assert (
        ConfigRun(
            config_file="config/quick.yaml,bench/configs/fp32.yaml", seconds=1.0, lm_seconds=None, lm_steps=None, jobs=1
        ).name
        == "quick+fp32"
    )


def test_compare_metrics_flags_what_moved_beyond_the_tolerance(tmp_path, capsys):
    from bench.compare_metrics import main as compare

    metrics = {"layer": 1, "cells": {"train": {"iia": 0.5, "n": 24}}, "verdict": "PASS", "curve": [0.1, 0.2]}
    for run, iia in (("a", 0.5), ("b", 0.5 + 5e-7), ("c", 0.5 + 2e-6)):
        path = tmp_path / run / "sweep" / "seed_0" / "layer_1" / "eval" / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({**metrics, "cells": {"train": {"iia": iia, "n": 24}}}))
    assert compare([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert compare([str(tmp_path / "a"), str(tmp_path / "c")]) == 1
    assert "sweep/seed_0/layer_1/eval/metrics.json: .cells.train.iia: 0.5 != 0.500002" in capsys.readouterr().out
    (tmp_path / "c" / "extra" / "eval").mkdir(parents=True)
    (tmp_path / "c" / "extra" / "eval" / "metrics.json").write_text("{}")
    assert compare([str(tmp_path / "a"), str(tmp_path / "c"), "--tolerance", "1e-5"]) == 1
    assert "extra/eval/metrics.json: only in B" in capsys.readouterr().out
