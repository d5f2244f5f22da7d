"""Sections 2-3, LM training: our loop against transformers.Trainer, the same model, blocks,
schedule and steps. The Trainer runs twice: as most users write it first (a padded document per
row) and fed our packed blocks (the loops compared on equal work)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from biosae.dataset.build import DatasetConfig, build_dataset
from biosae.devices import pick_device
from biosae.lm.model import (
    TrainingConfig,
    blocks_per_epoch,
    build_scratch_model,
    flops_per_token,
    pack_epoch,
    tokenize_documents,
    train_language_model,
)
from biosae.lm.tokenization import train_word_tokenizer

from .common import Sizes, in_fresh_process, say, seconds_of

LOOP_LABELS = {
    "ours": "ours",
    "trainer_padded": "transformers.Trainer, a padded document per row:",
    "trainer": "transformers.Trainer on our packed blocks:",
}


@dataclass
class LoopRun:
    """One training loop's run of ``steps`` steps. tokens/s counts corpus tokens at steady state
    (the first steps left out); ``call_tokens_per_s`` divides by the whole call's wall time."""

    steps: int
    step_seconds: float  # all steps' time: forward, backward, clip, optimizer
    tokens_per_s: float
    call_tokens_per_s: float
    threads: int
    tokens_per_step: int | None = None  # packed loops: batch × block
    padded_tokens_per_s: float | None = None  # padded loop: positions computed, padding included
    padding_fraction: float | None = None  # padded loop: share of positions that are padding
    model_flops_per_s: float | None = None  # filled by measure_training (needs the machine limits)
    mfu: float | None = None
    model: object = field(default=None, repr=False)  # our loop's trained model (the activations reuse it)


@dataclass
class TrainingRound:
    """The three loops back to back; ratios are of our tokens/s."""

    ours: LoopRun
    trainer: LoopRun | None
    trainer_padded: LoopRun | None
    speedup: float | None  # ÷ the Trainer as users write it
    packed_speedup: float | None  # ÷ the Trainer on our packed blocks
    trainer_missing: str | None  # why the Trainer did not run


@dataclass
class Training:
    """The median round, every round's ratios, and the model and corpus they ran on."""

    median: TrainingRound
    median_round: int  # 1-based
    round_speedups: list
    round_packed_speedups: list
    round_tokens_per_s: list
    flops_per_token: float
    steps: int
    skip: int
    precision: str
    batch_size: int
    block_size: int
    documents: int
    vocabulary: int
    parameters: int
    model: str  # in words

    @property
    def ours(self) -> LoopRun:
        return self.median.ours

    @property
    def trainer(self) -> LoopRun | None:
        return self.median.trainer

    @property
    def trainer_padded(self) -> LoopRun | None:
        return self.median.trainer_padded

    @property
    def speedup(self) -> float | None:
        return self.median.speedup

    @property
    def packed_speedup(self) -> float | None:
        return self.median.packed_speedup

    @property
    def trainer_missing(self) -> str | None:
        return self.median.trainer_missing


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


def train_ours(config, texts, tokenizer, cfg: TrainingConfig, steps: int, skip: int, workdir: Path) -> LoopRun:
    """biosae.lm.model.train_language_model for exactly ``steps`` steps (epochs set to that fraction)."""
    import pandas as pd

    documents = tokenize_documents(tokenizer, texts)
    steps_per_epoch = math.ceil(blocks_per_epoch(documents, cfg.block_size) / cfg.batch_size)
    cfg = replace(cfg, epochs=steps / steps_per_epoch)
    model = build_scratch_model(tokenizer, config["model"], cfg.seed)
    call_seconds, summary = seconds_of(
        train_language_model,
        model,
        tokenizer,
        texts,
        cfg,
        workdir / "final",
        workdir / "checkpoint",
        workdir / "train_log.csv",
        log_every=skip,
        progress=False,
    )
    if summary["steps"] != steps:
        raise RuntimeError(f"asked for {steps} training steps, the loop ran {summary['steps']}")
    # The log's elapsed_s is cumulative step time; steady state is from step `skip` to the end.
    log = pd.read_csv(workdir / "train_log.csv", keep_default_na=False)
    elapsed = dict(zip(log["step"], log["elapsed_s"]))
    tokens_per_step = cfg.batch_size * cfg.block_size
    steady = (steps - skip) * tokens_per_step / max(float(elapsed[steps]) - float(elapsed[skip]), 1e-9)
    return LoopRun(
        steps=steps,
        tokens_per_step=tokens_per_step,
        step_seconds=summary["train_seconds"],
        tokens_per_s=steady,
        call_tokens_per_s=steps * tokens_per_step / call_seconds,
        threads=torch.get_num_threads(),
        model=model,
    )


