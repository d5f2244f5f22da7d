"""The supervised 6-slot SAE of the seed: one slot per rule, a value head per slot.

Shapes: ``h`` is ``[N, d_model]`` in the LM's raw activation space; ``z`` is ``[N, n_slots]``, a
point on the probability simplex (a soft slot assignment). Internally the model works on the
standardized activation ``x = (h - mean) / std``; ``mean`` and ``std`` are buffers fitted on the
training rows and saved with the weights, so a checkpoint needs nothing else to be applied.

The loss terms are the seed's, each a small function below so that it can be checked by hand:
recon (MSE in standardized space), sparse (entropy of z), align (slot CE against the rule), indep
(``||Cov(z) - I||_F^2``, diagonal included) and value (CE of the value head of the row's rule).

Checkpoints follow SAELens: ``cfg.json`` (the :class:`SAEConfig`) next to ``sae.safetensors``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from biosae.errors import BiosaeError
from biosae.io import load_tensors, read_json, save_tensors, write_json

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae.safetensors"
STD_FLOOR = 1e-6  # a constant activation dimension must not divide by zero when standardized
LOG_FLOOR = 1e-12  # z log z at z = 0 is 0; the floor keeps log finite without changing the value


@dataclass(kw_only=True)
class SAEConfig:
    """Architecture and training hyperparameters; saved verbatim as ``cfg.json``."""

    d_model: int
    value_vocab_sizes: list[int]  # per rule: number of candidate answer first tokens
    n_slots: int = 6
    temp_start: float = 1.0
    temp_end: float = 0.1
    lambda_recon: float = 1.0
    lambda_sparse: float = 1e-3
    lambda_align: float = 1.0
    lambda_indep: float = 1e-2
    lambda_value: float = 0.5
    epochs: int = 100
    lr: float = 1e-3
    batch_size: int = 64
    validation_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self):
        self.value_vocab_sizes = [int(size) for size in self.value_vocab_sizes]
        problems = []
        if self.d_model < 1:
            problems.append(f"d_model must be >= 1, got {self.d_model}")
        if len(self.value_vocab_sizes) != self.n_slots:
            problems.append(
                f"value_vocab_sizes has {len(self.value_vocab_sizes)} entries, n_slots is {self.n_slots}"
            )
        if any(size < 1 for size in self.value_vocab_sizes):
            problems.append(f"value_vocab_sizes must all be >= 1, got {self.value_vocab_sizes}")
        if not (self.temp_start > 0 and self.temp_end > 0):
            problems.append(f"temperatures must be > 0, got {self.temp_start} -> {self.temp_end}")
        if self.epochs < 1 or self.lr <= 0:
            problems.append(f"epochs must be >= 1 and lr > 0, got {self.epochs} and {self.lr}")
        if self.batch_size < 2:  # the covariance term needs two rows per batch
            problems.append(f"batch_size must be >= 2, got {self.batch_size}")
        if not 0 <= self.validation_fraction < 1:
            problems.append(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if problems:
            raise BiosaeError("SAE config: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SAEConfig":
        """Build a config from exactly its own keys; an unknown or missing key is a BiosaeError."""
        if not isinstance(data, dict):
            raise BiosaeError(f"SAE config: expected a mapping, got {type(data).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = [key for key in data if key not in names]
        if unknown:
            raise BiosaeError(f"SAE config: unknown key {unknown[0]!r} (known: {', '.join(names)})")
        missing = [name for name in names if name not in data]
        if missing:
            raise BiosaeError(f"SAE config: missing key {missing[0]!r}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as error:  # a value of the wrong type, e.g. d_model: "32"
            raise BiosaeError(f"SAE config: bad value ({error})") from None


class SupervisedSAE(nn.Module):
    """Encoder Linear(d -> n_slots), decoder Linear(n_slots -> d), one value head Linear(d -> V_k) per slot."""

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mean", torch.zeros(cfg.d_model))
        self.register_buffer("std", torch.ones(cfg.d_model))
        self.encoder = nn.Linear(cfg.d_model, cfg.n_slots)
        self.decoder = nn.Linear(cfg.n_slots, cfg.d_model)
        self.value_heads = nn.ModuleList(nn.Linear(cfg.d_model, size) for size in cfg.value_vocab_sizes)

    @torch.no_grad()
    def fit_standardization(self, h: torch.Tensor) -> None:
        """Set ``mean``/``std`` to the per-dimension statistics of ``h`` (std floored at STD_FLOOR)."""
        self.mean.copy_(h.mean(dim=0))
        self.std.copy_(h.std(dim=0, unbiased=False).clamp_min(STD_FLOOR))

    def standardize(self, h: torch.Tensor) -> torch.Tensor:
        return (h - self.mean) / self.std

    def slot_logits(self, h: torch.Tensor) -> torch.Tensor:
        """``[N, n_slots]`` slot logits of raw activations ``h``."""
        return self.encoder(self.standardize(h))

    def slots_from_logits(self, logits: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """Gumbel-softmax soft sample at ``temperature``; with None, the deterministic eval-mode z.

        The eval-mode z is ``softmax(logits / temp_end)``: the noiseless counterpart of the sample
        the model saw at the end of training, so evaluation sees the sharpness it was trained for,
        and the same ``h`` always gives the same ``z`` (interventions are reproducible).
        """
        if temperature is None:
            return torch.softmax(logits / self.cfg.temp_end, dim=-1)
        return F.gumbel_softmax(logits, tau=temperature, hard=False, dim=-1)

    def encode(self, h: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """``[N, n_slots]`` slot weights summing to 1 per row; random only when ``temperature`` is given."""
        return self.slots_from_logits(self.slot_logits(h), temperature)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction of ``z`` in the raw activation space (``mean + std * decoder(z)``)."""
        return self.mean + self.std * self.decoder(z)

    def forward(
        self,
        h: torch.Tensor,
        z_edit: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = None,
        error_term: bool = True,
    ) -> torch.Tensor:
        """Without ``z_edit``: the reconstruction ``decode(encode(h))``.

        With ``z_edit`` (a tensor shaped like z, or a function z -> z'): the edited activation. With
        ``error_term`` it is ``decode(z') + (h - decode(z))``, computed as ``h + (decode(z') -
        decode(z))`` so that an identity edit returns ``h`` itself: with a nearly one-hot z, all
        person-specific information lives in the error term and must survive the edit. Without
        ``error_term`` it is the bare ``decode(z')``.
        """
        z = self.encode(h)
        if z_edit is None:
            return self.decode(z)
        z_new = z_edit(z) if callable(z_edit) else z_edit
        if tuple(z_new.shape) != tuple(z.shape):
            raise BiosaeError(f"SAE forward: edited z has shape {tuple(z_new.shape)}, expected {tuple(z.shape)}")
        if not error_term:
            return self.decode(z_new)
        return h + (self.decode(z_new) - self.decode(z))

    def value_logits(self, h: torch.Tensor, z: torch.Tensor, rule_idx: torch.Tensor) -> torch.Tensor:
        """``[N, max(value_vocab_sizes)]`` logits of each row's rule head, padded with -inf.

        Row i is ``head[rule_idx[i]](standardize(h_i) * z[i, rule_idx[i]])``: the head reads the
        whole activation (which carries the person's identity, so it can learn person-specific
        answers), gated by the row's weight on its rule's slot. Padding is -inf so that softmax,
        cross-entropy and argmax never pick a candidate the rule doesn't have.
        """
        x = self.standardize(h)
        gated = x * z.gather(1, rule_idx.unsqueeze(-1))
        # Rows grouped by rule (one sort), each head run once on its contiguous block: no boolean
        # mask, index_put or host sync per head. The same function as masking rows per head.
        order = torch.argsort(rule_idx, stable=True)
        counts = torch.bincount(rule_idx, minlength=len(self.value_heads)).tolist()
        width = max(self.cfg.value_vocab_sizes)
        blocks = [
            F.pad(head(rows), (0, width - head.out_features), value=float("-inf"))
            for head, rows in zip(self.value_heads, gated[order].split(counts))
        ]
        return torch.cat(blocks)[torch.argsort(order)]

    @torch.no_grad()
    def value_predictions(self, h: torch.Tensor, rule_idx: torch.Tensor) -> torch.Tensor:
        """LongTensor ``[N]``: each row's predicted candidate index within its rule (eval-mode z)."""
        return self.value_logits(h, self.encode(h), rule_idx).argmax(dim=-1)


