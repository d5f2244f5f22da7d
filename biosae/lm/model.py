"""Stage 2: the language model. Build (scratch GPT-2 or pretrained), train (mixed training), save.

The training loop is plain and visible in one function (nanoGPT style): lr schedule, forward,
backward, clip, step, log, checkpoint. Packed sequences: every epoch shuffles the documents,
joins them with end-of-text tokens and cuts the stream into blocks; the loss covers every token
of the text (biographies and the whole QA text, question included), as in Allen-Zhu & Li.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from biosae.devices import pick_device
from biosae.errors import BiosaeError
from biosae.io import atomic_directory, existing_version, load_tensors, read_json, save_tensors, write_json, write_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingConfig:
    epochs: float = 10
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_fraction: float = 0.03
    min_lr_fraction: float = 0.1
    grad_clip: float = 1.0
    precision: str = "bf16"  # bf16 or fp32; from_sections resolves the config's "auto"
    max_length: int = 512
    checkpoint_every_steps: int = 0
    seed: int = 0
    block_size: int = 128

    @classmethod
    def from_sections(cls, training: dict, model: dict, seed: int, device=None) -> TrainingConfig:
        """The config's ``training`` and ``model`` sections; ``precision: auto`` resolved for
        ``device`` (biosae.devices.pick_device; None is auto)."""
        fields = {key: training[key] for key in cls.__dataclass_fields__ if key in training}
        fields["precision"] = resolve_precision(fields.get("precision", "auto"), pick_device(device))
        block = model["block_size"] if model["init"] == "scratch" else min(training["max_length"], model["block_size"])
        return cls(**fields, seed=seed, block_size=block)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware (CUDA: Ampere or newer; CPU:
    AVX-512 BF16 or AMX, as oneDNN reports it).

    Without it, bf16 autocast is emulated and slow: on a 2-core AMD EPYC (AVX2 only) a 1024x1024
    bf16 matmul runs at 0.8 GFLOP/s against 44 in fp32, and the default LM's training step takes
    16 s instead of ~0.3 s.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` becomes ``bf16`` where the device computes it natively, ``fp32`` elsewhere."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


# ----------------------------------------------------------------------------------------------
# Model construction


def build_scratch_model(tokenizer, model_section: dict, seed: int):
    """GPT-2 architecture from random init, sized by config; special ids from our tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=model_section["block_size"],
        n_embd=model_section["n_embd"],
        n_layer=model_section["n_layer"],
        n_head=model_section["n_head"],
        # GPT2Config defaults these to 50256, outside a small vocabulary.
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(config)


def load_pretrained(name: str):
    """Model and tokenizer through from_pretrained (a hub id, cached or online, or a local dir)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from biosae.lm.tokenization import prepare_pretrained_tokenizer

    try:
        tokenizer = prepare_pretrained_tokenizer(AutoTokenizer.from_pretrained(name))
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
    except Exception as error:  # OSError, SafetensorError, a refused weights-only unpickle, ...: all "not loadable"
        raise BiosaeError(f"model.name {name!r}: cannot load a pretrained causal LM ({_first_line(error)})") from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def load_model_dir(directory, device=None):
    """Load a saved model directory (ours or any HF causal LM) for inference.

    Only ``model.safetensors`` is read (never a pickle such as ``pytorch_model.bin``), and its
    tensors must fit ``config.json`` exactly: a corrupt file, a missing, extra or misshapen tensor
    is a one-line BiosaeError naming the directory, never a model with random weights in the gaps.
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    from biosae.lm.tokenization import prepare_pretrained_tokenizer

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise BiosaeError(f"{directory}: not a model directory (no config.json)")
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # its load report is a page; our error below is the line
    try:
        tokenizer = prepare_pretrained_tokenizer(AutoTokenizer.from_pretrained(str(directory)))
        # safetensors only: a pytorch_model.bin (a pickle) next to a missing model.safetensors is refused.
        model, info = AutoModelForCausalLM.from_pretrained(
            str(directory),
            dtype=torch.float32,
            use_safetensors=True,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
        )
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        raise BiosaeError(f"{directory}: cannot load the model ({_first_line(error)})") from None
    finally:
        transformers_logging.set_verbosity(verbosity)
    # A weight file that doesn't fit config.json would otherwise load with random tensors in the gaps.
    if info["mismatched_keys"]:
        name, found, expected = sorted(info["mismatched_keys"])[0]
        raise BiosaeError(
            f"{directory}: tensor {name!r} has shape {tuple(found)}, config.json expects {tuple(expected)}"
        )
    for kind in ("missing", "unexpected"):
        keys = sorted(info[f"{kind}_keys"])
        if keys:
            raise BiosaeError(
                f"{directory}: weights don't fit config.json ({len(keys)} tensors {kind}, e.g. {keys[0]!r})"
            )
    model.eval()
    if device is not None:
        model.to(device)
    return model, tokenizer


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


