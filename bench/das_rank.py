"""Choose DAS's default rank by measurement, on held-in data only.

For each rank, trains DAS exactly as the ``train_das`` rule does (train-cell pairs, the scored
bases excluded) and reports its IIA on the validation pairs: train-cell rows of persons held out
from DAS's training, never an evaluation cell. Needs a finished default run (its LM and
activations). Writes a markdown table.

    python bench/das_rank.py --run-dir . --ranks 1 5 8 16 --layers -1 1 --out bench/das_rank.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from biosae import layout
from biosae.config import load_config
from biosae.devices import pick_device
from biosae.evaluation.method_tests import causal_sample
from biosae.io import write_text
from biosae.lm.activations import load_activation_table
from biosae.lm.model import load_model_dir
from biosae.methods.das import DASConfig, train_das


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("."))
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 5, 8, 16])
    parser.add_argument("--layers", type=int, nargs="+", help="hook layers (default: the config's activations.layer)")
    parser.add_argument("--out", type=Path, default=Path("bench/das_rank.md"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = load_config(args.run_dir / "config.yaml")
    run_dir = args.run_dir
    model, tokenizer = load_model_dir(run_dir / layout.lm_final(""), pick_device())
    layers = args.layers or [config["activations"]["layer"]]
    rows = []
    for layer in layers:
        activations, index = load_activation_table(
            run_dir / layout.activation_file("", layer), run_dir / layout.activation_index("")
        )
        scored = causal_sample(index, "train", config["evaluate"]["max_prompts_per_cell"], config["seed"])
        for rank in args.ranks:
            settings = {**config["methods"]["das"], "rank": rank}
            cfg = DASConfig(d_model=activations.shape[1], layer=layer, seed=config["seed"], **settings)
            start = time.perf_counter()
            _, history, training, validation = train_das(model, tokenizer, index, activations, cfg, scored)
            seconds = time.perf_counter() - start
            last = history[-1]
            rows.append(
                f"| {layer} | {rank} | {last['train_iia']:.3f} | {last['validation_iia']:.3f} | "
                f"{last['loss']:.3f} | {int(training.scored.sum())} / {int(validation.scored.sum())} | "
                f"{seconds:.0f} s |"
            )
            print(rows[-1], flush=True)
    lines = [
        "# DAS rank, measured on held-in data",
        "",
        f"Run: `{args.run_dir.resolve()}` (seed {config['seed']}; the seed's hook is layer "
        f"{config['activations']['layer']}); "
        f"other DAS settings: `{ {k: v for k, v in config['methods']['das'].items() if k != 'rank'} }`. "
        "Train IIA: the last epoch's pairs; validation IIA: train-cell persons held out from DAS's training "
        "(no evaluation cell is used). Command: `python bench/das_rank.py "
        + " ".join(["--run-dir", str(args.run_dir), "--ranks", *map(str, args.ranks), "--layers", *map(str, layers)])
        + "`.",
        "",
        "| layer | rank | train IIA | validation IIA | loss | pairs (train / validation) | time |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    write_text(args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
