"""Section 5, dataset generation: write_dataset at 100,000 persons."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from biosae.dataset.build import DatasetConfig, write_dataset

from .common import Sizes, say, seconds_of


@dataclass
class DatasetGeneration:
    persons: int
    seconds: float
    persons_per_s: float
    megabytes: float  # of the files written
    qa_rows: int


def measure_dataset_generation(config: dict, sizes: Sizes, workdir: Path) -> DatasetGeneration:
    section = {**config["dataset"], "num_persons": sizes.generation_persons}
    outputs = {
        key: workdir / f"{key}.{'json' if key.endswith('kg') else 'jsonl'}"
        for key in ("train_kg", "test_kg", "qa_train", "qa_test", "qa_hard", "corpus")
    }
    seconds, summary = seconds_of(write_dataset, DatasetConfig.from_config(section), outputs)
    megabytes = sum(path.stat().st_size for path in outputs.values()) / 1e6
    result = DatasetGeneration(
        persons=sizes.generation_persons,
        seconds=seconds,
        persons_per_s=sizes.generation_persons / seconds,
        megabytes=megabytes,
        qa_rows=sum(v for k, v in summary.items() if k.startswith("qa_")),
    )
    say(
        f"[dataset] {result.persons:,} persons in {seconds:.1f} s ({result.persons_per_s:,.0f} persons/s, "
        f"{megabytes:,.0f} MB written)"
    )
    return result
