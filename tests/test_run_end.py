"""The end of a run: what the default run found and which files to open (onsuccess), each failed
job's log (onerror); the library functions on metrics files, then the real Snakemake engine on a
copy of the tiny run."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from biosae import layout
from biosae.evaluation.layer_profile import profile_section
from biosae.evaluation.run_end import (
    failed_job_logs,
    failed_jobs_line,
    print_failed_job_logs,
    print_run_end,
    run_end_lines,
)
from tests.conftest import copy_run, run_snakemake

METRICS = layout.eval_metrics("")
CELLS = ["train", "ood_both"]


def layer_metrics(layer: int, sae: float, das: float) -> dict:
    """A metrics.json with what the end of a run reads: expected results, cells and two methods' scores."""

    def method(selectivity, iia):
        return {
            "ablation": {cell: {"selectivity": selectivity} for cell in CELLS},
            "interchange": {cell: {"iia": iia} for cell in CELLS},
        }

    return {
        "layer": layer,
        "cells": CELLS,
        "slot_accuracy": {cell: 0.9 for cell in CELLS},
        "methods": {"sae_slot": method(sae, sae), "das": method(das, das), "random": method(0.0, 0.05)},
        "expected_results": [
            {
                "name": "slot_diagonal_accuracy_train",
                "description": "SAE slot (diagonal) accuracy on the train cell",
                "source": "seed",
                "threshold": 0.95,
                "comparison": ">=",
                "value": 1.0,
                "passed": True,
                "by_cell": {"train": 1.0},
            },
            {
                "name": "slot_ablation_diagonal_train",
                "description": "mean normalized accuracy drop on the slot-ablation diagonal, train cell",
                "source": "seed",
                "threshold": 0.8,
                "comparison": ">",
                "value": 0.12,
                "passed": False,
                "by_cell": {"train": 0.12},
            },
        ],
    }


def write_profile(directory, scores: dict[int, tuple[float, float]], default_layer: int = -1) -> list[dict]:
    """Each layer's metrics.json where the rules write them (seed 0), -1 the default run."""
    written = []
    for layer, (sae, das) in scores.items():
        metrics = layer_metrics(layer, sae, das)
        path = directory / layout.eval_metrics(layout.run_prefix(0, layer, 0, default_layer))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics))
        written.append(metrics)
    return written


def test_run_end_names_the_verdicts_the_peak_and_the_files(tmp_path):
    profile = write_profile(tmp_path, {0: (0.1, 0.05), 1: (0.8, 0.7), -1: (0.3, 0.4)})
    lines = run_end_lines(0, -1, [0, 1, -1], 2, tmp_path)
    text = "\n".join(lines)
    assert lines[0] == f"biosae: the run is finished. Expected results of {METRICS} (layer -1): 1 of 2 pass"
    assert "  PASS [seed] SAE slot (diagonal) accuracy on the train cell: 1.000, required >= 0.95" in lines
    assert (
        "  FAIL [seed] mean normalized accuracy drop on the slot-ablation diagonal, train cell: 0.120, required > 0.8"
        in lines
    )
    # the summary's layer profile says the same sentence
    peak = profile_section(profile, 2, -1)[-1].strip()
    assert peak.startswith("The SAE's causal effect peaks at layer 1: ablation selectivity 0.800")
    assert "the best other method is das (0.700): the SAE is 0.100 ahead of it" in peak
    assert peak in lines
    for path in (layout.eval_summary(""), layout.eval_figures("") + "/", "snakemake --report report.html"):
        assert path in text


def test_one_layer_gives_the_methods_verdict_there(tmp_path):
    write_profile(tmp_path, {0: (0.9, 0.1), -1: (0.3, 0.4)})
    text = "\n".join(run_end_lines(0, -1, [-1], 2, tmp_path))  # layer 0's file is not in this profile
    assert "peaks" not in text
    assert "the best method at layer -1 (the last block's output) is das (0.400)" in text


def test_nothing_without_the_default_runs_metrics_or_for_other_targets(tmp_path, capsys):
    assert run_end_lines(0, -1, [0, -1], 2, tmp_path) == []
    print_run_end([METRICS], 0, -1, [0, -1], 2, tmp_path)
    write_profile(tmp_path, {0: (0.1, 0.05), -1: (0.3, 0.4)})
    print_run_end([layout.lm_qa_accuracy("")], 0, -1, [0, -1], 2, tmp_path)
    assert capsys.readouterr().out == ""
    print_run_end([layout.lm_qa_accuracy(""), METRICS], 0, -1, [0, -1], 2, tmp_path)
    assert "biosae: the run is finished" in capsys.readouterr().out


