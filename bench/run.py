#!/usr/bin/env python
"""Speed benchmark: biosae against this machine's limits and against what users would pick instead.

Everything is measured in ONE run, so that each ratio compares two figures taken under the same
load of a noisy shared machine:

  1. machine limits       fp32 and bf16 matrix-product FLOP/s through torch (the MFU denominators)
  2. LM training          our loop: tokens/s, model FLOP/s, MFU, on the default model and corpus;
                          minutes of training to 95% exact match on unseen persons (pipeline log)
  3. Trainer baselines    the same model and schedule through transformers.Trainer: as most users
                          write it (a padded document per row), and fed our packed blocks
  4. activations          every hook point of the layer profile for every QA row, one pass, written to
                          per-layer files ÷ a plain batched forward pass
  5. dataset generation   write_dataset at 100,000 persons
  6. pipeline             the default Snakemake pipeline: wall time and peak memory per stage (its
                          benchmark: files), in total, the rerun after changing one SAE λ (and
                          what of it any rerun computes: the SAEs' training, the SAE's causal
                          tests), and everything after the LM run twice: with the layer
                          profile, then with the seed's hook alone
  7. evaluate             the seed hook's evaluation of that run, in-process: every configured
                          method against the SAE and the random control only

and writes bench/results.md atomically, with PASS/MISS per target.

    python bench/run.py                        # everything, ~50 min on 2 cores (machine alone)
    python bench/run.py --pipeline-dir .       # per-stage figures from a finished default run here (~27 min)
    python bench/run.py --tiny --out /tmp/x.md # every size shrunk: checks the script in ~a minute
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from biosae.lm.activations import encode_prompts, write_activation_files
from biosae.config import validate_config
from biosae.dataset.build import DatasetConfig, build_dataset, write_dataset
from biosae.job_stats import job_stats
from biosae.lm.layers import profile_layers
from biosae.io import read_yaml, write_text
from biosae.lm.model import (
    TrainingConfig,
    blocks_per_epoch,
    build_scratch_model,
    flops_per_token,
    measure_matmul_flops,
    pack_epoch,
    pick_device,
    tokenize_documents,
    train_language_model,
)
from biosae.lm.qa_accuracy import right_padded
from biosae.lm.tokenization import train_word_tokenizer
from results_page import page  # bench/results_page.py, beside this script

REPO = Path(__file__).resolve().parent.parent
SECTIONS = ("machine", "training", "activations", "dataset", "pipeline", "evaluate")
RUN_LABELS = {"ours": "ours", "trainer_padded": "transformers.Trainer, a padded document per row:",
              "trainer": "transformers.Trainer on our packed blocks:"}
BASELINE_METHODS = ("sae_slot", "random")  # the evaluate stage before the methods comparison
SAE_TRAINING_JOBS = {"train_sae", "untrained_sae"}  # the supervised SAE of the trained and the untrained LM
SAE_RERUN_JOBS = SAE_TRAINING_JOBS | {"evaluate", "aggregate", "all"}


@dataclass(frozen=True)
class Sizes:
    """Every size the benchmark uses; TINY shrinks them all for the smoke test."""

    matmul_size: int = 1024
    matmul_seconds: float = 3.0
    train_steps: int = 200            # of the default model on the default corpus, ours and Trainer's
    skip_steps: int = 10              # first steps (kernel set-up) left out of steady-state tokens/s
    training_rounds: int = 3          # rounds of the three training loops back to back; the median is shown
    activation_repeats: int = 2       # best of, alternating collection and plain forward
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


# ----------------------------------------------------------------------------------------------
# Small helpers


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
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{os.cpu_count()} CPUs ({cpu}), torch threads {torch.get_num_threads()}, device {pick_device().type}; "
            f"Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}")


# ----------------------------------------------------------------------------------------------
# 1. Machine limits


def measure_machine_limits(sizes: Sizes) -> dict:
    """Sustained matmul FLOP/s in fp32 and bf16, the MFU denominators (after a short warm-up)."""
    limits = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        measure_matmul_flops(dtype, sizes.matmul_size, min(0.2, sizes.matmul_seconds))
        limits[name] = measure_matmul_flops(dtype, sizes.matmul_size, sizes.matmul_seconds)
        say(f"[machine] {name} matmul {sizes.matmul_size}²: {limits[name] / 1e9:,.1f} GFLOP/s")
    return {"flops": limits, "how": f"biosae.lm.model.measure_matmul_flops(dtype, size={sizes.matmul_size}, "
                                     f"seconds={sizes.matmul_seconds})"}


# ----------------------------------------------------------------------------------------------
# 2.-3. LM training: our loop, then transformers.Trainer, same model, blocks, schedule, steps


def prepare_lm(config: dict):
    """The default corpus (in memory), its word tokenizer, QA rows and training config."""
    section = config["dataset"]
    _, _, qa, corpus = build_dataset(DatasetConfig.from_config(section))
    texts = [document["text"] for document in corpus]
    tokenizer = train_word_tokenizer(texts)
    cfg = TrainingConfig.from_sections(config["training"], config["model"], config["seed"])
    rows = qa["qa_train"] + qa["qa_test"] + qa["qa_hard"]
    return texts, tokenizer, rows, cfg


def steady_tokens_per_s(seconds_per_step: list[float], tokens_per_step: int, skip: int) -> float:
    timed = seconds_per_step[skip:]
    return len(timed) * tokens_per_step / max(sum(timed), 1e-9)


def train_ours(config, texts, tokenizer, cfg: TrainingConfig, steps: int, skip: int, workdir: Path) -> dict:
    """biosae.lm.model.train_language_model for exactly ``steps`` steps (epochs set to that fraction)."""
    import pandas as pd

    documents = tokenize_documents(tokenizer, texts)
    steps_per_epoch = math.ceil(blocks_per_epoch(documents, cfg.block_size) / cfg.batch_size)
    cfg = replace(cfg, epochs=steps / steps_per_epoch)
    model = build_scratch_model(tokenizer, config["model"], cfg.seed)
    call_seconds, summary = seconds_of(
        train_language_model, model, tokenizer, texts, cfg, workdir / "final", workdir / "checkpoint",
        workdir / "train_log.csv", log_every=skip, progress=False)
    if summary["steps"] != steps:
        raise RuntimeError(f"asked for {steps} training steps, the loop ran {summary['steps']}")
    # The log's elapsed_s is cumulative step time; steady state is from step `skip` to the end.
    log = pd.read_csv(workdir / "train_log.csv", keep_default_na=False)
    elapsed = dict(zip(log["step"], log["elapsed_s"]))
    tokens_per_step = cfg.batch_size * cfg.block_size
    steady = (steps - skip) * tokens_per_step / max(float(elapsed[steps]) - float(elapsed[skip]), 1e-9)
    return {"model": model, "steps": steps, "tokens_per_step": tokens_per_step,
            "step_seconds": summary["train_seconds"], "tokens_per_s": steady,
            "call_tokens_per_s": steps * tokens_per_step / call_seconds, "threads": torch.get_num_threads()}


def run_hf_trainer(config, tokenizer, cfg: TrainingConfig, steps: int, dataset, output_dir: Path,
                   data_collator=None) -> dict:
    """transformers.Trainer.train() for ``steps`` steps with our schedule (AdamW β₂ 0.95, warm-up +
    cosine to the same floor, clip, precision); returns each step's seconds, threads, call seconds."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class StepTimer(TrainerCallback):
        """Time from step begin to step end: forward, backward, clip, optimizer and lr step."""

        def __init__(self):
            self.seconds, self.threads, self._start = [], None, 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.threads = torch.get_num_threads()
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self._start)

    args = TrainingArguments(
        output_dir=str(output_dir), max_steps=steps, per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.lr, weight_decay=cfg.weight_decay, adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-8,
        max_grad_norm=cfg.grad_clip, warmup_steps=cfg.warmup_fraction, lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": cfg.min_lr_fraction}, bf16=cfg.precision == "bf16",
        use_cpu=pick_device().type == "cpu", eval_strategy="no", save_strategy="no", logging_strategy="no",
        report_to="none", dataloader_num_workers=0, disable_tqdm=True, seed=cfg.seed,
    )
    model = build_scratch_model(tokenizer, config["model"], cfg.seed)
    timer = StepTimer()
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=data_collator, callbacks=[timer])
    call_seconds, _ = seconds_of(trainer.train)
    if len(timer.seconds) != steps:
        raise RuntimeError(f"asked the Trainer for {steps} steps, it ran {len(timer.seconds)}")
    return {"seconds": timer.seconds, "threads": timer.threads, "call_seconds": call_seconds}


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, items: list):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def train_with_hf_trainer(config, texts, tokenizer, cfg: TrainingConfig, steps: int, skip: int, workdir: Path) -> dict:
    """transformers.Trainer over a Dataset of the very packed blocks our loop trained on: the loops
    compared on equal work."""
    blocks = pack_epoch(tokenize_documents(tokenizer, texts), cfg.block_size, cfg.seed, epoch=0)
    blocks = blocks[: steps * cfg.batch_size]
    # The model shifts labels itself.
    dataset = ListDataset([{"input_ids": block, "labels": block} for block in blocks])
    run = run_hf_trainer(config, tokenizer, cfg, steps, dataset, workdir / "hf_trainer")
    tokens_per_step = cfg.batch_size * cfg.block_size
    return {"steps": steps, "tokens_per_step": tokens_per_step, "step_seconds": sum(run["seconds"]),
            "tokens_per_s": steady_tokens_per_s(run["seconds"], tokens_per_step, skip),
            "call_tokens_per_s": steps * tokens_per_step / run["call_seconds"], "threads": run["threads"]}


