"""Training of the supervised SAE: split, standardize, anneal, step, log, checkpoint — in that order.

Every layer of an LM's layer profile is trained in one call (:func:`train_sae_layers`, the layers
stacked on the SAE's layer axis, biosae.sae.layer_axis); :func:`train_sae` is the one-layer case.

Determinism: one seed (``cfg.seed``) fixes the model's initialization, the validation split, each
epoch's batch order and the Gumbel noise, so two runs on the same CPU and data give identical
weights, and a run resumed from a checkpoint gives the weights of the uninterrupted run.

Checkpoints (``checkpoint_dir``) hold ``state.safetensors`` (every layer's model, optimizer state,
RNG state) and ``state.json`` (config, data fingerprint, finished epochs, log rows per layer); no pickle anywhere. They
are written at the end of an epoch by replacing the directory whole: once ``checkpoint_every_s``
seconds have passed since the last one, and always after the call's last epoch. They are left in
place after a successful run, so a rerun with the same config and data resumes at the end and
returns at once.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from biosae.errors import BiosaeError
from biosae.io import atomic_directory, existing_version, load_tensors, read_json, save_tensors, write_json, write_text
from biosae.sae.model import LOSS_TERMS, SAEConfig, SupervisedSAE, sae_loss

LOG_COLUMNS = (
    "epoch",
    "temperature",
    *LOSS_TERMS,
    "total",
    "train_slot_accuracy",
    "validation_slot_accuracy",
    "validation_value_accuracy",
    "validation_majority_value_accuracy",
)
CHECKPOINT_TENSORS = "state.safetensors"
CHECKPOINT_STATE = "state.json"
# A checkpoint of the default profile (5 layers: weights and Adam moments, 18 MB) takes 0.04-0.10 s
# to write: 4-10 s of a ~67 s training if written after every epoch. A kill loses at most this much.
CHECKPOINT_EVERY_S = 30.0


def temperature_at(cfg: SAEConfig, epoch: int) -> float:
    """Gumbel temperature of 1-based ``epoch``: linear from temp_start (epoch 1) to temp_end (last epoch).

    Annealed per epoch rather than per step so that the temperature is a column of the epoch log
    and a resumed run needs nothing but the epoch number to continue the schedule.
    """
    if cfg.epochs == 1:
        return cfg.temp_start
    fraction = (epoch - 1) / (cfg.epochs - 1)
    return cfg.temp_start + fraction * (cfg.temp_end - cfg.temp_start)


def validation_split(rule_idx: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """BoolTensor ``[N]``, True for validation rows: ``round(fraction * n_r)`` random rows of each rule r.

    Stratified by rule so that every slot is validated even when rules are unbalanced.
    """
    generator = torch.Generator().manual_seed(seed)
    rules = rule_idx.cpu()
    mask = torch.zeros(len(rules), dtype=torch.bool)
    for rule in sorted(set(rules.tolist())):
        rows = (rules == rule).nonzero().flatten()
        count = int(round(fraction * len(rows)))
        mask[rows[torch.randperm(len(rows), generator=generator)[:count]]] = True
    return mask.to(rule_idx.device)


def majority_value_baseline(
    rule_idx: torch.Tensor, value_target: torch.Tensor, train_mask: torch.Tensor
) -> torch.Tensor:
    """Predictions LongTensor ``[N]``: for every row, the most frequent candidate of its rule among train rows.

    Ties go to the smaller candidate index; a rule without train rows predicts candidate 0.
    Accuracy on any subset is then ``(predictions == value_target)[subset].float().mean()``.
    """
    majority = {}
    for rule in set(rule_idx.tolist()):
        targets = value_target[(rule_idx == rule) & train_mask]
        majority[rule] = int(torch.bincount(targets).argmax()) if len(targets) else 0
    return torch.tensor([majority[rule] for rule in rule_idx.tolist()], dtype=torch.long, device=rule_idx.device)


def _epoch_batches(train_rows: torch.Tensor, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """Shuffled batches of ``train_rows``; the order depends only on (seed, epoch), so a resumed run repeats it.

    A trailing batch of a single row joins the previous one: the covariance term needs two rows.
    """
    generator = torch.Generator().manual_seed(seed * 2**20 + epoch)
    order = train_rows[torch.randperm(len(train_rows), generator=generator).to(train_rows.device)]
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2] = torch.cat([batches[-2], batches.pop()])
    return batches


def _check_inputs(activations, rule_idx, value_target, cfg: SAEConfig, layer_names: list[str]) -> None:
    for name, layer in zip(layer_names, activations):
        if layer.ndim != 2 or layer.shape[1] != cfg.d_model:
            raise BiosaeError(
                f"SAE training: activations{name} have shape {tuple(layer.shape)}, expected [N, {cfg.d_model}]"
            )
        if not (len(rule_idx) == len(value_target) == len(layer)):
            raise BiosaeError(
                f"SAE training: {len(layer)} activations{name}, {len(rule_idx)} rule indices, "
                f"{len(value_target)} value targets (must be equal)"
            )
        bad = ~torch.isfinite(layer).all(dim=1)
        if bad.any():
            raise BiosaeError(
                f"SAE training: activations{name} contain nan or inf in {int(bad.sum())} rows "
                f"(first: row {int(bad.nonzero()[0])})"
            )
    if ((rule_idx < 0) | (rule_idx >= cfg.n_slots)).any():
        raise BiosaeError(f"SAE training: rule indices must lie in [0, {cfg.n_slots})")
    sizes = torch.tensor(cfg.value_vocab_sizes, device=rule_idx.device)[rule_idx]
    if ((value_target < 0) | (value_target >= sizes)).any():
        row = int(((value_target < 0) | (value_target >= sizes)).nonzero()[0])
        raise BiosaeError(
            f"SAE training: value target {int(value_target[row])} of row {row} is outside rule "
            f"{int(rule_idx[row])}'s {int(sizes[row])} candidates"
        )


def _data_fingerprint(*tensors: torch.Tensor) -> str:
    """sha256 of the training data, so a checkpoint is never resumed on different activations."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _check_finite(losses: dict[str, torch.Tensor], epoch: int, step: int, layer_names: list[str]) -> None:
    """Every term is ``[L]``; a nan or inf names the term, the layer (when several), epoch and step."""
    if bool(torch.isfinite(torch.stack(list(losses.values()))).all()):
        return
    for name, values in losses.items():
        for layer_name, value in zip(layer_names, values):
            if not torch.isfinite(value):
                kind = "nan" if torch.isnan(value) else "inf"
                raise BiosaeError(
                    f"SAE training: loss term {name!r}{layer_name} is {kind} at epoch {epoch} step {step}"
                )


