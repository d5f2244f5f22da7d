"""``das``: distributed alignment search (Geiger et al. 2024), MIB's best localization method.

A rank-k subspace with orthonormal basis R [k, d] (``torch.nn.utils.parametrizations.orthogonal``,
as MIB's code does). Interchange: ``h + (h_src - h) R^T R``, the base's component in the subspace
replaced with the source's. Training: interchange on train-cell pairs (base: person P asked rule A;
source: person Q != P asked rule B != A), cross-entropy towards P's rule-B first answer token, the
LM frozen; the edit sits at the hook layer, answer position, and only the answer token is run, on
cached prompt prefixes (biosae.lm.prompt_cache.PromptCache), so a step costs one token per pair.

A six-valued variable needs k >= 5: rank 1 can't hold it. Per-rule ablation (DAS has one
subspace for the whole variable) projects out rule r's DiffMean direction within the subspace.
No pair used for training is ever scored: the train cell's scored bases (the evaluation's causal
sample, biosae.evaluation.method_tests) are excluded from the training pool, and evaluate checks it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from biosae.errors import BiosaeError
from biosae.io import atomic_path, load_tensors, read_json, save_tensors, write_json
from biosae.lm.activations import encode_prompts
from biosae.lm.prompt_cache import PromptCache, edited_predictions
from biosae.methods.base import FitInputs, SubspaceMethod, class_means
from biosae.methods.diffmean import diffmean_directions
from biosae.methods.pairs import InterchangePairs, draw_pairs, read_training_pairs, target_tokens, write_training_pairs

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "das.safetensors"
PAIRS_FILENAME = "train_pairs.csv"
LOG_FILENAME = "train_log.csv"


@dataclass(kw_only=True)
class DASConfig:
    d_model: int
    rank: int = 8
    epochs: int = 8
    lr: float = 5e-3
    batch_size: int = 64
    sources_per_base: int = 2
    max_train_bases: int = 2000
    validation_fraction: float = 0.1
    layer: int = -1
    seed: int = 0

    def __post_init__(self):
        if not 1 <= self.rank <= self.d_model:
            raise BiosaeError(f"DAS config: rank must be in 1..d_model ({self.d_model}), got {self.rank}")


class DASSubspace(nn.Module):
    def __init__(self, d_model: int, rank: int, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.rotation = nn.utils.parametrizations.orthogonal(nn.Linear(d_model, rank, bias=False))

    def basis(self) -> torch.Tensor:
        """[rank, d], orthonormal rows."""
        return self.rotation.weight

    def interchange(self, h: torch.Tensor, source_h: torch.Tensor) -> torch.Tensor:
        basis = self.basis()
        return h + ((source_h - h) @ basis.T) @ basis


def split_training_pairs(index, excluded_rows, cfg: DASConfig) -> tuple[InterchangePairs, InterchangePairs]:
    """(training pairs, validation pairs) from the train cell's rows not in ``excluded_rows``.

    Persons are split (seeded) into training and validation, so validation pairs share no person
    with training pairs; at most ``max_train_bases`` training bases, each with ``sources_per_base``
    sources (another person, another rule) from the same side of the split.
    """
    rng = np.random.default_rng([cfg.seed, 15485863])
    train = (index["split"] == "train").to_numpy().copy()
    train[np.asarray(excluded_rows, dtype=np.int64)] = False
    rows = np.flatnonzero(train)
    persons = index["person_id"].to_numpy()
    people = np.array(sorted(set(persons[rows])))
    if len(people) < 4:
        raise BiosaeError(f"DAS: the train cell has {len(people)} persons outside the scored pairs; need at least 4")
    held = set(rng.choice(people, size=max(2, int(round(cfg.validation_fraction * len(people)))), replace=False))
    validation_rows = rows[np.isin(persons[rows], list(held))]
    training_rows = rows[~np.isin(persons[rows], list(held))]
    if len(training_rows) > cfg.max_train_bases:
        training_rows = np.sort(rng.choice(training_rows, size=cfg.max_train_bases, replace=False))
    return (
        draw_pairs(index, training_rows, training_rows, [cfg.seed, 1], cfg.sources_per_base),
        draw_pairs(index, validation_rows, validation_rows, [cfg.seed, 2], 1),
    )


def pair_tensors(index, pairs: InterchangePairs):
    """(bases, sources, targets) of the scored pairs whose base person has the source rule's answer."""
    keep = pairs.scored
    bases, sources = pairs.base_rows[keep], pairs.source_rows[keep]
    targets = target_tokens(index, bases, index["rule_idx"].to_numpy()[sources])
    keep = targets >= 0
    return bases[keep], sources[keep], targets[keep]


