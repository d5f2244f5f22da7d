"""Section 6, other configurations: the whole pipeline run again from a clean directory under
other config files layered on config.yaml, as a user runs it (`./run.sh --configfile FILE ...`),
and its wall time set beside the default run's in this same bench run.

A configuration is one file or several joined by commas, layered in that order
(``config/quick.yaml,bench/configs/fp32.yaml``: the first look computed in fp32)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from biosae import layout
from biosae.config import layered
from biosae.io import read_json, read_yaml

from .common import REPO, experiment_config, say
from .pipeline import snakemake, stage_benchmarks

# The default bench run's configurations: the first look (its target: three minutes), the same in
# fp32 (as a CPU without native bf16 computes it), the recommended setting for questions in new
# words (its cost against the default's), and the default without the supervised SAE's causal
# variants (what sae_slot_causal and its two controls cost).
DEFAULT_CONFIG_RUNS = (
    "config/quick.yaml",
    "config/quick.yaml,bench/configs/fp32.yaml",
    "config/questions_phrases.yaml",
    "bench/configs/without_causal_sae.yaml",
)


@dataclass
class ConfigRun:
    """One whole pipeline under ``config_file`` (relative to the repository; several joined by
    commas) layered on config.yaml."""

    config_file: str
    seconds: float
    lm_seconds: float | None
    lm_steps: int | None
    jobs: int
    ratio: float | None = None  # to the default run's wall time in the same bench run

    @property
    def name(self) -> str:
        return config_run_name(self.config_file)


def config_run_name(config_file: str) -> str:
    """A configuration's name: its files' stems joined by "+" (config/quick.yaml → quick)."""
    return "+".join(Path(path).stem for path in config_file.split(","))


def measure_config_run(
    config_file: str, overrides: dict, threads: int, workdir: Path, keep_in: Path | None = None
) -> ConfigRun:
    """Run the whole pipeline under ``config_file`` (one path, or several joined by commas) in a
    fresh directory; the bench's own size overrides (--tiny) apply last. The directory is removed
    afterwards, or moved into ``keep_in`` (its results to read: a configuration's run is a run)."""
    import yaml

    run_dir = workdir / config_run_name(config_file)
    run_dir.mkdir(parents=True)
    config = experiment_config({})
    for path in config_file.split(","):
        config = layered(config, read_yaml(REPO / path) or {})
    config = layered(config, overrides)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copytree(REPO / "data", run_dir / "data")
    say(f"[configs] running the pipeline under {config_file} in {run_dir} (--cores {threads}) ...")
    seconds, _ = snakemake(run_dir, threads)
    stages = stage_benchmarks(run_dir)
    lm = next((stage for stage in stages if stage.stage == "train_lm"), None)
    summary_path = run_dir / layout.lm_train_summary("")
    steps = read_json(summary_path).get("steps") if summary_path.is_file() else None
    if keep_in is None:
        shutil.rmtree(run_dir)
    else:
        keep_in.mkdir(parents=True, exist_ok=True)
        shutil.move(run_dir, keep_in / run_dir.name)
    say(f"[configs] {config_file}: {seconds:.1f} s ({len(stages)} jobs; the LM {lm.seconds if lm else 0:.1f} s)")
    return ConfigRun(
        config_file=config_file,
        seconds=seconds,
        lm_seconds=lm.seconds if lm else None,
        lm_steps=steps,
        jobs=len(stages),
    )


def measure_config_runs(
    config_files: list[str],
    overrides: dict,
    threads: int,
    workdir: Path,
    default_seconds: float | None,
    keep_in: Path | None = None,
) -> list[ConfigRun]:
    """Every configuration in turn, each set against the default run's wall time."""
    runs = []
    for config_file in config_files:
        run = measure_config_run(config_file, overrides, threads, workdir, keep_in)
        run.ratio = run.seconds / default_seconds if default_seconds else None
        runs.append(run)
    return runs