# --- loss terms -------------------------------------------------------------------------------


# Each term takes a batch ``[N, ...]`` and returns a scalar, or a stack of batches ``[L, N, ...]``
# (every layer of the profile, biosae.sae.layer_stack) and returns ``[L]``: one definition for both.


def reconstruction_loss(x: torch.Tensor, x_recon: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all elements of a batch (both in standardized space)."""
    return (x_recon - x).pow(2).mean(dim=(-2, -1))


def slot_entropy(z: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``H(z) = -sum_k z_k log z_k`` (0 for one-hot, log K for uniform)."""
    return -(z * z.clamp_min(LOG_FLOOR).log()).sum(dim=-1).mean(dim=-1)


def _mean_cross_entropy(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the cross-entropy of ``scores`` ``[..., N, C]`` against ``target`` ``[N]``."""
    flat = F.cross_entropy(scores.reshape(-1, scores.shape[-1]), target.expand(scores.shape[:-1]).reshape(-1),
                           reduction="none")
    return flat.view(scores.shape[:-1]).mean(dim=-1)


def alignment_loss(slot_logits: torch.Tensor, rule_idx: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of slot logits against each row's rule."""
    return _mean_cross_entropy(slot_logits, rule_idx)


def independence_loss(z: torch.Tensor) -> torch.Tensor:
    """``||Cov(z) - I||_F^2`` over the batch: the full (unbiased) covariance, diagonal included."""
    rows = z.shape[-2]
    if rows < 2:
        raise BiosaeError(f"SAE loss: the covariance term needs at least 2 rows, got {rows}")
    centered = z - z.mean(dim=-2, keepdim=True)
    cov = centered.transpose(-2, -1) @ centered / (rows - 1)
    return (cov - torch.eye(z.shape[-1], dtype=z.dtype, device=z.device)).pow(2).sum(dim=(-2, -1))


def value_loss(value_logits: torch.Tensor, value_target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each row's value logits against its candidate index."""
    return _mean_cross_entropy(value_logits, value_target)


LOSS_TERMS = ("recon", "sparse", "align", "indep", "value")


def sae_loss(
    model: SupervisedSAE,
    h: torch.Tensor,
    rule_idx: torch.Tensor,
    value_target: torch.Tensor,
    temperature: float | None,
    cfg: SAEConfig,
) -> dict[str, torch.Tensor]:
    """The seed's loss on one batch: keys recon, sparse, align, indep, value and total.

    ``z`` is a Gumbel-softmax sample at ``temperature`` (the deterministic eval-mode z when None);
    the same ``z`` feeds the reconstruction, the entropy, the covariance and the value gate.
    ``total = sum(lambda_term * term)`` with the lambdas of ``cfg``. Training computes these
    terms for every layer of the profile at once (biosae.sae.layer_stack.stacked_sae_loss, tested
    equal to this, layer by layer); this one-layer form is the definition.
    """
    x = model.standardize(h)
    logits = model.encoder(x)
    z = model.slots_from_logits(logits, temperature)
    terms = {
        "recon": reconstruction_loss(x, model.decoder(z)),
        "sparse": slot_entropy(z),
        "align": alignment_loss(logits, rule_idx),
        "indep": independence_loss(z),
        "value": value_loss(model.value_logits(h, z, rule_idx), value_target),
    }
    terms["total"] = sum(getattr(cfg, f"lambda_{name}") * terms[name] for name in LOSS_TERMS)
    return terms


# --- checkpoints ------------------------------------------------------------------------------


def save_sae(directory, model: SupervisedSAE) -> None:
    """Write ``cfg.json`` and ``sae.safetensors`` (every parameter and buffer), each atomically."""
    directory = Path(directory)
    write_json(directory / CFG_FILENAME, model.cfg.to_dict())
    save_tensors(directory / WEIGHTS_FILENAME, model.state_dict(), metadata={"format": "biosae.SupervisedSAE"})


def load_sae(directory) -> SupervisedSAE:
    """Rebuild the SAE saved by :func:`save_sae`, on CPU, in eval mode.

    Anything but a safetensors file whose tensors match ``cfg.json`` exactly (a pickle, a
    truncated file, a shape from another config, a missing or extra tensor) is a one-line
    BiosaeError naming the file.
    """
    directory = Path(directory)
    cfg_path, weights_path = directory / CFG_FILENAME, directory / WEIGHTS_FILENAME
    try:
        cfg = SAEConfig.from_dict(read_json(cfg_path))
    except BiosaeError as error:
        message = str(error)
        raise BiosaeError(message if message.startswith(str(cfg_path)) else f"{cfg_path}: {message}") from None
    model = SupervisedSAE(cfg)
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    tensors = load_tensors(weights_path, expected_shapes=expected)
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise BiosaeError(f"{weights_path}: unexpected tensor {extra[0]!r} (not part of this SAE config)")
    bad = [name for name, tensor in tensors.items() if not torch.isfinite(tensor).all()]
    if bad:
        raise BiosaeError(f"{weights_path}: tensor {bad[0]!r} contains nan or inf")
    model.load_state_dict(tensors)
    return model.eval()