def interchange_accuracy(
    model, tokenizer, index, activations, layer: int, pairs: InterchangePairs, edit_for_sources, cache=None
) -> float | None:
    """Share of pairs where the LM, given the source's value, answers the base person's source-rule
    attribute. ``edit_for_sources(source_h) -> edit``. ``cache``: the bases' PromptCache, when
    built already (:class:`DASPrompts`)."""
    bases, sources, targets = pair_tensors(index, pairs)
    if len(bases) == 0:
        return None
    cache = cache or _bases_cache(model, tokenizer, index, bases)
    source_h = activations[torch.from_numpy(sources)]
    predicted, _ = edited_predictions(
        cache, targets, layer, lambda idx: edit_for_sources(source_h[torch.from_numpy(idx)])
    )
    return float((predicted == targets).mean())


def _bases_cache(model, tokenizer, index, bases, batch_size: int = 256, for_training: bool = False):
    prompts, _ = encode_prompts(tokenizer, index.iloc[bases].to_dict("records"))
    return PromptCache(model, prompts, batch_size=batch_size, for_training=for_training)


@dataclass
class DASPrompts:
    """DAS's training and validation pairs and their prompts' caches (prefix keys and values, and
    the last token's clean residual at every hook point). None of it depends on the hook layer,
    so one LM's DAS runs share it across the layer profile (the train_das job builds it once)."""

    training: InterchangePairs
    validation: InterchangePairs
    bases: np.ndarray  # the training pairs that have a target, as row arrays
    sources: np.ndarray
    targets: np.ndarray
    unique_bases: np.ndarray  # rows of the training cache, in its order
    training_cache: object  # PromptCache over unique_bases, autograd-ready
    validation_cache: object  # PromptCache over the validation pairs' bases (None: no such pair)
    settings: tuple = ()  # the config values the pairs and caches depend on (_pair_settings)


def _pair_settings(cfg: DASConfig) -> tuple:
    return cfg.seed, cfg.sources_per_base, cfg.max_train_bases, cfg.validation_fraction, cfg.batch_size


def prepare_das_prompts(model, tokenizer, index, excluded_rows, cfg: DASConfig) -> DASPrompts:
    """The pairs (:func:`split_training_pairs`) and their prompt caches, for any layer's DAS."""
    training, validation = split_training_pairs(index, excluded_rows, cfg)
    bases, sources, targets = pair_tensors(index, training)
    unique_bases = np.unique(bases)
    training_cache = _bases_cache(model, tokenizer, index, unique_bases, cfg.batch_size, for_training=True)
    validation_bases = pair_tensors(index, validation)[0]
    validation_cache = _bases_cache(model, tokenizer, index, validation_bases) if len(validation_bases) else None
    return DASPrompts(
        training,
        validation,
        bases,
        sources,
        targets,
        unique_bases,
        training_cache,
        validation_cache,
        _pair_settings(cfg),
    )