# ----------------------------------------------------------------------------------------------
# Data: packed blocks


def tokenize_documents(tokenizer, texts: list[str]) -> list[list[int]]:
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [ids + [eos] for ids in encoded]


def pack_epoch(documents: list[list[int]], block_size: int, seed: int, epoch: int) -> torch.Tensor:
    """Shuffle documents (order fixed by seed and epoch, so resuming is exact) and cut into blocks."""
    order = np.random.default_rng([seed, epoch]).permutation(len(documents))
    stream = np.fromiter((t for i in order for t in documents[i]), dtype=np.int64)
    n_blocks = len(stream) // block_size
    if n_blocks == 0:
        raise BiosaeError(f"training corpus has {len(stream)} tokens, fewer than one block of {block_size}")
    return torch.from_numpy(stream[: n_blocks * block_size].reshape(n_blocks, block_size))


def blocks_per_epoch(documents: list[list[int]], block_size: int) -> int:
    return sum(len(d) for d in documents) // block_size


# ----------------------------------------------------------------------------------------------
# Schedule, FLOPs


def learning_rate(step: int, total_steps: int, cfg: TrainingConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr_fraction * lr."""
    warmup = max(1, int(cfg.warmup_fraction * total_steps))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    floor = cfg.lr * cfg.min_lr_fraction
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))


def flops_per_token(model, seq_len: int) -> float:
    """Training FLOPs per token: 6 * parameters + attention (PaLM appendix B, as nanoGPT)."""
    n_params = sum(p.numel() for p in model.parameters())
    cfg = model.config
    n_layer = getattr(cfg, "n_layer", getattr(cfg, "num_hidden_layers", 0))
    width = getattr(cfg, "n_embd", getattr(cfg, "hidden_size", 0))
    return 6 * n_params + 12 * n_layer * width * seq_len


def next_token_loss(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each position's logits against the next token (the last position has none).

    The targets are shifted and padded with the ignored index, as Hugging Face's causal-LM loss
    does, instead of slicing ``logits[:, :-1]``: the slice copies the whole logits tensor (and its
    gradient) every step. The same mean, over the same ``B * (T - 1)`` positions.
    """
    targets = F.pad(input_ids[:, 1:], (0, 1), value=-100)
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)


def make_optimizer(model, cfg: TrainingConfig):
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel per step over all parameters, as transformers.Trainer's default
    # (adamw_torch_fused); on the CPU the unfused path loops per parameter (18.6 ms against 5.5 ms
    # a step on the default model). Devices without a fused kernel keep the loop.
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, fused=fused)


# ----------------------------------------------------------------------------------------------
# Resumable checkpoints (safetensors + JSON; never pickle)


def config_fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def corpus_fingerprint(documents: list[list[int]]) -> str:
    """sha256 of the tokenized corpus, document boundaries included: a corpus of the same size
    but other text (or the same text under another tokenizer) gives another fingerprint."""
    lengths = np.fromiter(map(len, documents), dtype=np.int64, count=len(documents))
    tokens = np.fromiter(itertools.chain.from_iterable(documents), dtype=np.int64, count=int(lengths.sum()))
    digest = hashlib.sha256(lengths.tobytes())
    digest.update(tokens.tobytes())
    return digest.hexdigest()