def run_hf_trainer(
    config, tokenizer, cfg: TrainingConfig, steps: int, dataset, output_dir: Path, data_collator=None
) -> tuple[list[float], int, float]:
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
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        adam_beta1=0.9,
        adam_beta2=0.95,
        adam_epsilon=1e-8,
        max_grad_norm=cfg.grad_clip,
        warmup_steps=cfg.warmup_fraction,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": cfg.min_lr_fraction},
        bf16=cfg.precision == "bf16",
        use_cpu=pick_device().type == "cpu",
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=cfg.seed,
    )
    model = build_scratch_model(tokenizer, config["model"], cfg.seed)
    timer = StepTimer()
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=data_collator, callbacks=[timer])
    call_seconds, _ = seconds_of(trainer.train)
    if len(timer.seconds) != steps:
        raise RuntimeError(f"asked the Trainer for {steps} steps, it ran {len(timer.seconds)}")
    return timer.seconds, timer.threads, call_seconds


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, items: list):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def train_with_hf_trainer(
    config, texts, tokenizer, cfg: TrainingConfig, steps: int, skip: int, workdir: Path
) -> LoopRun:
    """transformers.Trainer over a Dataset of the very packed blocks our loop trained on: the loops
    compared on equal work."""
    blocks = pack_epoch(tokenize_documents(tokenizer, texts), cfg.block_size, cfg.seed, epoch=0)
    blocks = blocks[: steps * cfg.batch_size]
    # The model shifts labels itself.
    dataset = ListDataset([{"input_ids": block, "labels": block} for block in blocks])
    seconds, threads, call_seconds = run_hf_trainer(config, tokenizer, cfg, steps, dataset, workdir / "hf_trainer")
    tokens_per_step = cfg.batch_size * cfg.block_size
    return LoopRun(
        steps=steps,
        tokens_per_step=tokens_per_step,
        step_seconds=sum(seconds),
        tokens_per_s=steady_tokens_per_s(seconds, tokens_per_step, skip),
        call_tokens_per_s=steps * tokens_per_step / call_seconds,
        threads=threads,
    )


def train_with_hf_trainer_padded(
    config, texts, tokenizer, cfg: TrainingConfig, steps: int, skip: int, workdir: Path
) -> LoopRun:
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

    seconds, threads, call_seconds = run_hf_trainer(
        config, tokenizer, cfg, steps, ListDataset(documents), workdir / "hf_trainer_padded", data_collator=collate
    )
    if len(corpus_tokens) < steps:
        raise RuntimeError(f"the Trainer collated {len(corpus_tokens)} batches for {steps} steps")
    timed = sum(seconds[skip:])
    return LoopRun(
        steps=steps,
        step_seconds=sum(seconds),
        tokens_per_s=sum(corpus_tokens[skip:steps]) / max(timed, 1e-9),
        padded_tokens_per_s=sum(padded_tokens[skip:steps]) / max(timed, 1e-9),
        padding_fraction=1 - sum(corpus_tokens[:steps]) / sum(padded_tokens[:steps]),
        call_tokens_per_s=sum(corpus_tokens[:steps]) / call_seconds,
        threads=threads,
    )