def train_with_hf_trainer_padded(config, texts, tokenizer, cfg: TrainingConfig, steps: int, skip: int,
                                 workdir: Path) -> dict:
    """What most users write first: transformers.Trainer over one document per row (cut at the
    block size), padded per batch by DataCollatorForLanguageModeling. Its tokens/s counts corpus
    tokens only (attention_mask 1), the padding it computes on is reported beside it."""
    from transformers import DataCollatorForLanguageModeling

    documents = [{"input_ids": ids[: cfg.block_size]} for ids in tokenize_documents(tokenizer, texts)]
    language_modeling = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False)
    corpus_tokens, padded_tokens = [], []

    def collate(features):
        # Batches are collated in step order (one worker), so entry i belongs to step i.
        batch = language_modeling(features)
        corpus_tokens.append(int(batch["attention_mask"].sum()))
        padded_tokens.append(int(batch["input_ids"].numel()))
        return batch

    run = run_hf_trainer(config, tokenizer, cfg, steps, ListDataset(documents), workdir / "hf_trainer_padded",
                         data_collator=collate)
    if len(corpus_tokens) < steps:
        raise RuntimeError(f"the Trainer collated {len(corpus_tokens)} batches for {steps} steps")
    timed = sum(run["seconds"][skip:])
    return {"steps": steps, "step_seconds": sum(run["seconds"]),
            "tokens_per_s": sum(corpus_tokens[skip:steps]) / max(timed, 1e-9),
            "padded_tokens_per_s": sum(padded_tokens[skip:steps]) / max(timed, 1e-9),
            "padding_fraction": 1 - sum(corpus_tokens[:steps]) / sum(padded_tokens[:steps]),
            "call_tokens_per_s": sum(corpus_tokens[:steps]) / run["call_seconds"], "threads": run["threads"]}


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
    sent back. Each training loop runs in a process of its own: in one process, our loop measured
    3,020-3,235 tokens/s after a Trainer run and 3,532-4,069 when it ran first (2026-12-03, three
    benchmarks, every round), while the Trainer's speed did not depend on its place; no torch
    setting the Trainer changes explained it. A fresh process gives every loop the same start."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=set_up_process, initargs=(torch.get_num_threads(),)) as pool:
        return pool.submit(function, *args).result()