def save_checkpoint(directory, model, optimizer, state: dict) -> None:
    """Model weights, AdamW moments and loop state, written atomically as one directory."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_state = optimizer.state_dict()
    for index, slot in opt_state["state"].items():
        for key, value in slot.items():
            tensors[f"optim.{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    # Tied weights (GPT-2 wte/lm_head) share storage; safetensors wants distinct tensors.
    tensors = {k: v.clone() for k, v in tensors.items()}
    with atomic_directory(directory) as tmp:
        save_tensors(tmp / "state.safetensors", tensors)
        write_json(tmp / "state.json", state)


def load_checkpoint(directory, model, optimizer, fingerprint: str):
    """Restore a checkpoint written for the same config; None when there is none or it differs."""
    directory = existing_version(directory)
    if not (directory / "state.json").is_file():
        return None
    state = read_json(directory / "state.json")
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        log.info("checkpoint in %s is for another config; starting over", directory)
        return None
    expected = {f"model.{name}": tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    tensors = load_tensors(directory / "state.safetensors", expected_shapes=expected)
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}, strict=False)
    opt_state = optimizer.state_dict()
    restored: dict = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            restored.setdefault(int(index), {})[key] = value
    opt_state["state"] = restored
    optimizer.load_state_dict(opt_state)
    return state


# ----------------------------------------------------------------------------------------------
# The training loop

LOG_COLUMNS = ("step", "epoch", "lr", "loss", "tokens_per_s", "elapsed_s", "monitor")


def train_language_model(
    model,
    tokenizer,
    texts: list[str],
    cfg: TrainingConfig,
    final_dir,
    checkpoint_dir,
    log_csv,
    monitor=None,
    log_every: int = 10,
    progress: bool = True,
    device=None,
) -> dict:
    """Train on packed ``texts`` and save a Hugging Face directory (safetensors + tokenizer), on
    ``device`` (biosae.devices.pick_device: config ``training.device``; None is auto).

    ``monitor(model) -> dict`` is called after every epoch (e.g. QA accuracy on a sample of the
    train and unseen-person cells); its figures go into the log. A checkpoint is written after
    every epoch (and every ``checkpoint_every_steps``); a rerun with the same config resumes
    from it.
    """
    from tqdm import tqdm

    device = pick_device(device)
    torch.manual_seed(cfg.seed)
    model.to(device).train()
    documents = tokenize_documents(tokenizer, texts)
    steps_per_epoch = math.ceil(blocks_per_epoch(documents, cfg.block_size) / cfg.batch_size)
    total_steps = max(1, int(round(cfg.epochs * steps_per_epoch)))
    optimizer = make_optimizer(model, cfg)
    fingerprint = config_fingerprint(asdict(cfg), model.config.to_dict(), corpus_fingerprint(documents))

    state = load_checkpoint(checkpoint_dir, model, optimizer, fingerprint) or {
        "fingerprint": fingerprint,
        "step": 0,
        "log": [],
        "train_seconds": 0.0,
        "tokens": 0,
    }
    if state["step"]:
        log.info("resuming from %s at step %d of %d", checkpoint_dir, state["step"], total_steps)
    fpt = flops_per_token(model, cfg.block_size)
    bar = tqdm(total=total_steps, initial=state["step"], disable=not progress, unit="step", dynamic_ncols=True)
    step = state["step"]
    window_tokens, window_start = 0, time.perf_counter()
    while step < total_steps:
        epoch = step // steps_per_epoch
        blocks = pack_epoch(documents, cfg.block_size, cfg.seed, epoch)
        first_batch = step - epoch * steps_per_epoch
        for batch_index in range(first_batch, steps_per_epoch):
            if step >= total_steps:
                break
            batch = blocks[batch_index * cfg.batch_size : (batch_index + 1) * cfg.batch_size].to(device)
            if len(batch) == 0:
                break
            lr = learning_rate(step, total_steps, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            t0 = time.perf_counter()
            with autocast(device, cfg.precision):
                # use_cache=False, as transformers.Trainer sets it: no key/value cache object built
                # per training step (the loss and gradients are bitwise the same either way).
                logits = model(input_ids=batch, use_cache=False).logits
            loss = next_token_loss(logits, batch)
            if not torch.isfinite(loss):
                raise BiosaeError(
                    f"LM training: loss is {loss.item()} at epoch {epoch} step {step}; stopping before the weights go bad"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            state["train_seconds"] += time.perf_counter() - t0
            step += 1
            state["tokens"] += batch.numel()
            window_tokens += batch.numel()
            bar.update(1)
            if step % log_every == 0 or step == total_steps:
                now = time.perf_counter()
                tokens_per_s = window_tokens / max(now - window_start, 1e-9)
                window_tokens, window_start = 0, now
                bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{tokens_per_s:,.0f}")
                state["log"].append(
                    {
                        "step": step,
                        "epoch": round(step / steps_per_epoch, 3),
                        "lr": lr,
                        "loss": round(loss.item(), 5),
                        "tokens_per_s": round(tokens_per_s, 1),
                        "elapsed_s": round(state["train_seconds"], 2),
                        "monitor": "",
                    }
                )
            end_of_epoch = step % steps_per_epoch == 0 or step == total_steps
            if end_of_epoch and monitor is not None:
                model.eval()
                figures = monitor(model)
                model.train()
                state["log"].append(
                    {
                        "step": step,
                        "epoch": round(step / steps_per_epoch, 3),
                        "lr": lr,
                        "loss": round(loss.item(), 5),
                        "tokens_per_s": "",
                        "elapsed_s": round(state["train_seconds"], 2),
                        "monitor": json.dumps(figures),
                    }
                )
                log.info("epoch %.2f: %s", step / steps_per_epoch, figures)
            every = cfg.checkpoint_every_steps
            if end_of_epoch or (every and step % every == 0):
                state["step"] = step
                save_checkpoint(checkpoint_dir, model, optimizer, state)
    bar.close()

    model.eval()
    with atomic_directory(final_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    write_log_csv(log_csv, state["log"])
    seconds = state["train_seconds"]
    summary = {
        "steps": total_steps,
        "tokens": state["tokens"],
        "train_seconds": round(seconds, 1),
        "tokens_per_s": round(state["tokens"] / max(seconds, 1e-9), 1),
        "model_flops_per_s": round(fpt * state["tokens"] / max(seconds, 1e-9), 1),
        "flops_per_token": fpt,
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": device.type,
        "precision": cfg.precision,
    }
    return summary


def write_log_csv(path, entries: list[dict]) -> None:
    lines = [",".join(LOG_COLUMNS)]
    for entry in entries:
        cells = []
        for column in LOG_COLUMNS:
            value = entry.get(column, "")
            text = str(value)
            cells.append('"' + text.replace('"', '""') + '"' if ("," in text or '"' in text) else text)
        lines.append(",".join(cells))
    write_text(path, "\n".join(lines) + "\n")


def measure_matmul_flops(dtype=torch.float32, size: int = 1024, seconds: float = 1.0, device=None) -> float:
    """Sustained matrix-product FLOP/s of ``device`` (None: auto) in ``dtype`` (the MFU denominator)."""
    device = pick_device(device)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    (a @ b).sum().item()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        (a @ b)
        count += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * size**3 * count / (time.perf_counter() - start)


def save_untrained_copy(trained_dir, out_dir, seed: int) -> None:
    """The same architecture and tokenizer as ``trained_dir`` with fresh random weights.

    This is the baseline that tells what the pipeline finds in a model that learned nothing:
    with one shared question frame, rule information is partly present in any model's
    answer-position state simply because the attribute word is in the prompt.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(str(trained_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(trained_dir))
    torch.manual_seed(seed + 1_000_003)
    model = AutoModelForCausalLM.from_config(config)
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
