"""``sae_slot_causal``: the supervised 6-slot SAE, fine-tuned so that its slots *move* the rule.

The seed's SAE (``sae_slot``) is trained to label the rule; DAS is trained to move it. This method
is the seed's SAE plus a sixth loss, ``lambda_interchange`` times an interchange cross-entropy:

- pairs: DAS's train-cell pairs (biosae.methods.das.prepare_das_prompts; base: person P asked rule
  A, source: person Q != P asked rule B != A), the evaluation's scored bases excluded;
- edit: the base takes the source's slot code with the error term kept, ``h' = h - decode(z_base)
  + decode(z_source)``. The SAE's latent is all slot code (its value heads read ``h`` itself), so
  this is exactly the interchange edit that every method's IIA scores (biosae.evaluation.edits);
  ``z`` is the deterministic eval-mode code, the one the evaluation edits with;
- loss: the frozen LM run on from the hook (the resumed last-token pass), cross-entropy of P's
  first answer token for rule B.

Training is a fine-tune of the seed's trained SAE of each layer (its five losses kept, at the
final Gumbel temperature, on batches of the train-cell rows it trained on), a few epochs per value
of ``lambda_interchange`` in a small grid; the value with the best validation IIA (DAS's held-out
train-cell persons, never an evaluation cell; ties: the smaller) is kept, and ``selection.json``
records every value's. The seed's ``sae_slot`` is not touched.

Two controls (at one layer, ``control_layer``): ``sae_slot_causal_random_targets`` (every target
the base person's answer for a random other rule, an objective with no variable behind it; its
lambda is chosen on the same random objective) and ``sae_slot_causal_no_labels`` (the seed's
recipe with ``lambda_align`` = 0 from scratch, then the same fine-tune, still without it).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from biosae.errors import BiosaeError
from biosae.io import atomic_path, read_json, write_json
from biosae.lm.prompt_cache import edited_predictions
from biosae.methods.base import FitInputs
from biosae.methods.causal_variants import METHOD, NO_LABELS, RANDOM_TARGETS
from biosae.methods.das import DASConfig, DASPrompts, pair_tensors, prepare_das_prompts
from biosae.methods.pairs import person_answer_tokens, read_training_pairs, target_tokens, write_training_pairs
from biosae.methods.sae_slot import SaeSlotMethod
from biosae.rules import RULES
from biosae.sae.model import SupervisedSAE, load_sae, sae_loss, save_sae

SELECTION_FILENAME = "selection.json"
LOG_FILENAME = "train_log.csv"
PAIRS_FILENAME = "train_pairs.csv"


@dataclass(kw_only=True)
class CausalSAEConfig:
    """The config's ``methods.sae_slot_causal`` section, and what a variant changes."""

    lambda_interchange: list[float] = field(default_factory=lambda: [0.1, 1.0])
    epochs: int = 3
    lr: float = 1e-2
    batch_size: int = 64
    sources_per_base: int = 2
    max_train_bases: int = 2000
    validation_fraction: float = 0.1
    control_layer: int = 1
    seed: int = 0
    random_targets: bool = False  # the random-targets control
    no_labels: bool = False  # the no-labels control (lambda_align = 0 throughout)

    def __post_init__(self):
        grid = [float(value) for value in self.lambda_interchange]
        if not grid or any(value < 0 for value in grid):
            raise BiosaeError(
                f"config key methods.sae_slot_causal.lambda_interchange: need >= 1 value, all >= 0, got {grid}"
            )
        self.lambda_interchange = grid
        if self.epochs < 1 or self.lr <= 0 or self.batch_size < 2:
            raise BiosaeError(
                "config keys methods.sae_slot_causal.epochs/lr/batch_size: need epochs >= 1, lr > 0, batch_size >= 2"
            )

    def pair_config(self, d_model: int) -> DASConfig:
        """DAS's config with these pair settings: the pairs and caches come from DAS's code."""
        return DASConfig(
            d_model=d_model,
            rank=1,
            batch_size=self.batch_size,
            sources_per_base=self.sources_per_base,
            max_train_bases=self.max_train_bases,
            validation_fraction=self.validation_fraction,
            seed=self.seed,
        )

    @classmethod
    def for_variant(cls, section: dict, seed: int, name: str) -> CausalSAEConfig:
        return cls(**section, seed=seed, random_targets=name == RANDOM_TARGETS, no_labels=name == NO_LABELS)