def train_das(
    model,
    tokenizer,
    index,
    activations: torch.Tensor,
    cfg: DASConfig,
    excluded_rows,
    progress=None,
    prompts: DASPrompts | None = None,
) -> tuple[DASSubspace, list[dict], InterchangePairs, InterchangePairs]:
    """Fit the subspace at ``cfg.layer`` (``activations``: that layer's); returns (subspace, log
    rows per epoch, training pairs, validation pairs). ``prompts``: :func:`prepare_das_prompts`
    of the same LM, index, excluded rows and pair settings, when another layer built it."""
    prompts = prompts or prepare_das_prompts(model, tokenizer, index, excluded_rows, cfg)
    if prompts.settings != _pair_settings(cfg):
        raise ValueError(
            f"train_das: prompts built for pair settings {prompts.settings}, the config's are {_pair_settings(cfg)}"
        )
    bases, sources, targets = prompts.bases, prompts.sources, prompts.targets
    pairs_of_base = {int(b): np.flatnonzero(bases == b) for b in prompts.unique_bases}
    cache = prompts.training_cache
    frozen = [p.requires_grad for p in model.parameters()]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    subspace = DASSubspace(activations.shape[1], cfg.rank, cfg.seed)
    optimizer = torch.optim.Adam(subspace.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    history = []
    try:
        for epoch in range(1, cfg.epochs + 1):
            total, hits, count = 0.0, 0, 0
            for group in torch.randperm(len(cache.groups), generator=generator).tolist():
                positions = cache.groups[group][0]
                # each base's pair for this epoch: its sources taken in turn
                chosen = np.array(
                    [
                        pairs_of_base[int(prompts.unique_bases[p])][
                            (epoch - 1) % len(pairs_of_base[int(prompts.unique_bases[p])])
                        ]
                        for p in positions
                    ]
                )
                source_h = activations[torch.from_numpy(sources[chosen])].float()
                logits = cache.group_logits(group, cfg.layer, lambda h: subspace.interchange(h, source_h))
                target = torch.from_numpy(targets[chosen]).to(logits.device)
                loss = F.cross_entropy(logits, target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(chosen)
                hits += int((logits.argmax(-1) == target).sum())
                count += len(chosen)
            with torch.no_grad():
                basis = subspace.basis().detach().clone()
            validation_iia = (
                None
                if prompts.validation_cache is None
                else interchange_accuracy(
                    model,
                    tokenizer,
                    index,
                    activations,
                    cfg.layer,
                    prompts.validation,
                    lambda source_h: lambda h: h + ((source_h - h) @ basis.T) @ basis,
                    cache=prompts.validation_cache,
                )
            )
            history.append(
                {
                    "epoch": epoch,
                    "loss": round(total / max(count, 1), 5),
                    "train_iia": round(hits / max(count, 1), 5),
                    "validation_iia": None if validation_iia is None else round(validation_iia, 5),
                }
            )
            if progress:
                progress(history[-1])
    finally:
        for parameter, flag in zip(model.parameters(), frozen):
            parameter.requires_grad_(flag)
    return subspace.eval(), history, prompts.training, prompts.validation


class DASMethod(SubspaceMethod):
    def __init__(self, basis: torch.Tensor, means: torch.Tensor):
        projected = diffmean_directions(means.double()).float() @ basis.T @ basis
        super().__init__("das", basis=basis, ablation_directions=projected)


def fit_das(inputs: FitInputs) -> DASMethod:
    """The trained subspace (``inputs.das_basis``, :func:`load_das`) as a method."""
    if inputs.das_basis is None:
        raise BiosaeError("method das: no trained DAS subspace given")
    return DASMethod(inputs.das_basis, class_means(inputs.train_activations, inputs.train_rule_idx))


def save_das(
    directory,
    subspace: DASSubspace,
    cfg: DASConfig,
    history: list[dict],
    training: InterchangePairs,
    validation: InterchangePairs,
    extra: dict | None = None,
) -> None:
    import pandas as pd

    directory = Path(directory)
    write_json(directory / CFG_FILENAME, {**asdict(cfg), **(extra or {})})
    save_tensors(
        directory / WEIGHTS_FILENAME,
        {"basis": subspace.basis().detach().contiguous()},
        metadata={"format": "biosae.DAS", "rank": str(cfg.rank)},
    )
    with atomic_path(directory / LOG_FILENAME) as tmp:
        pd.DataFrame(history).to_csv(tmp, index=False)
    write_training_pairs(directory / PAIRS_FILENAME, training, validation)


def load_das(directory) -> tuple[torch.Tensor, dict, set[tuple[int, int]]]:
    """(basis [rank, d], cfg dict, the set of (base_row, source_row) pairs DAS saw in training)."""

    directory = Path(directory)
    cfg = read_json(directory / CFG_FILENAME)
    tensors = load_tensors(directory / WEIGHTS_FILENAME)
    if "basis" not in tensors or tensors["basis"].ndim != 2:
        raise BiosaeError(f"{directory / WEIGHTS_FILENAME}: no 2-D 'basis' tensor")
    seen = read_training_pairs(directory / PAIRS_FILENAME, "DAS's training pairs")
    return tensors["basis"].float(), cfg, seen


def das_fit_summary(cfg: dict, log_csv) -> dict:
    """What metrics.json records of DAS's training: rank, epochs, and the last epoch's loss and
    train / validation IIA (validation: held-out train-cell persons, never an evaluation cell)."""
    import pandas as pd

    last = pd.read_csv(log_csv).iloc[-1].to_dict()
    return {
        "rank": cfg.get("rank"),
        "epochs": cfg.get("epochs"),
        "loss": last.get("loss"),
        "train_iia": last.get("train_iia"),
        "validation_iia": last.get("validation_iia"),
    }
