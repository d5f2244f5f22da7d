"""Shared fixtures: the repository paths and a tiny, fast experiment config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

import pytest
import yaml

from biosae.job_stats import job_stats

# As the Snakefile sets them for every job, before torch loads MKL: the tests compare what they
# compute in-process with what the jobs wrote.
os.environ.setdefault("MKL_DYNAMIC", "FALSE")
os.environ.setdefault("OMP_DYNAMIC", "FALSE")
# Two pytest-xdist workers each start Snakemake jobs on the same cores: an OpenMP thread that spins
# while it waits for work takes a core from the other worker's job. Passive threads sleep instead;
# the numbers are the same, only the waiting changes.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"


def tiny_config(**overrides) -> dict:
    """config.yaml shrunk to seconds: 24 persons, a 2-layer 64-wide model that learns enough to
    answer ~40% of its training questions (so the causal tests have answers to break)."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["dataset"].update(
        num_persons=24,
        biographies_per_person=3,
        entities_dir=str(DATA / "entities"),
        templates_dir=str(DATA / "templates"),
        qa_templates_dir=str(DATA / "qa_templates"),
    )
    config["model"].update(n_layer=2, n_embd=64, n_head=2, block_size=128)
    config["training"].update(epochs=40, batch_size=2, lr=3e-3, precision="fp32")
    config["activations"].update(batch_size=64)
    config["sae"].update(epochs=30, batch_size=16)
    config["evaluate"].update(max_prompts_per_cell=24)
    config["methods"]["sae_unsupervised"].update(n_latents=128, epochs=50)
    for section, values in overrides.items():
        if isinstance(values, dict):
            config[section].update(values)
        else:
            config[section] = values
    return config


def write_config(directory: Path, config: dict) -> Path:
    path = Path(directory) / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake_command(workdir: Path, *args) -> list[str]:
    """The real Snakemake engine on the repository's Snakefile, in ``workdir`` with its config.yaml."""
    workdir = Path(workdir)
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        *args,
    ]


def snakemake_env() -> dict[str, str]:
    """The test environment, with unbuffered job logs and no progress bars."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}


def run_snakemake(workdir: Path, *args, check=True, timeout=900) -> subprocess.CompletedProcess:
    """Snakemake run to its end (snakemake_command); fails the test with its output unless ``check`` is off."""
    result = subprocess.run(
        snakemake_command(workdir, *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=snakemake_env(),
        cwd=workdir,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def planned_jobs(workdir: Path, *args) -> dict[str, int]:
    """Rule -> job count of a dry run (``snakemake -n``), parsed from its job table."""
    result = run_snakemake(workdir, "-n", *args)
    return job_stats(result.stdout + result.stderr)


def copy_run(source: Path, target: Path, **sweep) -> Path:
    """A copy of a finished run, its config's sweep section updated with ``sweep`` (copy2 keeps
    mtimes and the .snakemake metadata, so only what the new config adds looks stale)."""
    shutil.copytree(source, target, symlinks=True)
    if sweep:
        config = yaml.safe_load((target / "config.yaml").read_text())
        config["sweep"].update(sweep)
        (target / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return target


class _Interrupted(Exception):
    pass


def interrupted_after(steps: int, train):
    """Run ``train()``, a call of biosae.lm.model.train_language_model, as a job killed after
    ``steps`` optimizer steps: the next step raises before it starts. Returns
    ``{"interrupted_at_step": steps}``, or what ``train()`` returns if it finishes first."""
    import biosae.lm.model as lm_model

    learning_rate = lm_model.learning_rate

    def killed_at(step, *args, **kwargs):
        if step >= steps:
            raise _Interrupted(step)
        return learning_rate(step, *args, **kwargs)

    with mock.patch.object(lm_model, "learning_rate", killed_at):
        try:
            return train()
        except _Interrupted as stop:
            return {"interrupted_at_step": stop.args[0]}


@pytest.fixture
def workdir(tmp_path) -> Path:
    return tmp_path


def pytest_configure(config):
    """Under pytest-xdist (test.sh runs one worker per core), each worker's in-process torch gets
    its share of the cores, so that two workers don't run four torch threads on two cores. The
    Snakemake jobs that tests start take the threads of their rule, as in a real run.

    The session's owner starts an empty list of background runs: one left by an earlier process
    of the same pid (killed before its session finished) names runs that are not this session's."""
    if not hasattr(config, "workerinput"):
        background_runs_file(os.getpid()).unlink(missing_ok=True)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def start_snakemake(workdir: Path, *args, output: Path | None = None) -> subprocess.Popen:
    """Snakemake in the background, in its own session; its output piped, or written to ``output``."""
    stdout = open(output, "w") if output else subprocess.PIPE  # noqa: SIM115 - closed below, the child keeps its copy
    process = subprocess.Popen(
        snakemake_command(workdir, *args),
        cwd=workdir,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=snakemake_env(),
    )
    if output:
        stdout.close()
    return process