def no_labels_config(sae_cfg):
    """The seed SAE's config without the rule labels' loss (lambda_align = 0): the no-labels control's."""
    return replace(sae_cfg, lambda_align=0.0)


def random_target_rules(index, bases: np.ndarray, seed: int) -> np.ndarray:
    """Per base row, a seeded random rule other than its own among those its person has an answer for."""
    rng = np.random.default_rng([seed, 998244353])
    answers = person_answer_tokens(index)
    persons, rules = index["person_id"].to_numpy(), index["rule_idx"].to_numpy()
    chosen = np.empty(len(bases), dtype=np.int64)
    for i, base in enumerate(bases):
        known = [r for r in range(len(RULES)) if r != rules[base] and answers[persons[base]][r] is not None]
        chosen[i] = rng.choice(known)
    return chosen


def _targets(index, bases, sources, cfg: CausalSAEConfig, salt: int) -> np.ndarray:
    """Per pair, the token the edited LM should give: the base person's answer for the source's
    rule, or, for the random-targets control, for a random other rule."""
    rules = (
        random_target_rules(index, bases, cfg.seed + salt)
        if cfg.random_targets
        else index["rule_idx"].to_numpy()[sources]
    )
    return target_tokens(index, bases, rules)


def _interchange(sae: SupervisedSAE, source_z: torch.Tensor):
    """The edit giving each base row the source's slot code, error term kept."""
    return lambda h: sae(h, z_edit=source_z)


def validation_iia(sae, prompts: DASPrompts, index, activations, layer: int, targets: np.ndarray) -> float | None:
    """Share of the validation pairs (held-out train-cell persons) where the edited LM gives ``targets``."""
    if prompts.validation_cache is None:
        return None
    _, sources, _ = pair_tensors(index, prompts.validation)
    device = next(sae.parameters()).device
    with torch.no_grad():
        source_z = sae.encode(activations[torch.from_numpy(sources)].float().to(device))
        predicted, _ = edited_predictions(
            prompts.validation_cache,
            targets,
            layer,
            lambda idx: _interchange(sae, source_z[torch.from_numpy(idx)]),
        )
    return float((predicted == targets).mean())