def _accuracy(predicted: torch.Tensor, target: torch.Tensor) -> float:
    return float((predicted == target).float().mean()) if len(target) else math.nan


def _write_log(path, history: list[dict]) -> None:
    def cell(value):
        return str(value) if isinstance(value, int) else format(value, ".6g")

    lines = [",".join(LOG_COLUMNS)]
    lines += [",".join(cell(row[column]) for column in LOG_COLUMNS) for row in history]
    write_text(path, "\n".join(lines) + "\n")


def _save_checkpoint(directory, model, optimizer, epoch: int, histories: list[list[dict]], fingerprint: str) -> None:
    tensors = {f"model.{name}": tensor for name, tensor in model.state_dict().items()}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"optimizer.{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    tensors["rng.cpu"] = torch.get_rng_state()
    device = next(model.parameters()).device
    if device.type == "cuda":  # Gumbel noise on a GPU comes from that device's generator
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    state = {"cfg": model.cfg.to_dict(), "data_sha256": fingerprint, "epoch": epoch, "history": histories}
    with atomic_directory(directory) as tmp:
        save_tensors(tmp / CHECKPOINT_TENSORS, tensors)
        write_json(tmp / CHECKPOINT_STATE, state)


def _resume(directory, model, optimizer, fingerprint: str) -> tuple[int, list[list[dict]]]:
    """Restore a checkpoint of this exact config and data (every layer's); return (finished epochs,
    log rows per layer), (0, []) if none."""
    directory = existing_version(directory)
    state_path = directory / CHECKPOINT_STATE
    if not state_path.is_file():
        return 0, []
    state = read_json(state_path)
    if state.get("cfg") != model.cfg.to_dict() or state.get("data_sha256") != fingerprint:
        print(f"SAE training: ignoring checkpoint {directory} (other config or data); starting over", file=sys.stderr)
        return 0, []
    expected = {f"model.{name}": tuple(t.shape) for name, t in model.state_dict().items()}
    tensors = load_tensors(Path(directory) / CHECKPOINT_TENSORS, expected_shapes=expected)
    device = next(model.parameters()).device
    model.load_state_dict({name: tensors[f"model.{name}"] for name in model.state_dict()})
    optimizer_state = optimizer.state_dict()
    optimizer_state["state"] = {}
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            optimizer_state["state"].setdefault(int(index), {})[key] = tensor
    optimizer.load_state_dict(optimizer_state)
    torch.set_rng_state(tensors["rng.cpu"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    return int(state["epoch"]), list(state["history"])


def train_sae(
    activations: torch.Tensor,
    rule_idx: torch.Tensor,
    value_target: torch.Tensor,
    cfg: SAEConfig,
    log_path=None,
    checkpoint_dir=None,
    progress: bool = True,
    stop_after_epochs: int | None = None,
    checkpoint_every_s: float = CHECKPOINT_EVERY_S,
) -> tuple[SupervisedSAE, list[dict]]:
    """Train a :class:`SupervisedSAE` on ``activations`` ``[N, d]``; return (model in eval mode, log rows).

    :func:`train_sae_layers` with one layer; see there for everything else.
    """
    [(model, history)] = train_sae_layers(
        [activations],
        rule_idx,
        value_target,
        cfg,
        log_paths=None if log_path is None else [log_path],
        checkpoint_dir=checkpoint_dir,
        progress=progress,
        stop_after_epochs=stop_after_epochs,
        checkpoint_every_s=checkpoint_every_s,
    )
    return model, history


def train_sae_layers(
    activations: list[torch.Tensor] | torch.Tensor,
    rule_idx: torch.Tensor,
    value_target: torch.Tensor,
    cfg: SAEConfig,
    log_paths: list | None = None,
    checkpoint_dir=None,
    progress: bool = True,
    stop_after_epochs: int | None = None,
    layer_names: list[str] | None = None,
    checkpoint_every_s: float = CHECKPOINT_EVERY_S,
) -> list[tuple[SupervisedSAE, list[dict]]]:
    """Train one :class:`SupervisedSAE` per entry of ``activations`` (each ``[N, d]``: one layer's
    rows, the same rows in the same order for every layer; or one ``[L, N, d]`` tensor, which
    is used without a copy), all at once as one :class:`SupervisedSAE` with a layer axis; return
    (that layer's model, a stack of one in eval mode; its log rows) per layer.

    Each layer's SAE is the one it would get trained alone (biosae.sae.layer_axis says why).
    ``rule_idx[i]`` is row i's rule (its target slot), ``value_target[i]`` its answer's candidate
    index within that rule. A seeded, rule-stratified ``cfg.validation_fraction`` of rows is held
    out; each layer's ``mean``/``std`` come from its other rows. Adam at ``cfg.lr``; the Gumbel
    temperature follows :func:`temperature_at`. One log row per epoch and layer (columns
    ``LOG_COLUMNS``; loss terms are train means over the epoch's steps, accuracies are eval-mode),
    rewritten to that layer's CSV of ``log_paths`` after every epoch. A nan or inf loss term is a
    BiosaeError naming the term, the layer (``layer_names``, e.g. "layer 2", when there are
    several), the epoch and the step. ``stop_after_epochs`` ends training once that many epochs
    are done (the models are then unfinished): it simulates an interruption, to be resumed from
    ``checkpoint_dir``, which holds every layer's state (written at an epoch's end once
    ``checkpoint_every_s`` seconds have passed since the last, and after the call's last epoch).
    Tensors may live on any device; training happens there.
    """
    count = len(activations)
    if count < 1:
        raise BiosaeError("SAE training: no activations given (need at least one layer)")
    if layer_names is None:
        layer_names = [f" of layer {i}" for i in range(count)] if count > 1 else [""]
    else:
        layer_names = [f" of {name}" for name in layer_names]
    if log_paths is not None and len(log_paths) != count:
        raise BiosaeError(f"SAE training: {len(log_paths)} log paths for {count} layers")
    rule_idx, value_target = rule_idx.long(), value_target.long()
    _check_inputs(activations, rule_idx, value_target, cfg, layer_names)
    h = activations.float() if torch.is_tensor(activations) else torch.stack([layer.float() for layer in activations])
    device = h.device
    fingerprint = _data_fingerprint(h, rule_idx, value_target) if checkpoint_dir else ""

    torch.manual_seed(cfg.seed)
    validation = validation_split(rule_idx, cfg.validation_fraction, cfg.seed)
    train_rows = (~validation).nonzero().flatten()
    if len(train_rows) < 2:
        raise BiosaeError(f"SAE training: {len(train_rows)} training rows after the validation split (need >= 2)")
    h_train, h_val = h[:, train_rows], h[:, validation]
    rule_val, value_val = rule_idx[validation], value_target[validation]
    majority = majority_value_baseline(rule_idx, value_target, ~validation)[validation]
    majority_accuracy = _accuracy(majority, value_val)

    # The seed's initialization, drawn once and copied to every layer (what each layer would draw alone).
    model = SupervisedSAE(cfg, count).to(device)
    model.fit_standardization(h_train)
    # fused: one kernel per parameter and step, where foreach runs ~7 ops per tensor on the CPU
    # (the default SAE trains in ~20 s instead of ~27 s).
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)
    done, histories = _resume(checkpoint_dir, model, optimizer, fingerprint) if checkpoint_dir else (0, [])
    histories = histories or [[] for _ in range(count)]
    last = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, stop_after_epochs)

    last_checkpoint = time.monotonic()
    bar = tqdm(range(done + 1, last + 1), initial=done, total=cfg.epochs, desc="SAE", disable=not progress)
    for epoch in bar:
        temperature = temperature_at(cfg, epoch)
        model.train()
        sums = torch.zeros(len(LOSS_TERMS) + 1, count, dtype=torch.float64)  # on the CPU: MPS has no float64
        for step, batch in enumerate(_epoch_batches(train_rows, cfg.batch_size, cfg.seed, epoch), start=1):
            losses = sae_loss(model, h[:, batch], rule_idx[batch], value_target[batch], temperature, cfg)
            _check_finite(losses, epoch, step, layer_names)
            optimizer.zero_grad(set_to_none=True)
            # each layer's total reaches only its own parameters: one backward for all layers
            losses["total"].sum().backward()
            optimizer.step()
            sums += torch.stack([losses[name].detach() for name in (*LOSS_TERMS, "total")]).cpu().double() * len(batch)

        model.eval()
        with torch.no_grad():
            train_slots = model.slot_logits(h_train).argmax(dim=-1)
            val_slots = model.slot_logits(h_val).argmax(dim=-1)
            val_values = model.value_predictions(h_val, rule_val)
        means = (sums / len(train_rows)).tolist()
        for layer, history in enumerate(histories):
            row = {"epoch": epoch, "temperature": temperature}
            row.update({name: means[i][layer] for i, name in enumerate((*LOSS_TERMS, "total"))})
            row["train_slot_accuracy"] = _accuracy(train_slots[layer], rule_idx[train_rows])
            row["validation_slot_accuracy"] = _accuracy(val_slots[layer], rule_val)
            row["validation_value_accuracy"] = _accuracy(val_values[layer], value_val)
            row["validation_majority_value_accuracy"] = majority_accuracy
            history.append(row)
        bar.set_postfix(
            total=f"{histories[0][-1]['total']:.4f}", val_slot=f"{histories[0][-1]['validation_slot_accuracy']:.3f}"
        )

        if log_paths is not None:
            for path, history in zip(log_paths, histories):
                _write_log(path, history)
        if checkpoint_dir is not None and (epoch == last or time.monotonic() - last_checkpoint >= checkpoint_every_s):
            _save_checkpoint(checkpoint_dir, model, optimizer, epoch, histories, fingerprint)
            last_checkpoint = time.monotonic()
    bar.close()

    if log_paths is not None:
        for path, history in zip(log_paths, histories):
            if history:
                _write_log(path, history)  # also when a finished checkpoint left no epoch to run
    bad = [name for name, tensor in model.state_dict().items() if not torch.isfinite(tensor).all()]
    if bad:
        raise BiosaeError(f"SAE training: parameter {bad[0]!r} is nan or inf after training")
    return [(model.layer(layer), history) for layer, history in enumerate(histories)]
