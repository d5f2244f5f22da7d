"""Config ``training.device`` (biosae.devices): auto picks CUDA, then MPS, then the CPU; a device
that is not there stops with one line; switching it on a finished run reruns nothing.

No GPU is on the machines that run this suite, so the selection is tested by faking what torch
reports as available: the one thing here that cannot run for real."""

from __future__ import annotations

import pytest
import torch
import yaml

import biosae.devices as devices
from biosae import layout
from biosae.devices import pick_device
from biosae.errors import BiosaeError
from tests.conftest import copy_run, planned_jobs, run_snakemake, tiny_config, write_config


def fake_availability(monkeypatch, cuda: bool, mps: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_picks_cuda_then_mps_then_the_cpu(monkeypatch, cuda, mps, expected):
    fake_availability(monkeypatch, cuda, mps)
    assert pick_device("auto") == torch.device(expected)
    assert pick_device(None) == torch.device(expected)  # the API's and the library's default


@pytest.mark.parametrize("requested", ["cpu", "cuda", "mps", "cuda:1"])
def test_a_named_device_is_taken_when_available(monkeypatch, requested):
    fake_availability(monkeypatch, cuda=True, mps=True)
    assert pick_device(requested) == torch.device(requested)
    assert pick_device(torch.device(requested)) == torch.device(requested)


@pytest.mark.parametrize("requested", ["cuda", "mps"])
def test_a_device_that_is_not_available_is_one_line(monkeypatch, requested):
    fake_availability(monkeypatch, cuda=False, mps=False)
    with pytest.raises(BiosaeError) as error:
        pick_device(requested)
    assert str(error.value) == (
        f"config key training.device: {requested!r} is not available on this machine (try auto or cpu)"
    )


@pytest.mark.parametrize("requested", ["tpu", "gpu", ""])
def test_an_unknown_device_is_one_line(requested):
    with pytest.raises(BiosaeError, match=r"^config key training\.device: .* is not one of auto, cpu, cuda, mps$"):
        pick_device(requested)


def test_this_machine_runs_on_what_torch_reports():
    """Unfaked: auto is the first of CUDA, MPS and the CPU that this machine's torch can use."""
    expected = next(kind for kind in ("cuda", "mps", "cpu") if devices.available(kind))
    assert pick_device().type == expected
    assert pick_device("cpu") == torch.device("cpu")


def unavailable_device() -> str:
    for kind in ("cuda", "mps"):
        if not devices.available(kind):
            return kind
    pytest.skip("both CUDA and MPS are available here: no device to ask for that is missing")


@pytest.mark.slow
def test_a_job_asked_for_a_missing_device_stops_with_one_line_naming_the_key(tmp_path):
    """The real pipeline, up to the LM: train_lm stops before training, its log says why."""
    requested = unavailable_device()
    config = tiny_config()
    config["training"]["device"] = requested
    write_config(tmp_path, config)
    result = run_snakemake(tmp_path, "--cores", "1", layout.lm_final(""), check=False)
    assert result.returncode != 0
    log = (tmp_path / layout.log("", "train_lm")).read_text()
    errors = [line for line in log.splitlines() if "biosae error" in line]
    assert len(errors) == 1
    assert errors[0].endswith(
        f"biosae error: config key training.device: {requested!r} is not available on this machine (try auto or cpu)"
    )
    assert "Traceback" not in log
    assert not (tmp_path / layout.lm_final("")).exists()


@pytest.mark.slow
def test_switching_the_device_on_a_finished_run_reruns_nothing(tiny_pipeline, tmp_path):
    """The device says where jobs run, like their threads: no job's params hold it."""
    run = copy_run(tiny_pipeline, tmp_path / "run")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["training"]["device"] = "cpu"
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert planned_jobs(run) == {}
