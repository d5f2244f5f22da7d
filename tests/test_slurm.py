"""End to end through a real SLURM cluster: the tiny pipeline, run with profiles/slurm-ci,
sends every job through sbatch and leaves the same outputs as a local `--cores 2` run.

The cluster is the single-node one of .ci/slurm/ (start.sh, as root, before pytest). Without
`sbatch` or a cluster that answers, the test skips and says why; with CI=true it fails instead,
after trying to start the cluster itself (root only) and stopping what it started, by PID.
"""

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from biosae.job_stats import job_stats
from tests.conftest import tiny_config, write_config

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SLURM_CI_PROFILE = REPO / "profiles" / "slurm-ci"
CI_SLURM_SCRIPTS = REPO / ".ci" / "slurm"

# What both runs build. [] = the Snakefile's default target (rule all): the whole pipeline.
SLURM_TARGETS: list[str] = []

# Wall-clock limits of each Snakemake run (the SLURM one also waits for queue polling).
SLURM_RUN_TIMEOUT_S = 40 * 60

# Files compared byte for byte (deterministic for a config and seed) ...
BYTE_EQUAL_UNDER = ("results/dataset/",)
# ... and files whose numbers must agree (the same training on the same CPU).
METRIC_FILES = ("metrics.json", "qa_accuracy.json")
# Nearly every number must be equal (to float rounding) ...
METRIC_REL_TOL = 1e-4
METRIC_ABS_TOL = 1e-6
MIN_EQUAL_FRACTION = 0.95
# ... and every number close. Two CPU processes can round the last bits of a float differently
# (MKL and oneDNN pick kernels per process); a probe or SAE then moves a prompt that sits on a
# decision boundary to the other side. CI saw it once: the linear probe's ood_template accuracy
# was 0.9167 under SLURM and 0.9213 locally, one of 216 prompts. A wrong seed, config or input
# changes most numbers, by more than this.
METRIC_CLOSE_ABS_TOL = 0.02
# Counts (confusion matrices, rows per rule) may differ by the prompts that moved.
METRIC_CLOSE_COUNT_TOL = 2
# Tensor files whose largest difference the failure message reports, to say where runs diverged.
TENSOR_FILES = (
    "results/lm/final/model.safetensors",
    "results/activations/layer_-1.safetensors",
    "results/sae/layer_-1/sae.safetensors",
)
# Keys of wall-clock measurements, which differ between any two runs.
TIMING_KEY = re.compile(r"(time|seconds|duration|elapsed|mfu|flops|per_s$|per_second)", re.IGNORECASE)


# Rules that run nothing (input-only targets): Snakemake finishes them itself, without sbatch.
RUN_NOTHING_RULES = {"all"}

SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\S+) \(log: (.+?)\)\.?$", re.MULTILINE)


def in_ci():
    return os.environ.get("CI") == "true"


def unavailable(reason):
    """Skip on a developer machine, fail in CI: there the SLURM test must run."""
    if in_ci():
        pytest.fail(f"CI=true but {reason}")
    print(f"test_slurm skipped: {reason}", file=sys.stderr)
    pytest.skip(reason)