def session_owner_pid() -> int:
    """The pytest process that outlives every test of the session: pytest-xdist's controller (each
    worker's parent), or this process when one process runs every test."""
    return os.getppid() if "PYTEST_XDIST_WORKER" in os.environ else os.getpid()


def background_runs_file(owner_pid: int) -> Path:
    """Where the directories of the session's background runs are listed, for the owner to stop."""
    return Path(tempfile.gettempdir()) / f"biosae-tests-{owner_pid}-background-runs"


@pytest.fixture(scope="session", autouse=True)
def slurm_run_started_early(request, tmp_path_factory) -> Path | None:
    """The SLURM test's pipeline, started in the background when the session's first test is set
    up, if the SLURM test is among those selected and a cluster answers (tests/test_slurm.py);
    its directory, or None."""
    if not any(item.path.name == "test_slurm.py" for item in request.session.items):
        return None
    from tests.test_slurm import slurm_answers, start_slurm_run

    if not slurm_answers():  # the test starts the run itself, once slurm_cluster has a cluster up
        return None
    # Its jobs mostly wait on the queue, so it goes on beside the other tests rather than after
    # them; shared_run starts it once (start_slurm_run returns at once, the run goes on).
    directory = shared_run(tmp_path_factory, "slurm_run", start_slurm_run)
    with background_runs_file(session_owner_pid()).open("a") as runs:
        runs.write(f"{directory}\n")
    return directory


def pytest_sessionfinish(session):
    """The session's owner stops the background runs that no test waited for (a run that ended
    is left as it is)."""
    if hasattr(session.config, "workerinput"):  # a pytest-xdist worker: the controller stops them
        return
    runs = background_runs_file(os.getpid())
    if runs.is_file():
        from tests.test_slurm import stop_slurm_run

        for directory in set(runs.read_text().split()):
            stop_slurm_run(Path(directory))
        runs.unlink()


def shared_run(tmp_path_factory, name: str, make) -> Path:
    """A directory that ``make(directory)`` fills once per test session and that several test
    files read.

    Under pytest-xdist every worker is a session of its own: the first worker that needs the run
    makes it, under a file lock in the directory that all workers' temporary directories share,
    and the others wait for it and read it (pytest-xdist's documented recipe)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:  # one process runs every test
        directory = tmp_path_factory.mktemp(name)
        make(directory)
        return directory
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent
    directory = shared / name
    finished, failed = shared / f"{name}.finished", shared / f"{name}.failed"
    with FileLock(shared / f"{name}.lock"):
        # A run that failed in one worker fails the others at once, rather than being made again.
        if failed.is_file():
            pytest.fail(f"the shared run {name} failed in another worker:\n{failed.read_text()}")
        if not finished.is_file():
            directory.mkdir()
            try:
                make(directory)
            except BaseException as error:
                failed.write_text(str(error)[-8000:])
                raise
            finished.touch()
    return directory


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Path:
    """One tiny default pipeline run, shared by the end-to-end tests that only read its outputs."""
    return shared_run(tmp_path_factory, "tiny_pipeline", _make_tiny_pipeline)


def _make_tiny_pipeline(directory: Path) -> None:
    write_config(directory, tiny_config())
    run_snakemake(directory, "--cores", "2", timeout=1800)  # every layer of the profile: 3 runs


def twin_config() -> dict:
    """The tiny config made cheaper still, for runs that check equality and wiring rather than
    learning: the seed's hook only (every layer's jobs are the same code at another layer), and
    two training wordings per rule, a noun and a biography-verb frame (the question study's
    settings train several)."""
    return tiny_config(
        dataset={"train_templates": [0, 8]},
        training={"epochs": 2, "batch_size": 8},
        sae={"epochs": 3},
        evaluate={"max_prompts_per_cell": 12, "swap_alphas": [1.0]},
        sweep={"layers": [-1]},
    )


@pytest.fixture(scope="session")
def twin_runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two whole pipelines of twin_config, run side by side on one core each (so that both train
    with one thread), each in its own directory: the determinism test compares them, the
    question-wording test reads the first."""
    directory = shared_run(tmp_path_factory, "twin_runs", _make_twin_runs)
    return directory / "a", directory / "b"


def _make_twin_runs(directory: Path) -> None:
    runs = [directory / "a", directory / "b"]
    processes = []
    for run in runs:
        run.mkdir()
        write_config(run, twin_config())
        processes.append(start_snakemake(run, "--cores", "1", output=run / "snakemake.out"))
    codes = [process.wait(timeout=1200) for process in processes]
    for run, code in zip(runs, codes):
        if code != 0:
            raise AssertionError(f"snakemake in {run} failed:\n{(run / 'snakemake.out').read_text()[-4000:]}")
