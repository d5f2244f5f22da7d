"""Command-line overrides and canonical params through the real Snakemake engine, on a copy of
the finished tiny run: an override plans exactly the stages it changes; the same values, from
any source and in any key order or number spelling, plan nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from biosae.job_stats import job_stats
from tests.conftest import REPO, copy_run, planned_jobs, run_snakemake
from tests.test_workflow import DOWNSTREAM_OF_DATASET

pytestmark = pytest.mark.slow

SAE_AND_EVALUATION = {"train_sae", "untrained_sae", "train_causal_sae", "evaluate", "aggregate", "all"}  # every layer


@pytest.fixture
def run(tiny_pipeline, tmp_path) -> Path:
    return copy_run(tiny_pipeline, tmp_path / "run")


def test_nested_command_line_overrides_plan_the_stages_they_change(run):
    assert set(planned_jobs(run, "--config", "sae={lambda_align: 2.0}")) == SAE_AND_EVALUATION
    assert set(planned_jobs(run, "--config", "dataset={num_persons: 50}")) == DOWNSTREAM_OF_DATASET


def test_a_bad_command_line_override_stops_with_one_line(run):
    result = run_snakemake(run, "-n", "--config", "sae={lambda_align: abc}", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output
    assert "biosae config error: config key sae.lambda_align: 'abc' is not of type 'number'\n" in output


def respelled(value):
    """Every mapping's keys sorted, every integral number spelled the other way (1 <-> 1.0)."""
    if isinstance(value, dict):
        return {key: respelled(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [respelled(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


@pytest.mark.parametrize("form", ["sorted keys", "sorted keys, 1 <-> 1.0", "JSON"])
def test_the_same_config_in_another_form_plans_nothing(run, form):
    path = run / "config.yaml"
    config = yaml.safe_load(path.read_text())
    if form == "sorted keys":
        path.write_text(yaml.safe_dump(config, sort_keys=True))
    elif form == "JSON":  # Snakemake reads a JSON config file into OrderedDicts
        path.write_text(json.dumps(config, indent=1, sort_keys=True))
    else:
        path.write_text(yaml.safe_dump(respelled(config), sort_keys=False))
    assert planned_jobs(run) == {}


def test_command_line_values_equal_to_the_config_plan_nothing(run):
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["sae"]["lambda_align"], config["training"]["epochs"], config["seed"]) == (1.0, 40, 0)
    same = [
        "sae={lambda_value: 0.5, lambda_align: 1}",
        "training={epochs: 40.0}",
        "seed=0",
        "evaluate={swap_alphas: [1, 2], hard_questions: true}",
        "sweep={layers: all}",
    ]
    assert planned_jobs(run, "--config", *same) == {}


def test_a_partial_configfile_of_the_same_values_plans_nothing(run):
    # --configfile replaces the test's config.yaml on the command line; the Snakefile's
    # `configfile: "config.yaml"` still reads it first, and this file's key order comes first.
    partial = run / "partial.yaml"
    partial.write_text("sae: {lambda_value: 0.5, temp_end: 0.1, lambda_align: 1}\ntraining: {epochs: 40.0}\n")
    assert planned_jobs(run, "--configfile", str(partial)) == {}


def test_run_sh_turns_dotted_keys_into_the_nested_form(run, tmp_path):
    """./run.sh with its real install step skipped: a .venv whose snakemake is this environment's."""
    checkout = tmp_path / "checkout"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    for name in ("run.sh", "install.sh", "pyproject.toml"):
        (checkout / name).symlink_to(REPO / name)
    bin_dir = Path(sys.executable).parent
    for name in ("python", "snakemake"):
        (checkout / ".venv" / "bin" / name).symlink_to(bin_dir / name)
    (checkout / ".venv" / ".installed").touch()
    command = [
        str(checkout / "run.sh"),
        "-n",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(run),
        "--configfile",
        str(run / "config.yaml"),
        "--config",
        "sae.lambda_align=2.0",
        "seed=0",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "BIOSAE_CORES": "1"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert set(job_stats(result.stdout + result.stderr)) == SAE_AND_EVALUATION
