"""What every benchmark shares: the sizes, the config it measures, timing and process helpers."""

from __future__ import annotations

import copy
import os
import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from biosae.config import validate_config
from biosae.devices import pick_device
from biosae.io import read_yaml

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Sizes:
    """Every size the benchmark uses; TINY shrinks them all for the smoke test."""

    matmul_size: int = 1024
    matmul_seconds: float = 3.0
    train_steps: int = 200  # of the default model on the default corpus, ours and Trainer's
    skip_steps: int = 10  # first steps (kernel set-up) left out of steady-state tokens/s
    training_rounds: int = 3  # rounds of the three training loops back to back; the median is shown
    activation_repeats: int = 2  # best of, alternating collection and plain forward
    generation_persons: int = 100_000
    config_overrides: dict = field(default_factory=dict)  # applied to config.yaml, here and in the pipeline


TINY = Sizes(
    matmul_size=256,
    matmul_seconds=0.2,
    train_steps=8,
    skip_steps=2,
    training_rounds=2,
    activation_repeats=1,
    generation_persons=2_000,
    config_overrides={
        "dataset": {"num_persons": 24, "biographies_per_person": 3},
        "model": {"n_layer": 2, "n_embd": 32, "n_head": 2, "block_size": 64},
        "training": {"epochs": 2, "batch_size": 4},
        "activations": {"batch_size": 64},
        "sae": {"epochs": 3, "batch_size": 16},
        "evaluate": {"max_prompts_per_cell": 24},
    },
)


@dataclass
class BenchRun:
    """How the page's figures were taken: the command, when, on what, at which sizes."""

    command: str
    started: object  # datetime.datetime
    tiny: bool
    minutes: float
    threads: int
    environment: str
    sizes: dict
    slurm_probe_seconds: float | None = None  # see slurm_probe_seconds()


def experiment_config(overrides: dict) -> dict:
    """config.yaml with ``overrides`` applied, data directories relative as in the repository."""
    config = read_yaml(REPO / "config.yaml")
    for section, values in overrides.items():
        config[section].update(values)
    return config


def validated(config: dict) -> dict:
    """The config validated and filled, its data directories made absolute for in-process use."""
    config = copy.deepcopy(config)
    for key in ("entities_dir", "templates_dir", "qa_templates_dir"):
        config["dataset"][key] = str(REPO / config["dataset"][key])
    return validate_config(config)


def run_config(run_dir: Path) -> dict:
    """A finished run's config, validated and filled."""
    return validated(read_yaml(run_dir / "config.yaml"))


def seconds_of(function, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def say(text: str) -> None:
    print(text, flush=True)


def environment() -> str:
    """The machine and software the figures hold for."""
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return (
        f"{os.cpu_count()} CPUs ({cpu}), torch threads {torch.get_num_threads()}, device {pick_device().type}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}"
    )


SLOW_SLURM_PROBE_SECONDS = 1.0  # a probe above this is flagged on the page


def slurm_probe_seconds() -> float | None:
    """Seconds that `scontrol show config` takes here, or None where SLURM's client is absent.

    Snakemake's SLURM executor plugin (a dependency) runs it whenever Snakemake starts, wherever
    `sinfo` is on the PATH, and waits up to 10 s for an answer. Without SLURM (a laptop) it costs
    nothing and on a cluster milliseconds; on a host with the client installed and no controller
    answering, every Snakemake command here waits those seconds more."""
    import shutil
    import subprocess

    if shutil.which("sinfo") is None or shutil.which("scontrol") is None:
        return None
    start = time.perf_counter()
    try:
        subprocess.run(["scontrol", "show", "config"], capture_output=True, timeout=15, check=False)
    except subprocess.TimeoutExpired:
        pass
    return time.perf_counter() - start


@contextmanager
def one_thread():
    """torch on one thread inside, as the rules run the SAE, method and evaluate jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def set_up_process(threads: int) -> None:
    """torch threads and quiet transformers: the benchmark's own process and each loop's."""
    torch.set_num_threads(threads)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def in_fresh_process(function, *args):
    """``function(*args)`` in a new Python process (spawned, torch threads as here), its result
    sent back. Each training loop runs in a process of its own: in one process, our loop runs
    slower after a Trainer run than first, while the Trainer's speed does not depend on its
    place, and no torch setting the Trainer changes explains it. A fresh process gives every loop
    the same start."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=set_up_process,
        initargs=(torch.get_num_threads(),),
    ) as pool:
        return pool.submit(function, *args).result()


def run_evaluation_inputs(run_dir: Path, layer: int, methods):
    """A finished run's evaluation inputs at ``layer``, read from the files the rules write
    (biosae/layout.py): the evaluate job's inputs, without the other methods' tests."""
    from biosae import layout
    from biosae.evaluation.evaluate import load_evaluation_inputs
    from biosae.methods.causal_variants import VARIANTS

    untrained = layout.UNTRAINED_LM
    # the SAEs fine-tuned from the layer's SAE that the run trained there
    causal = {name: run_dir / layout.causal_sae_dir("", layer, name) for name in VARIANTS if name in methods}
    return load_evaluation_inputs(
        model_dir=run_dir / layout.lm_final(""),
        activations=run_dir / layout.activation_file("", layer),
        index=run_dir / layout.activation_index(""),
        sae_dir=run_dir / layout.sae_dir("", layer),
        candidates=run_dir / layout.sae_file("", layer, "value_candidates.json"),
        untrained_activations=run_dir / layout.activation_file("", layer, untrained),
        untrained_index=run_dir / layout.activation_index("", untrained),
        untrained_sae_dir=run_dir / layout.sae_dir("", layer, untrained),
        qa_accuracy=run_dir / layout.lm_qa_accuracy(""),
        layer=layer,
        methods=[name for name in methods if name not in causal or causal[name].is_dir()],
        causal_sae_dirs={name: directory for name, directory in causal.items() if directory.is_dir()},
    )