def fine_tune(
    seed_sae: SupervisedSAE,
    model,
    prompts: DASPrompts,
    index,
    activations: torch.Tensor,
    sae_rows: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    layer: int,
    lambda_interchange: float,
    cfg: CausalSAEConfig,
    training_targets: np.ndarray,
    validation_targets: np.ndarray,
    progress=None,
) -> tuple[SupervisedSAE, list[dict]]:
    """A copy of ``seed_sae`` on the LM's device, fine-tuned with the seed's five losses plus
    ``lambda_interchange`` x the interchange cross-entropy; returns (SAE in eval mode, one log row
    per epoch).

    ``sae_rows``: the rows the seed's SAE trained on (activations, rule, value target), batches of
    which carry its five losses at each step; ``training_targets``: per training pair of
    ``prompts``, the token the edited LM should give (-1: the pair is not trained on)."""
    device = next(model.parameters()).device  # the LM's: the edit runs inside its pass
    sae = copy.deepcopy(seed_sae).to(device).train()
    sae_cfg = sae.cfg
    h_rows, rule_rows, value_rows = (tensor.to(device) for tensor in sae_rows)
    bases, sources = prompts.bases, prompts.sources
    pairs_of_base = {int(b): np.flatnonzero((bases == b) & (training_targets >= 0)) for b in prompts.unique_bases}
    cache = prompts.training_cache
    optimizer = torch.optim.Adam(sae.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # the Gumbel noise of the SAE's own losses
    history = []
    for epoch in range(1, cfg.epochs + 1):
        sums = {"sae_loss": 0.0, "interchange_loss": 0.0}
        hits, count, steps = 0, 0, 0
        for group in torch.randperm(len(cache.groups), generator=generator).tolist():
            positions = cache.groups[group][0]
            # each base's pair for this epoch, its sources taken in turn (as DAS); -1: it has none
            pools = [pairs_of_base[int(prompts.unique_bases[p])] for p in positions]
            chosen = np.array([pool[(epoch - 1) % len(pool)] if len(pool) else -1 for pool in pools])
            trained = chosen >= 0
            if not trained.any():
                continue
            # a base without a trainable pair is its own source (an identity edit), left out of the loss
            source_rows = np.where(trained, sources[np.maximum(chosen, 0)], prompts.unique_bases[positions])
            source_h = activations[torch.from_numpy(source_rows)].float().to(device)
            logits = cache.group_logits(group, layer, lambda h: _interchange(sae, sae.encode(source_h))(h))
            keep = torch.from_numpy(trained).to(logits.device)
            target = torch.from_numpy(training_targets[np.maximum(chosen, 0)]).to(logits.device)
            interchange = F.cross_entropy(logits[keep], target[keep])
            rows = torch.randint(len(h_rows), (cfg.batch_size,), generator=generator).to(device)
            terms = sae_loss(sae, h_rows[rows], rule_rows[rows], value_rows[rows], sae_cfg.temp_end, sae_cfg)
            loss = terms["total"] + lambda_interchange * interchange
            if not torch.isfinite(loss):
                raise BiosaeError(f"{METHOD} training: the loss is {loss.item()} at layer {layer}, epoch {epoch}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums["sae_loss"] += terms["total"].item()
            sums["interchange_loss"] += interchange.item()
            hits += int((logits[keep].argmax(-1) == target[keep]).sum())
            count += int(keep.sum())
            steps += 1
        sae.eval()
        validation = validation_iia(sae, prompts, index, activations, layer, validation_targets)
        sae.train()
        history.append(
            {
                "lambda_interchange": lambda_interchange,
                "epoch": epoch,
                "sae_loss": round(sums["sae_loss"] / max(steps, 1), 5),
                "interchange_loss": round(sums["interchange_loss"] / max(steps, 1), 5),
                "train_iia": round(hits / max(count, 1), 5),
                "validation_iia": None if validation is None else round(validation, 5),
            }
        )
        if progress:
            progress(history[-1])
    return sae.eval(), history


def train_causal_sae(
    seed_sae: SupervisedSAE,
    model,
    prompts: DASPrompts,
    index,
    activations: torch.Tensor,
    sae_rows,
    layer: int,
    cfg: CausalSAEConfig,
    progress=None,
) -> tuple[SupervisedSAE, list[dict], dict]:
    """Fine-tune ``seed_sae`` (its layer's trained SAE; for the no-labels control, one trained with
    lambda_align = 0) at every value of ``cfg.lambda_interchange``; return (the SAE of the best
    validation IIA, every run's log rows, the selection record). The LM is frozen meanwhile."""
    if cfg.no_labels and seed_sae.cfg.lambda_align != 0:
        raise BiosaeError(f"{NO_LABELS}: the SAE to fine-tune was trained with labels (lambda_align != 0)")
    training_targets = _targets(index, prompts.bases, prompts.sources, cfg, salt=1)
    validation_bases, validation_sources, _ = pair_tensors(index, prompts.validation)
    validation_targets = _targets(index, validation_bases, validation_sources, cfg, salt=2)
    frozen = [p.requires_grad for p in model.parameters()]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    runs, history = [], []
    try:
        device = next(model.parameters()).device
        seed_iia = validation_iia(
            copy.deepcopy(seed_sae).to(device).eval(), prompts, index, activations, layer, validation_targets
        )
        for lambda_interchange in cfg.lambda_interchange:
            sae, rows = fine_tune(
                seed_sae,
                model,
                prompts,
                index,
                activations,
                sae_rows,
                layer,
                lambda_interchange,
                cfg,
                training_targets,
                validation_targets,
                progress,
            )
            runs.append((lambda_interchange, rows[-1]["validation_iia"], sae))
            history.extend(rows)
    finally:
        for parameter, flag in zip(model.parameters(), frozen):
            parameter.requires_grad_(flag)
    # best validation IIA; ties (and no validation pairs) go to the smaller lambda
    best = max(runs, key=lambda run: (-1.0 if run[1] is None else run[1], -run[0]))
    selection = {
        "layer": layer,
        "lambda_interchange": best[0],
        "validation_iia": best[1],
        "validation_iia_by_lambda": {str(value): iia for value, iia, _ in runs},
        "seed_sae_validation_iia": seed_iia,
        "validation_targets": "random rule" if cfg.random_targets else "source rule",
        "lambda_align": seed_sae.cfg.lambda_align,
        "training_pairs": int((training_targets >= 0).sum()),
        "validation_pairs": len(validation_targets),
        "config": asdict(cfg),
    }
    return best[2].cpu(), history, selection


def prepare_prompts(model, tokenizer, index, excluded_rows, cfg: CausalSAEConfig, d_model: int) -> DASPrompts:
    """DAS's training and validation pairs and caches, with this method's pair settings."""
    return prepare_das_prompts(model, tokenizer, index, excluded_rows, cfg.pair_config(d_model))


def save_causal_sae(directory, sae, history: list[dict], selection: dict, prompts: DASPrompts) -> None:
    """The SAE (biosae.sae.model.save_sae's files), its selection record, log and pairs."""
    import pandas as pd

    directory = Path(directory)
    save_sae(directory, sae)
    write_json(directory / SELECTION_FILENAME, selection)
    with atomic_path(directory / LOG_FILENAME) as tmp:
        pd.DataFrame(history).to_csv(tmp, index=False)
    write_training_pairs(directory / PAIRS_FILENAME, prompts.training, prompts.validation)


def load_causal_sae(directory) -> tuple[SupervisedSAE, dict, set[tuple[int, int]]]:
    """(the SAE, its selection record, the (base_row, source_row) pairs it trained and validated on)."""
    directory = Path(directory)
    seen = read_training_pairs(directory / PAIRS_FILENAME, "the causal SAE's pairs")
    return load_sae(directory), read_json(directory / SELECTION_FILENAME), seen


def fit_summary(selection: dict) -> dict:
    """What metrics.json records of the training: the chosen lambda and its validation IIA, the
    seed SAE's validation IIA on the same pairs, and every grid value's."""
    summary = {
        "lambda_interchange": selection.get("lambda_interchange"),
        "validation_iia": selection.get("validation_iia"),
        "seed_sae_validation_iia": selection.get("seed_sae_validation_iia"),
        "lambda_align": selection.get("lambda_align"),
    }
    for value, iia in (selection.get("validation_iia_by_lambda") or {}).items():
        summary[f"validation_iia_at_lambda_{value}"] = iia
    return summary


class CausalSaeSlotMethod(SaeSlotMethod):
    """The fine-tuned SAE's slots: the same featurizer as ``sae_slot``, under its own name."""

    def __init__(self, sae, name: str):
        super().__init__(sae)
        self.name = name


def _fit(name: str):
    def fit(inputs: FitInputs) -> CausalSaeSlotMethod:
        sae = (inputs.causal_saes or {}).get(name)
        if sae is None:
            raise BiosaeError(f"method {name}: no trained causal SAE given at this layer")
        return CausalSaeSlotMethod(sae, name)

    return fit


fit_sae_slot_causal = _fit(METHOD)
fit_random_targets = _fit(RANDOM_TARGETS)
fit_no_labels = _fit(NO_LABELS)