def cluster_state():
    """(True, node states) if slurmctld answers and a node is up, else (False, why)."""
    try:
        answer = subprocess.run(
            ["sinfo", "--noheader", "--responding", "--format=%T"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return False, "sinfo did not answer within 30 s"
    states = answer.stdout.split()
    if answer.returncode != 0:
        return False, f"sinfo failed: {answer.stderr.strip()}"
    usable = [s for s in states if s.rstrip("*~#!%$@^-") in {"idle", "mixed", "allocated", "completing"}]
    return (True, states) if usable else (False, f"no responding node is up (states: {states or 'none'})")


def min_job_age_seconds():
    shown = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"^MinJobAge\s*=\s*(\d+)", shown, re.MULTILINE)
    return int(match.group(1)) if match else None


def start_cluster(state_dir):
    return subprocess.run(
        [str(CI_SLURM_SCRIPTS / "start.sh")],
        env={**os.environ, "BIOSAE_SLURM_DIR": str(state_dir)},
        capture_output=True,
        text=True,
        timeout=180,
    )


def stop_cluster(state_dir):
    subprocess.run(
        [str(CI_SLURM_SCRIPTS / "stop.sh")],
        env={**os.environ, "BIOSAE_SLURM_DIR": str(state_dir)},
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A SLURM cluster that answers; started here (and stopped after) only in CI, as root."""
    if shutil.which("sbatch") is None:
        unavailable("sbatch is not on PATH (install the cluster with .ci/slurm/install.sh)")
    up, why = cluster_state()
    started_in = None
    if not up and in_ci() and os.geteuid() == 0:
        started_in = tmp_path_factory.mktemp("slurm-cluster")
        started = start_cluster(started_in)
        if started.returncode != 0:
            stop_cluster(started_in)
            pytest.fail(f".ci/slurm/start.sh failed:\n{started.stdout}\n{started.stderr}")
        up, why = cluster_state()
    try:
        if not up:
            unavailable(f"no SLURM cluster is up ({why}); start one with .ci/slurm/start.sh")
        profile = yaml.safe_load((SLURM_CI_PROFILE / "config.yaml").read_text())
        threshold = 3 * profile["slurm-init-seconds-before-status-checks"]
        min_job_age = min_job_age_seconds()
        if min_job_age is None or min_job_age < threshold:
            # The plugin would fall back to sacct, which hangs without slurmdbd.
            unavailable(f"MinJobAge={min_job_age} < {threshold} s, too short for squeue status checks")
        yield
    finally:
        if started_in is not None:
            stop_cluster(started_in)


def write_tiny_config(workdir):
    """The tiny experiment of tests/conftest.py (the same config as the local `tiny_pipeline` run)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return write_config(workdir, tiny_config())


def slurm_command() -> list[str]:
    """Snakemake on the repository's Snakefile, in the working directory, through the SLURM profile."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        *SLURM_TARGETS,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--configfile",
        "config.yaml",
        "--profile",
        str(SLURM_CI_PROFILE),
    ]


def start_slurm_run(workdir: Path) -> None:
    """The tiny pipeline through sbatch, in the background in ``workdir``: its output goes to
    snakemake.out, its exit status (once it ends) to snakemake.rc, its process group to
    snakemake.pid (a session of its own, which stop_slurm_run signals)."""
    write_tiny_config(workdir)
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    env.pop("SNAKEMAKE_PROFILE", None)
    env.update(PYTHONUNBUFFERED="1", TQDM_DISABLE="1")
    # bash writes the status when Snakemake ends: the test that waits may be in another process.
    status = '"$@" > snakemake.out 2>&1; echo $? > snakemake.rc.part && mv snakemake.rc.part snakemake.rc'
    process = subprocess.Popen(
        ["bash", "-c", status, "bash", *slurm_command()],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    (workdir / "snakemake.pid").write_text(str(process.pid))


def stop_slurm_run(workdir: Path) -> None:
    """Stops a run of start_slurm_run that has not ended: on SIGTERM Snakemake submits no further
    job and exits once its running ones end. (Not SIGINT, which cancels them at once: a process
    started in the background by a shell that has no job control inherits SIGINT ignored.)"""
    if (workdir / "snakemake.rc").is_file() or not (workdir / "snakemake.pid").is_file():
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(int((workdir / "snakemake.pid").read_text()), signal.SIGTERM)


def finish_slurm_run(workdir: Path, timeout: float) -> str:
    """Waits for the run of start_slurm_run in ``workdir`` and returns its output; past
    ``timeout`` seconds, interrupts it and fails the test."""
    deadline = time.monotonic() + timeout
    while not (workdir / "snakemake.rc").is_file():
        if time.monotonic() > deadline:
            stop_slurm_run(workdir)
            pytest.fail(
                f"snakemake ran over {timeout} s in {workdir}:\n{(workdir / 'snakemake.out').read_text()[-6000:]}"
            )
        time.sleep(1)
    output = (workdir / "snakemake.out").read_text()
    code = int((workdir / "snakemake.rc").read_text())
    assert code == 0, f"snakemake failed ({code}): {' '.join(slurm_command())}\n{output[-6000:]}"
    return output


def slurm_answers() -> bool:
    """Whether sbatch is installed and a cluster answers now (slurm_cluster says why not)."""
    return shutil.which("sbatch") is not None and cluster_state()[0]


def assert_every_job_went_through_sbatch(output):
    planned = job_stats(output)
    assert planned, "no 'Job stats' table in Snakemake's output"
    ran_locally = Counter(re.findall(r"^local(?:rule|checkpoint) (\S+):$", output, re.MULTILINE))
    assert set(ran_locally) <= RUN_NOTHING_RULES, f"jobs ran on the submit host, not via sbatch: {ran_locally}"
    expected = {rule: count for rule, count in planned.items() if rule not in RUN_NOTHING_RULES}
    submissions = SUBMITTED.findall(output)
    assert len(submissions) == sum(expected.values()), (
        f"{len(submissions)} sbatch submissions for {sum(expected.values())} jobs {expected}"
    )
    assert len({job_id for job_id, _ in submissions}) == len(submissions), "a SLURM job id was reported twice"
    submitted_rules = Counter()
    for job_id, log in submissions:
        log = Path(log)
        rule = next(part.removeprefix("rule_") for part in log.parts if part.startswith("rule_"))
        submitted_rules[rule] += 1
        assert log.name == f"{job_id}.log" and log.is_file(), f"no SLURM log {log} for job {job_id}"
        text = log.read_text()
        # Written by the job step that slurmd started: Snakemake ran inside the SLURM job.
        assert "--executor slurm-jobstep" in text, f"{log} is not a SLURM job step's log"
        finished = re.search(rf"Finished jobid: \d+ \(Rule: {re.escape(rule)}\)", text)
        assert finished, f"{log}: rule {rule} did not finish inside the SLURM job"
    assert dict(submitted_rules) == expected


def result_files(workdir):
    root = workdir / "results"
    return sorted(str(path.relative_to(workdir)) for path in root.rglob("*") if path.is_file())


def compare_numbers(slurm, local, where, tally):
    """Walks two JSON documents (timings skipped); counts equal numbers in ``tally`` and returns
    a readable line for every place where they disagree beyond METRIC_CLOSE_ABS_TOL."""
    if isinstance(slurm, dict) and isinstance(local, dict):
        if slurm.keys() != local.keys():
            return [f"{where}: keys differ ({sorted(set(slurm) ^ set(local))})"]
        return [
            line
            for key in slurm
            if not TIMING_KEY.search(str(key))
            for line in compare_numbers(slurm[key], local[key], f"{where}.{key}", tally)
        ]
    if isinstance(slurm, list) and isinstance(local, list):
        if len(slurm) != len(local):
            return [f"{where}: lengths differ ({len(slurm)} vs {len(local)})"]
        return [
            line
            for index, (a, b) in enumerate(zip(slurm, local))
            for line in compare_numbers(a, b, f"{where}[{index}]", tally)
        ]
    if isinstance(slurm, (int, float)) and not isinstance(slurm, bool) and isinstance(local, (int, float)):
        tally["numbers"] += 1
        if (math.isnan(slurm) and math.isnan(local)) or math.isclose(
            slurm, local, rel_tol=METRIC_REL_TOL, abs_tol=METRIC_ABS_TOL
        ):
            tally["equal"] += 1
            return []
        tally["unequal"].append(f"{where}: {slurm} (SLURM) vs {local} (local)")
        gap = abs(slurm - local)
        counts = isinstance(slurm, int) and isinstance(local, int)
        close = gap <= (METRIC_CLOSE_COUNT_TOL if counts else METRIC_CLOSE_ABS_TOL)  # False for NaN
        return [] if close else [f"{where}: {slurm} (SLURM) != {local} (local)"]
    return [] if slurm == local else [f"{where}: {slurm!r} (SLURM) != {local!r} (local)"]


def tensor_differences(slurm_dir, local_dir):
    """'file: largest |difference|' of the weights and activations both runs wrote."""
    from safetensors.torch import load_file

    lines = []
    for name in TENSOR_FILES:
        slurm, local = load_file(slurm_dir / name), load_file(local_dir / name)
        largest = (
            max(
                ((slurm[key].double() - local[key].double()).abs().max().item() if slurm[key].numel() else 0.0)
                for key in local
            )
            if slurm.keys() == local.keys()
            else float("nan")
        )
        lines.append(f"{name}: largest |difference| {largest:.3g}")
    return lines


def assert_same_outputs(slurm_dir, local_dir):
    files = result_files(slurm_dir)
    assert files, "the SLURM run wrote nothing under results/"
    assert files == result_files(local_dir)
    compared, differences = 0, []
    tally = {"numbers": 0, "equal": 0, "unequal": []}
    for name in files:
        slurm_file, local_file = slurm_dir / name, local_dir / name
        if name.startswith(BYTE_EQUAL_UNDER):
            if slurm_file.read_bytes() != local_file.read_bytes():
                differences.append(f"{name}: bytes differ")
            compared += 1
        elif Path(name).name in METRIC_FILES:
            differences += compare_numbers(
                json.loads(slurm_file.read_text()), json.loads(local_file.read_text()), name, tally
            )
            compared += 1
    assert compared and tally["numbers"], f"no output compared among {files}"
    equal_fraction = tally["equal"] / tally["numbers"]
    if equal_fraction < MIN_EQUAL_FRACTION:
        differences.append(
            f"only {tally['equal']} of {tally['numbers']} numbers are equal ({equal_fraction:.3f} < {MIN_EQUAL_FRACTION})"
        )
    # All of it at once, with the tensors' differences: that says which stage diverged.
    assert not differences, "\n".join(
        [
            f"{len(differences)} differences:",
            *differences[:40],
            "numbers not equal:",
            *tally["unequal"][:40],
            *tensor_differences(slurm_dir, local_dir),
        ]
    )
    if tally["unequal"]:
        print(f"{len(tally['unequal'])} of {tally['numbers']} numbers within {METRIC_CLOSE_ABS_TOL} but not equal:")
        print("\n".join(tally["unequal"][:40] + tensor_differences(slurm_dir, local_dir)))


def test_pipeline_on_slurm_matches_local_run(slurm_cluster, tiny_pipeline, slurm_run_started_early, tmp_path):
    """The whole tiny pipeline through sbatch equals the local `--cores 2` run of the same config
    (the session's `tiny_pipeline`, shared with the other end-to-end tests)."""
    slurm_dir = slurm_run_started_early
    if slurm_dir is None:  # no cluster answered when the session began: slurm_cluster started one
        slurm_dir = tmp_path / "slurm"
        start_slurm_run(slurm_dir)
    slurm_output = finish_slurm_run(slurm_dir, SLURM_RUN_TIMEOUT_S)
    assert_every_job_went_through_sbatch(slurm_output)
    assert_same_outputs(slurm_dir, tiny_pipeline)