def test_an_unreadable_summary_never_fails_the_run(tmp_path, capsys):
    path = tmp_path / METRICS
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    print_run_end([METRICS], 0, -1, [-1], 2, tmp_path)
    output = capsys.readouterr().out
    assert output.startswith("biosae: no summary of the run (") and output.count("\n") == 1


# Snakemake 9's own log of a run with two failed jobs (-k), one with a log and one without
SNAKEMAKE_LOG = """\
[Mon Dec  7 00:29:33 2026]
localrule b:
    output: b.txt
    log: logs/b.log
    jobid: 1
RuleException:
CalledProcessError in file "/tmp/toy/Snakefile", line 6:
[Mon Dec  7 00:29:33 2026]
Error in rule b:
    message: None
    jobid: 1
    output: b.txt
    log: logs/b.log (check log file(s) for error details)
    shell:
        echo hi > logs/b.log; exit 1
        (command exited with non-zero exit code)
Select jobs to execute...
[Mon Dec  7 00:29:37 2026]
Error in rule c:
    message: None
    jobid: 2
    output: c.txt
Exiting because a job execution failed. Look above for error messages
"""


def test_failed_jobs_are_read_from_snakemakes_log(tmp_path, capsys):
    assert failed_job_logs(SNAKEMAKE_LOG) == [("b", "logs/b.log"), ("c", None)]
    assert failed_jobs_line([("b", "logs/b.log")]) == "biosae: a job failed; its log: logs/b.log (rule b)"
    both = "biosae: 2 jobs failed; their logs: logs/b.log (rule b), rule c (no log file: its error is above)"
    assert failed_jobs_line(failed_job_logs(SNAKEMAKE_LOG)) == both
    log = tmp_path / "snakemake.log"
    log.write_text(SNAKEMAKE_LOG)
    print_failed_job_logs([log])
    assert capsys.readouterr().err == both + "\n"
    print_failed_job_logs([tmp_path / "missing.log"])
    assert capsys.readouterr().err.startswith(f"biosae: a job failed; each job's log is {layout.LOGS}/<rule>.log")


# ------------------------------------------------------------------------------------------------
# Through Snakemake, on a copy of the tiny run: removing the aggregate's table reruns only that job


def rerun_aggregate(tiny_pipeline, tmp_path):
    run = copy_run(tiny_pipeline, tmp_path / "run")
    os.remove(run / layout.aggregate_file("summary.csv"))
    return run


@pytest.mark.slow
def test_a_finished_run_says_what_it_found(tiny_pipeline, tmp_path):
    run = rerun_aggregate(tiny_pipeline, tmp_path)
    result = run_snakemake(run, "--cores", "1")
    output = result.stdout + result.stderr
    metrics = json.loads((run / METRICS).read_text())
    passed = sum(entry["passed"] is True for entry in metrics["expected_results"])
    assert f"Expected results of {METRICS} (layer -1): {passed} of {len(metrics['expected_results'])} pass" in output
    for entry in metrics["expected_results"]:
        verdict = {True: "PASS", False: "FAIL", None: "NOT MEASURED"}[entry["passed"]]
        assert f"  {verdict:<4} [{entry['source']}] {entry['description']}: " in output
    summary = (run / layout.eval_summary("")).read_text()
    peak = next(line for line in summary.splitlines() if line.startswith("The SAE's causal effect peaks at layer"))
    assert peak in output.splitlines()
    for line in (
        f"  {layout.eval_summary('')}  (the findings",
        f"  {layout.eval_figures('')}/  (the figures)",
        "  snakemake --report report.html  (",
    ):
        assert line in output


@pytest.mark.slow
def test_dry_runs_partial_targets_and_nothing_to_do_print_nothing_extra(tiny_pipeline, tmp_path):
    run = rerun_aggregate(tiny_pipeline, tmp_path)
    for args in (["-n"], ["--cores", "1", layout.aggregate_file("summary.csv")], ["--cores", "1"]):
        result = run_snakemake(run, *args)
        assert "biosae:" not in result.stdout + result.stderr, args  # the last one: nothing to be done


@pytest.mark.slow
def test_a_failed_job_names_its_log(tiny_pipeline, tmp_path):
    run = rerun_aggregate(tiny_pipeline, tmp_path)
    # a layer's metrics.json made unreadable, its time kept: only the aggregate reruns, and fails
    metrics = run / layout.eval_metrics(layout.sweep_run_prefix(0, 0))
    kept = tmp_path / "metrics.json"
    shutil.copy2(metrics, kept)
    metrics.write_text("not json")
    shutil.copystat(kept, metrics)
    result = run_snakemake(run, "--cores", "1", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    log = layout.log("", "aggregate")
    assert f"biosae: a job failed; its log: {log} (rule aggregate)" in output
    assert "not valid JSON" in (run / log).read_text()