def train_round(config, lm, cfg: TrainingConfig, steps: int, skip: int, workdir: Path, first: int = 0) -> TrainingRound:
    """One round of our loop, the Trainer as users write it and the Trainer on our packed blocks, in
    that order rotated by ``first`` (rounds rotate it, so that no loop always runs first), each in
    a fresh process (:func:`bench.common.in_fresh_process`)."""
    from transformers.utils import is_accelerate_available

    texts, tokenizer, _, _ = lm
    loops = {
        "ours": lambda: in_fresh_process(train_ours, config, texts, tokenizer, cfg, steps, skip, workdir / "ours"),
        "trainer_padded": lambda: in_fresh_process(
            train_with_hf_trainer_padded, config, texts, tokenizer, cfg, steps, skip, workdir / "trainer_padded"
        ),
        "trainer": lambda: in_fresh_process(
            train_with_hf_trainer, config, texts, tokenizer, cfg, steps, skip, workdir / "trainer"
        ),
    }
    why_not = None
    if not is_accelerate_available():
        why_not = "transformers.Trainer needs the accelerate package (pip install accelerate)"
        say(f"[training] Trainer baseline not measured: {why_not}")
        loops = {"ours": loops["ours"]}
    names = list(loops)
    runs = {}
    for name in names[first % len(names) :] + names[: first % len(names)]:
        runs[name] = loops[name]()
        say(
            f"[training] {workdir.name}: {LOOP_LABELS[name]} {runs[name].tokens_per_s:,.0f} corpus tokens/s "
            f"over steps {skip + 1}-{steps}"
        )
    ours, padded, trainer = runs["ours"], runs.get("trainer_padded"), runs.get("trainer")
    return TrainingRound(
        ours=ours,
        trainer=trainer,
        trainer_padded=padded,
        speedup=ours.tokens_per_s / padded.tokens_per_s if padded else None,
        packed_speedup=ours.tokens_per_s / trainer.tokens_per_s if trainer else None,
        trainer_missing=why_not,
    )


def measure_training(config, lm, limits: dict | None, sizes: Sizes, workdir: Path) -> Training:
    """``limits``: the machine's matmul FLOP/s by precision (section 1), for the MFU; None: no MFU."""
    texts, tokenizer, _, cfg = lm
    documents = tokenize_documents(tokenizer, texts)
    full_batches = blocks_per_epoch(documents, cfg.block_size) // cfg.batch_size
    steps = min(sizes.train_steps, full_batches)  # within epoch 0: every batch full, same blocks for both
    if steps < 2:
        raise RuntimeError(f"the corpus holds {full_batches} full batches; the benchmark needs at least 2")
    skip = max(1, min(sizes.skip_steps, steps // 2))
    # This host's speed drifts over minutes, so the three loops run back to back in each round, in
    # an order rotated from round to round, and the ratio is taken within a round; the page shows
    # the median round and every round's ratio.
    rounds = [
        train_round(config, lm, cfg, steps, skip, workdir / f"round_{number}", first=number - 1)
        for number in range(1, max(1, sizes.training_rounds) + 1)
    ]
    ranked = sorted(rounds, key=lambda r: r.speedup if r.speedup is not None else r.ours.tokens_per_s)
    median = ranked[(len(ranked) - 1) // 2]  # the lower one of two: a target is not met by the luckier round
    ours, trainer = median.ours, median.trainer
    fpt = flops_per_token(ours.model, cfg.block_size)
    peak = (limits or {}).get(cfg.precision)
    for run in filter(None, (ours, trainer)):
        run.model_flops_per_s = fpt * run.tokens_per_s
        run.mfu = run.model_flops_per_s / peak if peak else None
    say(
        f"[training] ours: model {fpt / 1e6:.1f} MFLOP/token, {ours.model_flops_per_s / 1e9:,.1f} GFLOP/s"
        + (f", MFU {ours.mfu:.1%}" if peak else "")
        + (
            f"; ours ÷ Trainer {median.speedup:.2f}× (÷ Trainer on packed blocks {median.packed_speedup:.2f}×)"
            if median.speedup
            else ""
        )
    )
    model_section = config["model"]
    return Training(
        median=median,
        median_round=next(i for i, r in enumerate(rounds) if r is median) + 1,
        round_speedups=[r.speedup for r in rounds],
        round_packed_speedups=[r.packed_speedup for r in rounds],
        round_tokens_per_s=[r.ours.tokens_per_s for r in rounds],
        flops_per_token=fpt,
        steps=steps,
        skip=skip,
        precision=cfg.precision,
        batch_size=cfg.batch_size,
        block_size=cfg.block_size,
        documents=len(texts),
        vocabulary=len(tokenizer),
        parameters=sum(p.numel() for p in ours.model.parameters()),
        model=f"{model_section['n_layer']} layers × {model_section['n_embd']} wide, {model_section['n_head']} heads",
    )