def train_round(config, lm, cfg: TrainingConfig, steps: int, skip: int, workdir: Path, first: int = 0) -> dict:
    """One round of our loop, the Trainer as users write it and the Trainer on our packed blocks, in
    that order rotated by ``first`` (rounds rotate it, so that no loop always runs first), each in
    a fresh process (:func:`in_fresh_process`)."""
    from transformers.utils import is_accelerate_available

    texts, tokenizer, _, _ = lm
    loops = {
        "ours": lambda: in_fresh_process(train_ours, config, texts, tokenizer, cfg, steps, skip, workdir / "ours"),
        "trainer_padded": lambda: in_fresh_process(train_with_hf_trainer_padded, config, texts, tokenizer, cfg,
                                                   steps, skip, workdir / "trainer_padded"),
        "trainer": lambda: in_fresh_process(train_with_hf_trainer, config, texts, tokenizer, cfg, steps, skip,
                                            workdir / "trainer"),
    }
    why_not = None
    if not is_accelerate_available():
        why_not = "transformers.Trainer needs the accelerate package (pip install accelerate)"
        say(f"[training] Trainer baseline not measured: {why_not}")
        loops = {"ours": loops["ours"]}
    names = list(loops)
    runs = {}
    for name in names[first % len(names):] + names[: first % len(names)]:
        runs[name] = loops[name]()
        say(f"[training] {workdir.name}: {RUN_LABELS[name]} {runs[name]['tokens_per_s']:,.0f} corpus tokens/s "
            f"over steps {skip + 1}-{steps}")
    ours, padded, trainer = runs["ours"], runs.get("trainer_padded"), runs.get("trainer")
    return {"ours": ours, "trainer": trainer, "trainer_padded": padded,
            "speedup": ours["tokens_per_s"] / padded["tokens_per_s"] if padded else None,
            "packed_speedup": ours["tokens_per_s"] / trainer["tokens_per_s"] if trainer else None,
            "trainer_missing": why_not}


def measure_training(config, lm, limits: dict | None, sizes: Sizes, workdir: Path) -> dict:
    texts, tokenizer, _, cfg = lm
    documents = tokenize_documents(tokenizer, texts)
    full_batches = blocks_per_epoch(documents, cfg.block_size) // cfg.batch_size
    steps = min(sizes.train_steps, full_batches)  # within epoch 0: every batch full, same blocks for both
    if steps < 2:
        raise RuntimeError(f"the corpus holds {full_batches} full batches; the benchmark needs at least 2")
    skip = max(1, min(sizes.skip_steps, steps // 2))
    # This host's speed drifts over minutes (the same code measured 1.39x and 1.52x 18 minutes apart),
    # so the three loops run back to back in each round, in an order rotated from round to round, and
    # the ratio is taken within a round; the page shows the median round and every round's ratio.
    rounds = [train_round(config, lm, cfg, steps, skip, workdir / f"round_{number}", first=number - 1)
              for number in range(1, max(1, sizes.training_rounds) + 1)]
    ranked = sorted(rounds, key=lambda r: r["speedup"] if r["speedup"] is not None else r["ours"]["tokens_per_s"])
    median = ranked[(len(ranked) - 1) // 2]  # the lower one of two: a target is not met by the luckier round
    ours, trainer, padded = median["ours"], median["trainer"], median["trainer_padded"]
    speedup, packed_speedup, why_not = median["speedup"], median["packed_speedup"], median["trainer_missing"]
    fpt = flops_per_token(ours["model"], cfg.block_size)
    peak = (limits or {}).get(cfg.precision)
    for run in filter(None, (ours, trainer)):
        run["model_flops_per_s"] = fpt * run["tokens_per_s"]
        run["mfu"] = run["model_flops_per_s"] / peak if peak else None
    say(f"[training] ours: model {fpt / 1e6:.1f} MFLOP/token, {ours['model_flops_per_s'] / 1e9:,.1f} GFLOP/s"
        + (f", MFU {ours['mfu']:.1%}" if peak else "")
        + (f"; ours ÷ Trainer {speedup:.2f}× (÷ Trainer on packed blocks {packed_speedup:.2f}×)" if speedup else ""))
    model_section = config["model"]
    return {"ours": ours, "trainer": trainer, "trainer_padded": padded, "speedup": speedup,
            "packed_speedup": packed_speedup, "trainer_missing": why_not,
            "round_speedups": [r["speedup"] for r in rounds], "round_packed_speedups": [r["packed_speedup"] for r in rounds],
            "round_tokens_per_s": [r["ours"]["tokens_per_s"] for r in rounds], "median_round": rounds.index(median) + 1,
            "flops_per_token": fpt, "steps": steps,
            "skip": skip, "precision": cfg.precision, "batch_size": cfg.batch_size, "block_size": cfg.block_size,
            "documents": len(texts), "vocabulary": len(tokenizer),
            "parameters": sum(p.numel() for p in ours["model"].parameters()),
            "model": f"{model_section['n_layer']} layers × {model_section['n_embd']} wide, {model_section['n_head']} heads"}


# ----------------------------------------------------------------------------------------------
# 4. Activation collection against a plain batched forward pass


@torch.inference_mode()
def plain_forward(model, batches) -> None:
    for ids, mask in batches:
        model(input_ids=ids, attention_mask=mask)


def measure_activations(config, lm, model, sizes: Sizes, workdir: Path) -> dict:
    """Prompts/s of the activations job's work (write_activation_files: tokenizing, every hook point
    of the layer profile from one pass, the per-layer files and the index) ÷ the ceiling: the same
    length-sorted batches through model(input_ids, attention_mask) and nothing else. Also the
    same collection at the seed's layer only, for the cost of the other layers."""
    _, tokenizer, rows, _ = lm
    batch_size, dtype = config["activations"]["batch_size"], config["activations"]["dtype"]
    layers = profile_layers(config, config["model"]["n_layer"])
    device = pick_device()
    model.to(device).eval()
    tokenize_seconds, (prompt_ids, _) = seconds_of(encode_prompts, tokenizer, rows)
    order = np.argsort([len(p) for p in prompt_ids], kind="stable")
    batches = []
    for start in range(0, len(order), batch_size):
        ids, mask = right_padded([prompt_ids[i] for i in order[start : start + batch_size]], tokenizer.pad_token_id)
        batches.append((ids.to(device), mask.to(device)))
    plain_forward(model, batches[:1])  # warm-up
    workdir.mkdir(parents=True, exist_ok=True)

    def collect(collected_layers):
        paths = {layer: workdir / f"layer_{layer}.safetensors" for layer in collected_layers}
        write_activation_files(model, tokenizer, rows, paths, workdir / "index.csv", dtype, batch_size=batch_size,
                               progress=False)

    ceiling, collection, one_layer = math.inf, math.inf, math.inf
    for _ in range(sizes.activation_repeats):
        ceiling = min(ceiling, seconds_of(plain_forward, model, batches)[0])
        collection = min(collection, seconds_of(collect, layers)[0])
        one_layer = min(one_layer, seconds_of(collect, [config["activations"]["layer"]])[0])
    n = len(rows)
    result = {"prompts": n, "batch_size": batch_size, "layers": layers, "dtype": dtype,
              "collection_prompts_per_s": n / collection, "ceiling_prompts_per_s": n / ceiling,
              "fraction": ceiling / collection, "one_layer_seconds": one_layer,
              "tokenize_seconds": tokenize_seconds, "collection_seconds": collection, "ceiling_seconds": ceiling}
    say(f"[activations] {n} prompts at {len(layers)} hook points: collection {result['collection_prompts_per_s']:,.0f}/s, "
        f"plain forward {result['ceiling_prompts_per_s']:,.0f}/s, fraction {result['fraction']:.2f} "
        f"(one layer only: {one_layer:.2f} s, all: {collection:.2f} s)")
    return result


# ----------------------------------------------------------------------------------------------
# 5. Dataset generation


def measure_dataset_generation(config, sizes: Sizes, workdir: Path) -> dict:
    section = {**config["dataset"], "num_persons": sizes.generation_persons}
    outputs = {key: workdir / f"{key}.{'json' if key.endswith('kg') else 'jsonl'}"
               for key in ("train_kg", "test_kg", "qa_train", "qa_test", "qa_hard", "corpus")}
    seconds, summary = seconds_of(write_dataset, DatasetConfig.from_config(section), outputs)
    megabytes = sum(path.stat().st_size for path in outputs.values()) / 1e6
    result = {"persons": sizes.generation_persons, "seconds": seconds, "persons_per_s": sizes.generation_persons / seconds,
              "megabytes": megabytes, "qa_rows": sum(v for k, v in summary.items() if k.startswith("qa_"))}
    say(f"[dataset] {result['persons']:,} persons in {seconds:.1f} s ({result['persons_per_s']:,.0f} persons/s, "
        f"{megabytes:,.0f} MB written)")
    return result


# ----------------------------------------------------------------------------------------------
# 6. The Snakemake pipeline: per-stage time and memory, total, and the SAE-only rerun


def snakemake(workdir: Path, threads: int, *extra: str) -> tuple[float, str]:
    """Run the repository's Snakefile in ``workdir``; (wall seconds, its output). Fails loudly."""
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(workdir / "config.yaml"), "--cores", str(threads), *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    seconds, result = seconds_of(subprocess.run, command, capture_output=True, text=True, env=env, cwd=workdir)
    output = result.stdout + result.stderr
    with open(workdir / "bench_snakemake.log", "a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(command)}\n{output}\n")
    if result.returncode != 0:
        raise RuntimeError(f"snakemake {' '.join(extra)} failed in {workdir}:\n{output[-4000:]}")
    return seconds, output


def stage_benchmarks(directory: Path) -> list[dict]:
    """One row per Snakemake benchmark file: stage, seconds, peak RSS (MB), finish time."""
    import pandas as pd

    stages = []
    # The default run's: its seed's jobs at the flat paths, the other layers of its profile under
    # sweep/seed_<seed>/layer_<l>/ and the layer aggregate; other seeds' jobs are a sweep's.
    config = directory / "config.yaml"
    seed = (read_yaml(config) or {}).get("seed", 0) if config.is_file() else 0
    benchmarks = directory / "benchmarks"
    for path in sorted([*benchmarks.glob("*.tsv"), *benchmarks.glob(f"sweep/seed_{seed}/layer_*/*.tsv")]):
        table = pd.read_csv(path, sep="\t")
        rss = pd.to_numeric(table.get("max_rss"), errors="coerce")
        stages.append({"stage": str(path.relative_to(directory / "benchmarks").with_suffix("")),
                       "seconds": float(table["s"].iloc[-1]),
                       "max_rss_mb": None if rss is None or rss.isna().all() else float(rss.iloc[-1]),
                       "finished": path.stat().st_mtime})
    return sorted(stages, key=lambda stage: stage["finished"])


IDLE_GAP_SECONDS = 60.0  # longer than Snakemake ever takes between two jobs of one invocation


def wall_from_benchmarks(stages: list[dict]) -> tuple[float, str]:
    """A finished run's wall time from its benchmark files: first job start to last job end, less
    any stretch of over IDLE_GAP_SECONDS in which no job ran (stages redone by a later invocation,
    e.g. a --forcerun, leave such a gap); the sum of stage times when even that span is far longer
    than the jobs."""
    total = sum(stage["seconds"] for stage in stages)
    intervals = sorted((s["finished"] - s["seconds"], s["finished"]) for s in stages)
    idle, reach = 0.0, intervals[0][1]
    for start, end in intervals[1:]:
        if start - reach > IDLE_GAP_SECONDS:
            idle += start - reach
        reach = max(reach, end)
    span = reach - intervals[0][0]
    how = "first job start to last job end (from the benchmark files' times)"
    if idle:
        how += f", less {idle:,.0f} s in which no job ran (stages redone by a later Snakemake call)"
    if span - idle <= 1.5 * total:
        return span - idle, how
    return total, "sum of stage times (the benchmark files span several runs)"


def minutes_to_accuracy(log_csv: Path, key: str = "ood_person_exact", threshold: float = 0.95) -> dict | None:
    """Training minutes (elapsed_s: step time, monitor excluded) at the first epoch end where the
    monitor's ``key`` reached ``threshold``; the best value seen when it never did."""
    import pandas as pd

    if not log_csv.is_file():
        return None
    log = pd.read_csv(log_csv, keep_default_na=False)
    best, epochs = None, 0.0
    for _, row in log.iterrows():
        if not row["monitor"]:
            continue
        value = json.loads(row["monitor"]).get(key)
        if value is None:
            continue
        epochs = float(row["epoch"])
        if best is None or value > best["value"]:
            best = {"value": value, "minutes": float(row["elapsed_s"]) / 60, "epoch": epochs}
        if value >= threshold:
            return {"reached": True, "minutes": float(row["elapsed_s"]) / 60, "epoch": epochs, "value": value,
                    "source": str(log_csv)}
    if best is None:
        return None
    return {"reached": False, **best, "epochs_run": epochs, "source": str(log_csv)}


def copy_finished_run(source: Path, target: Path) -> None:
    """What Snakemake needs to see a finished run as up to date: config, inputs, outputs, metadata.
    copy2 keeps modification times, so nothing looks stale; the source is only read."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / "config.yaml", target / "config.yaml")
    for name in ("data", "results", ".snakemake/metadata"):
        if (source / name).is_dir():
            shutil.copytree(source / name, target / name, symlinks=True)


def measure_sae_rerun(workdir: Path, threads: int) -> dict:
    """Double sae.lambda_indep in ``workdir``'s config and time the rerun Snakemake then does."""
    import yaml

    config_path = workdir / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    before = config.get("sae", {}).get("lambda_indep", 1e-2)
    config.setdefault("sae", {})["lambda_indep"] = before * 2
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    _, dry_run = snakemake(workdir, threads, "-n")
    jobs = job_stats(dry_run)
    if not set(jobs) <= SAE_RERUN_JOBS:
        return {"measured": False, "why": f"the run is not up to date: changing one λ would run {sorted(jobs)}"}
    start = time.time()
    seconds, _ = snakemake(workdir, threads)
    rerun_stages = [s for s in stage_benchmarks(workdir) if s["finished"] >= start]
    # Jobs may overlap (two 1-thread SAE jobs on 2 cores): the rest is Snakemake's own time.
    busy = max(s["finished"] for s in rerun_stages) - min(s["finished"] - s["seconds"] for s in rerun_stages)
    return {"measured": True, "seconds": seconds, "change": f"sae.lambda_indep {before:g} → {before * 2:g}",
            "jobs": rerun_stages, "overhead_seconds": max(0.0, seconds - busy)}


# The layer-profile comparison runs two pipelines that share the dataset and the trained LM (the
# profile changes nothing upstream of the LM's outputs), so the bench trains the LM once, in the
# finished run, and reruns everything after it twice: once with the config's profile and once
# restricted to the seed's hook (`sweep.layers: [<seed's hook>]`, the README's one config line).
SHARED_STAGES = ("dataset", "train_lm")
SHARED_OUTPUTS = ("results/dataset", "results/lm/final", "results/lm/train_log.csv", "results/lm/train_summary.json",
                  "results/lm/checkpoint")


def prepare_downstream_run(source: Path, target: Path, layers: list[int] | None, threads: int) -> dict:
    """A copy of the finished run ``source`` in ``target`` that keeps only the dataset and the
    trained LM (and their Snakemake records), with ``sweep.layers`` set to ``layers`` (None: as
    it is); returns the jobs Snakemake plans there (its dry run's job table)."""
    import yaml

    copy_finished_run(source, target)
    _keep_only(target, target / "results", SHARED_OUTPUTS)
    if layers is not None:
        config_path = target / "config.yaml"
        config = yaml.safe_load(config_path.read_text())
        config.setdefault("sweep", {})["layers"] = layers
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    _, dry_run = snakemake(target, threads, "-n")
    return job_stats(dry_run)


def _keep_only(root: Path, directory: Path, kept: tuple[str, ...]) -> None:
    """Delete everything under ``directory`` but the paths ``kept`` (relative to ``root``)."""
    for child in directory.iterdir():
        name = child.relative_to(root).as_posix()
        if any(name == path or name.startswith(path + "/") for path in kept):
            continue
        if child.is_dir() and not child.is_symlink():
            if any(path.startswith(name + "/") for path in kept):
                _keep_only(root, child, kept)
            else:
                shutil.rmtree(child)
        else:
            child.unlink()


def measure_profile_runs(source: Path, stages: list[dict], workdir: Path, threads: int) -> dict:
    """The layer profile's cost as wall time, both sides run here back to back: everything after
    the LM with the config's profile, then restricted to the seed's hook, each by ``snakemake``
    on a copy of the finished run ``source`` (:func:`prepare_downstream_run`). The LM part both
    pipelines share is the run's own dataset and train_lm seconds."""
    config = validated(read_yaml(source / "config.yaml"))
    seed_layer = config["activations"]["layer"]
    if config["sweep"]["seeds"]:
        return {"measured": False, "why": "the run has sweep seeds (each its own LM); the comparison is one LM's"}
    if profile_layers(config, config["model"]["n_layer"]) == [seed_layer]:
        return {"measured": False, "why": "the run's profile is the seed's hook alone"}
    shared = sum(stage["seconds"] for stage in stages if stage["stage"] in SHARED_STAGES)
    runs = {}
    for name, layers in (("profile", None), ("seed_hook", [seed_layer])):
        target = workdir / f"downstream_{name}"
        jobs = prepare_downstream_run(source, target, layers, threads)
        if set(jobs) & set(SHARED_STAGES):
            return {"measured": False, "why": f"the copy would rerun {sorted(set(jobs) & set(SHARED_STAGES))}: "
                                              "the run's LM is not up to date"}
        seconds, _ = snakemake(target, threads)
        runs[name] = {"seconds": seconds, "jobs": jobs, "job_count": sum(jobs.values()) - jobs.get("all", 0)}
        say(f"[pipeline] after the LM, {name.replace('_', ' ')} ({runs[name]['job_count']} jobs): {seconds:.1f} s")
        shutil.rmtree(target)
    return {"measured": True, "shared_seconds": shared, "seed_layer": seed_layer, **runs,
            "ratio": profile_wall_ratio(shared, runs["profile"]["seconds"], runs["seed_hook"]["seconds"])}


def profile_wall_ratio(shared_seconds: float, profile_seconds: float, seed_hook_seconds: float) -> float:
    """Wall time of the pipeline with the profile ÷ without, both sharing the dataset and LM."""
    return (shared_seconds + profile_seconds) / (shared_seconds + seed_hook_seconds)


def rerun_from_stages(stages: list[dict]) -> dict:
    """What the SAE-only rerun costs, read from the finished run's own stage times instead of rerun:
    the sum of the jobs a λ change reruns (every layer's two SAEs and evaluate, the aggregate),
    without Snakemake's start-up. Labelled an estimate wherever it is shown."""
    jobs = [stage for stage in stages if stage["stage"].rsplit("/", 1)[-1] in SAE_RERUN_JOBS]
    return {"measured": False, "estimated": True, "seconds": sum(stage["seconds"] for stage in jobs), "jobs": jobs,
            "why": "--no-rerun: estimated from the finished run's stage times of the jobs a λ change reruns"}


def measure_sae_layers(run_dir: Path) -> dict:
    """In process, on a finished run's activations, with the rule's one thread: the supervised SAE
    of every layer of the profile trained at once (what the LM's one train_sae job does), then of
    the seed's hook alone (what a run restricted to that layer trains). Their difference is what the
    profile's other layers add to each of the two SAE jobs (trained and untrained LM: same shapes)."""
    from biosae.sae.inputs import load_training_layers, sae_config
    from biosae.sae.training import train_sae_layers

    config = validated(read_yaml(run_dir / "config.yaml"))
    layers = profile_layers(config, config["model"]["n_layer"])
    seed_layer = config["activations"]["layer"]
    activations = run_dir / "results" / "activations"
    h, rule_idx, value_target, candidates, _ = load_training_layers(
        [activations / f"layer_{layer}.safetensors" for layer in layers], activations / "index.csv",
        config["sae"]["max_train_rows"], config["seed"])
    cfg = sae_config(config["sae"], h[0].shape[1], candidates, config["seed"])
    with one_thread():
        all_seconds, _ = seconds_of(train_sae_layers, h, rule_idx, value_target, cfg, progress=False)
        one_seconds, _ = seconds_of(train_sae_layers, [h[layers.index(seed_layer)]], rule_idx, value_target, cfg,
                                    progress=False)
    say(f"[pipeline] SAE training in process: {len(layers)} layers at once {all_seconds:.1f} s, "
        f"layer {seed_layer} alone {one_seconds:.1f} s")
    return {"layers": layers, "seed_layer": seed_layer, "all_seconds": all_seconds, "one_seconds": one_seconds,
            "rows": len(rule_idx), "epochs": cfg.epochs, "batch_size": cfg.batch_size}


TOPK_MEASURED_EPOCHS = 20


def measure_topk_layers(run_dir: Path) -> dict:
    """In process, like :func:`measure_sae_layers`: the TopK SAE of every profile layer at once
    (the train_unsupervised_sae job), then of the seed's hook alone, each over at most
    ``TOPK_MEASURED_EPOCHS`` epochs, scaled to the config's (every epoch runs the same batches)."""
    from biosae.sae.inputs import load_training_layers
    from biosae.sae.topk import TopKSAEConfig, train_topk_sae_layers

    config = validated(read_yaml(run_dir / "config.yaml"))
    section = dict(config["methods"]["sae_unsupervised"])
    max_rows = section.pop("max_train_rows")
    layers = profile_layers(config, config["model"]["n_layer"])
    seed_layer = config["activations"]["layer"]
    activations = run_dir / "results" / "activations"
    h, *_ = load_training_layers([activations / f"layer_{layer}.safetensors" for layer in layers],
                                 activations / "index.csv", max_rows, config["seed"])
    cfg = TopKSAEConfig(d_model=h.shape[2], seed=config["seed"], **section)
    measured = replace(cfg, epochs=min(cfg.epochs, TOPK_MEASURED_EPOCHS))
    with one_thread():
        all_seconds, _ = seconds_of(train_topk_sae_layers, h, measured)
        one_seconds, _ = seconds_of(train_topk_sae_layers, h[layers.index(seed_layer)][None], measured)
    scale = cfg.epochs / measured.epochs
    say(f"[pipeline] TopK SAE training in process ({measured.epochs} epochs, scaled x{scale:g}): {len(layers)} layers "
        f"at once {all_seconds * scale:.1f} s, layer {seed_layer} alone {one_seconds * scale:.1f} s")
    return {"layers": layers, "seed_layer": seed_layer, "all_seconds": all_seconds * scale,
            "one_seconds": one_seconds * scale, "rows": h.shape[1], "epochs": cfg.epochs,
            "measured_epochs": measured.epochs, "batch_size": cfg.batch_size}


def run_evaluation_inputs(results: Path, layer: int, methods):
    """A finished run's evaluation inputs at ``layer``, from its ``results/`` directory laid out as
    the rules write it (the evaluate job's inputs, without the other methods' tests)."""
    from biosae.evaluation.evaluate import load_evaluation_inputs

    sae_dir, untrained = results / "sae" / f"layer_{layer}", results / "baselines" / "untrained_lm"
    return load_evaluation_inputs(
        model_dir=results / "lm" / "final", activations=results / "activations" / f"layer_{layer}.safetensors",
        index=results / "activations" / "index.csv", sae_dir=sae_dir, candidates=sae_dir / "value_candidates.json",
        untrained_activations=untrained / "activations" / f"layer_{layer}.safetensors",
        untrained_index=untrained / "activations" / "index.csv", untrained_sae_dir=untrained / "sae" / f"layer_{layer}",
        qa_accuracy=results / "lm" / "qa_accuracy.json", layer=layer, methods=methods)


def measure_sae_causal_layers(run_dir: Path) -> dict:
    """In process, with the evaluate rule's one thread, on a finished run's files: the SAE's causal
    tests (``sae_causal_metrics``: the LM's edited passes for the slot and decoder-direction
    ablations, interchange and swap) at every layer of the profile, the LM loaded and every cell's
    prompt cache built once and timed apart. Beside training the two SAEs, these passes are the
    part of the SAE-only rerun that no arrangement of its jobs removes (a job per layer or one per
    LM only moves start-up, loading, prompt caches and figures around)."""
    from biosae.evaluation.evaluate import ordered_cells, sae_causal_metrics
    from biosae.evaluation.method_tests import cell_samples
    from biosae.lm.activations import load_activation_table
    from biosae.sae.model import load_sae

    config = validated(read_yaml(run_dir / "config.yaml"))
    layers = profile_layers(config, config["model"]["n_layer"])
    section, results = config["evaluate"], run_dir / "results"
    activations = results / "activations"
    with one_thread():
        def shared():
            inputs = run_evaluation_inputs(results, layers[0], config["methods"]["names"])
            samples = cell_samples(inputs.model, inputs.tokenizer, inputs.index, ordered_cells(inputs.index),
                                   section["max_prompts_per_cell"], config["seed"])
            return inputs, samples

        shared_seconds, (inputs, samples) = seconds_of(shared)
        seconds = {}
        for layer in layers:
            layer_inputs = replace(
                inputs, layer=layer, sae=load_sae(results / "sae" / f"layer_{layer}"),
                activations=load_activation_table(activations / f"layer_{layer}.safetensors", activations / "index.csv")[0])
            seconds[layer], _ = seconds_of(sae_causal_metrics, layer_inputs, samples, section["swap_alphas"])
    say(f"[pipeline] the SAE's causal tests in process: {sum(seconds.values()):.1f} s over {len(layers)} layers "
        f"(LM and prompt caches {shared_seconds:.1f} s apart)")
    return {"seconds": seconds, "shared_seconds": shared_seconds, "prompts_per_cell": section["max_prompts_per_cell"]}


def rerun_floor(rerun: dict, causal: dict, wall: float, threads: int) -> dict | None:
    """The SAE-only rerun's work that stays whatever its jobs: the two SAE trainings (their jobs in
    the rerun, side by side on ``threads`` cores: the longer one) and the SAE's causal tests of
    every layer spread over the cores, as a share of the full run."""
    training = [stage["seconds"] for stage in rerun.get("jobs", [])
                if stage["stage"].rsplit("/", 1)[-1] in SAE_TRAINING_JOBS]
    if not training or not causal:
        return None
    sae_seconds = max(training) if threads >= 2 else sum(training)
    causal_seconds = sum(causal["seconds"].values()) / threads
    return {"sae_training_seconds": sae_seconds, "causal_seconds": causal_seconds,
            "seconds": sae_seconds + causal_seconds, "fraction": (sae_seconds + causal_seconds) / wall}


def method_names(run_dir: Path) -> list[str]:
    return validated(read_yaml(run_dir / "config.yaml"))["methods"]["names"]


def recorded_layer_seconds(run_dir: Path, layer_file) -> dict | None:
    """Each profile layer's seconds in a job that runs every layer of an LM and records them per
    layer (``seconds``, and ``shared_seconds`` for what all layers share) in the JSON file
    ``layer_file(layer)`` under the run's results. None for a run from before the job recorded them."""
    config = validated(read_yaml(run_dir / "config.yaml"))
    seconds, shared = {}, 0.0
    for layer in profile_layers(config, config["model"]["n_layer"]):
        path = run_dir / "results" / layer_file(layer)
        recorded = json.loads(path.read_text()) if path.is_file() else {}
        if "seconds" not in recorded:
            return None
        seconds[layer], shared = recorded["seconds"], recorded["shared_seconds"]
    return {"seconds": seconds, "shared_seconds": shared, "seed_layer": config["activations"]["layer"]}


def das_layers_from_run(run_dir: Path) -> dict | None:
    """The train_das job's seconds per layer (from the cfg.json it writes per layer)."""
    return recorded_layer_seconds(run_dir, lambda layer: f"methods/das/layer_{layer}/cfg.json")


def method_tests_layers_from_run(run_dir: Path) -> dict | None:
    """The evaluate_methods job's seconds per layer (from the JSON file it writes per layer)."""
    return recorded_layer_seconds(run_dir, lambda layer: f"methods/tests/layer_{layer}.json")


def measure_pipeline(config_overrides: dict, threads: int, pipeline_dir: Path | None, workdir: Path,
                     rerun: bool = True, profile_runs: bool = True) -> dict:
    """Run the default pipeline in ``workdir`` (or read a finished one), then the SAE-only rerun
    and the two runs after the LM that compare the layer profile with the seed's hook alone."""
    run_dir = workdir / "pipeline"
    if pipeline_dir is None:
        run_dir.mkdir(parents=True)
        import yaml

        (run_dir / "config.yaml").write_text(yaml.safe_dump(experiment_config(config_overrides), sort_keys=False))
        shutil.copytree(REPO / "data", run_dir / "data")
        say(f"[pipeline] running the default pipeline in {run_dir} (--cores {threads}) ...")
        wall, _ = snakemake(run_dir, threads)
        stages, wall_how = stage_benchmarks(run_dir), "wall clock of the snakemake command"
        source = run_dir
    else:
        stages = stage_benchmarks(pipeline_dir)
        if not stages:
            raise RuntimeError(f"--pipeline-dir {pipeline_dir}: no benchmarks/*.tsv (not a finished pipeline run)")
        wall, wall_how = wall_from_benchmarks(stages)
        copy_finished_run(pipeline_dir, run_dir)
        source = pipeline_dir
    for stage in stages:
        say(f"[pipeline] {stage['stage']}: {stage['seconds']:,.1f} s, peak RSS {stage['max_rss_mb'] or 0:,.0f} MB")
    say(f"[pipeline] total {wall / 60:.1f} min ({wall_how})")
    accuracy = minutes_to_accuracy(source / "results" / "lm" / "train_log.csv")
    sae_layers = measure_sae_layers(source)
    topk_layers = measure_topk_layers(source) if "sae_unsupervised" in method_names(source) else None
    das_layers = das_layers_from_run(source) if "das" in method_names(source) else None
    method_tests_layers = method_tests_layers_from_run(source)
    rerun = measure_sae_rerun(run_dir, threads) if rerun else rerun_from_stages(stages)
    sae_causal = measure_sae_causal_layers(source)
    # Where this bench ran the pipeline itself, ``source`` is the run the rerun changed (its λ
    # doubled): that changes nothing upstream of the SAEs, and both sides of the comparison use it.
    profile = (measure_profile_runs(source, stages, workdir, threads) if profile_runs
               else {"measured": False, "why": "--no-profile-runs"})
    if not profile["measured"]:
        say(f"[pipeline] layer profile against the seed's hook alone not run: {profile['why']}")
    if rerun.get("estimated"):
        rerun["fraction"] = rerun["seconds"] / wall
        say(f"[pipeline] SAE-only rerun estimated from stage times: {rerun['seconds']:.1f} s = {rerun['fraction']:.1%}")
    elif rerun["measured"]:
        rerun["fraction"] = rerun["seconds"] / wall
        say(f"[pipeline] rerun after {rerun['change']}: {rerun['seconds']:.1f} s = {rerun['fraction']:.1%} of the full run")
    else:
        say(f"[pipeline] SAE-only rerun not measured: {rerun['why']}")
    rerun["floor"] = rerun_floor(rerun, sae_causal, wall, threads)
    if rerun["floor"]:
        say(f"[pipeline] of it, the SAE trainings and the SAE's causal tests: {rerun['floor']['seconds']:.1f} s = "
            f"{rerun['floor']['fraction']:.1%} of the full run")
    return {"stages": stages, "wall": wall, "wall_how": wall_how, "source": str(source), "ran_here": pipeline_dir is None,
            "accuracy": accuracy, "rerun": rerun, "sae_layers": sae_layers, "sae_causal": sae_causal,
            "topk_layers": topk_layers,
            "das_layers": das_layers, "method_tests_layers": method_tests_layers, "profile_runs": profile}


# ----------------------------------------------------------------------------------------------
# 7. The evaluate stage: every localization method against the SAE + random control only


def measure_evaluate(run_dir: Path, workdir: Path) -> dict:
    """Time the seed hook's evaluation on a finished run's files, in this process, as its two jobs
    run it: the other methods' tests (evaluate_methods at that layer alone, prompt caches built)
    then evaluate (the SAE's tests, the join) and its figures. Twice: with the config's methods and
    with the SAE and the random control only. Loading the files (the same for both) is timed
    apart; Snakemake's job start-ups are not in either."""
    from biosae.evaluation.evaluate import answered_rules, evaluate, ordered_cells
    from biosae.evaluation.figures import write_figures
    from biosae.evaluation.method_tests import cell_samples, evaluate_methods, load_trained_methods

    config = validated(read_yaml(run_dir / "config.yaml"))
    layer, section, methods = config["activations"]["layer"], config["evaluate"], config["methods"]["names"]
    results = run_dir / "results"
    sae_dir = results / "sae" / f"layer_{layer}"

    def load():
        inputs = run_evaluation_inputs(results, layer, methods)
        trained = load_trained_methods(
            results / "methods" / "das" / f"layer_{layer}" if "das" in methods else None,
            results / "methods" / "sae_unsupervised" / f"layer_{layer}" if "sae_unsupervised" in methods else None)
        return inputs, trained

    load_seconds, (inputs, (trained, fit)) = seconds_of(load)

    def run(names, name):
        started = time.perf_counter()
        samples = cell_samples(inputs.model, inputs.tokenizer, inputs.index, ordered_cells(inputs.index),
                               section["max_prompts_per_cell"], config["seed"])
        inputs.method_tests = evaluate_methods(
            samples, layer, inputs.activations, inputs.index, names, alphas=section["swap_alphas"], seed=config["seed"],
            answered_rule=answered_rules(inputs.index), fit=fit, **trained)  # a method not in names is not built
        inputs.method_names = tuple(names)
        metrics = evaluate(inputs, section["max_prompts_per_cell"], section["swap_alphas"], config["seed"])
        tests = time.perf_counter() - started
        write_figures(metrics, workdir / name, results / "lm" / "train_log.csv", sae_dir / "train_log.csv")
        # The methods named in the table are those the metrics hold, not those asked for.
        return tests, time.perf_counter() - started - tests, list(metrics["methods"])

    workdir.mkdir(parents=True, exist_ok=True)
    baseline_tests, baseline_figures, baseline_methods = run(BASELINE_METHODS, "baseline")
    all_tests, all_figures, all_methods = run(methods, "all")
    result = {"layer": layer, "methods": all_methods, "baseline_methods": baseline_methods,
              "prompts_per_cell": section["max_prompts_per_cell"],
              "load_seconds": load_seconds, "baseline_seconds": baseline_tests + baseline_figures,
              "baseline_tests": baseline_tests, "baseline_figures": baseline_figures,
              "all_seconds": all_tests + all_figures, "all_tests": all_tests, "all_figures": all_figures,
              "source": str(run_dir)}
    result["ratio"] = result["all_seconds"] / result["baseline_seconds"]
    say(f"[evaluate] layer {layer}: {'+'.join(BASELINE_METHODS)} {result['baseline_seconds']:.1f} s, all methods "
        f"{result['all_seconds']:.1f} s ({result['ratio']:.2f}x; loading {load_seconds:.1f} s apart)")
    return result


# ----------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results.md", help="markdown to write")
    parser.add_argument("--tiny", action="store_true", help="shrink every size (smoke test; figures mean nothing)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads and snakemake --cores (default 2)")
    parser.add_argument("--skip-pipeline", action="store_true", help="leave out section 6 (the Snakemake pipeline)")
    parser.add_argument("--pipeline-dir", type=Path,
                        help="a finished default pipeline run (e.g. the repository): per-stage figures and the "
                             "training log come from it; the SAE-only rerun runs on a copy. Nothing in it is written")
    parser.add_argument("--no-rerun", action="store_true",
                        help="do not rerun the SAE jobs after a λ change; estimate that from the run's stage times")
    parser.add_argument("--no-profile-runs", action="store_true",
                        help="do not run the pipeline after the LM twice (with the layer profile, then the seed's "
                             "hook alone); estimate the profile's cost from the run's stage seconds")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="measure only these sections")
    parser.add_argument("--train-steps", type=int, help="LM training steps for ours and the Trainer (default 200)")
    args = parser.parse_args(argv)
    if args.pipeline_dir is not None:
        args.pipeline_dir = args.pipeline_dir.resolve()
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    sizes = TINY if args.tiny else Sizes()
    if args.train_steps:
        sizes = replace(sizes, train_steps=args.train_steps)
    sections = set(args.only or SECTIONS) - ({"pipeline"} if args.skip_pipeline else set())
    set_up_process(args.threads)
    started, start = datetime.datetime.now(), time.perf_counter()
    config = validated(experiment_config(sizes.config_overrides))
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="biosae-bench-") as tmp:
        workdir = Path(tmp)
        if "machine" in sections:
            results["machine"] = measure_machine_limits(sizes)
        lm = prepare_lm(config) if {"training", "activations"} & sections else None
        model = None
        if "training" in sections:
            results["training"] = measure_training(config, lm, (results.get("machine") or {}).get("flops"), sizes,
                                                   workdir / "training")
            model = results["training"]["ours"]["model"]
        if "activations" in sections:
            model = model or build_scratch_model(lm[1], config["model"], config["seed"])
            results["activations"] = measure_activations(config, lm, model, sizes, workdir / "activations")
        if "dataset" in sections:
            results["dataset"] = measure_dataset_generation(config, sizes, workdir / "dataset")
        if "pipeline" in sections:
            results["pipeline"] = measure_pipeline(sizes.config_overrides, args.threads, args.pipeline_dir, workdir,
                                                   rerun=not args.no_rerun,
                                                   profile_runs=not args.no_profile_runs)
        else:
            log_dir = args.pipeline_dir or REPO
            results["accuracy"] = minutes_to_accuracy(log_dir / "results" / "lm" / "train_log.csv")
        if "evaluate" in sections:
            finished = Path(results["pipeline"]["source"]) if "pipeline" in results else args.pipeline_dir
            if finished is None:
                say("[evaluate] not measured: needs a finished run (--pipeline-dir, or the pipeline section)")
            else:
                results["evaluate"] = measure_evaluate(finished, workdir / "evaluate")
    sizes_shown = {key: value for key, value in vars(sizes).items() if value}
    run = {"command": " ".join(["python bench/run.py", *sys.argv[1:]]), "started": started, "tiny": args.tiny,
           "minutes": (time.perf_counter() - start) / 60, "threads": args.threads, "environment": environment(),
           "sizes": sizes_shown}
    write_text(args.out, page(results, run))
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
