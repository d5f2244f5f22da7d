"""The supervised 6-slot SAE of the seed: one slot per rule, a value head per slot.

Shapes: ``h`` is ``[N, d_model]`` in the LM's raw activation space; ``z`` is ``[N, n_slots]``, a
point on the probability simplex (a soft slot assignment). Internally the model works on the
standardized activation ``x = (h - mean) / std``; ``mean`` and ``std`` are buffers fitted on the
training rows and saved with the weights, so a checkpoint needs nothing else to be applied.

Layer axis (biosae.sae.layer_axis): one :class:`SupervisedSAE` holds the SAEs of ``layers`` LM
layers, each parameter and buffer ``[L, ...]``; a single layer's SAE is a stack of one, and its
methods also take the plain shapes above.

The loss terms are the seed's, each a small function below so that it can be checked by hand:
recon (MSE in standardized space), sparse (entropy of z), align (slot CE against the rule), indep
(``||Cov(z) - I||_F^2``, diagonal included) and value (CE of the value head of the row's rule).

Checkpoints follow SAELens's layout in spirit: ``cfg.json`` (the :class:`SAEConfig`) next to
``sae.safetensors``, one layer's SAE in nn.Linear's layout (``encoder.weight`` ``[n_slots,
d_model]``, ...). SAELens cannot load it: no SAELens architecture has a softmax latent
(biosae.sae.saelens).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from biosae.errors import BiosaeError
from biosae.io import load_tensors, read_json, save_tensors, write_json
from biosae.sae.layer_axis import LayerStack, stacked_parameter

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae.safetensors"
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
            problems.append(f"value_vocab_sizes has {len(self.value_vocab_sizes)} entries, n_slots is {self.n_slots}")
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
    def from_dict(cls, data: dict) -> SAEConfig:
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


class SupervisedSAE(LayerStack):
    """Per layer: encoder d -> n_slots, decoder n_slots -> d, one value head d -> V_k per slot.

    ``encoder_weight`` ``[L, d, n_slots]``, ``decoder_weight`` ``[L, n_slots, d]``,
    ``head_weights[k]`` ``[L, d, V_k]``, each with its bias ``[L, out]``; ``mean``/``std`` ``[L, d]``.
    """

    def __init__(self, cfg: SAEConfig, layers: int = 1):
        super().__init__(cfg, layers)
        # The seed's initialization is nn.Linear's, drawn in this order from the global RNG.
        encoder = nn.Linear(cfg.d_model, cfg.n_slots)
        decoder = nn.Linear(cfg.n_slots, cfg.d_model)
        heads = [nn.Linear(cfg.d_model, size) for size in cfg.value_vocab_sizes]
        self.encoder_weight = _stacked_weight(encoder, layers)
        self.encoder_bias = stacked_parameter(encoder.bias, layers)
        self.decoder_weight = _stacked_weight(decoder, layers)
        self.decoder_bias = stacked_parameter(decoder.bias, layers)
        self.head_weights = nn.ParameterList(_stacked_weight(head, layers) for head in heads)
        self.head_biases = nn.ParameterList(stacked_parameter(head.bias, layers) for head in heads)

    def slot_logits(self, h: torch.Tensor) -> torch.Tensor:
        """``[N, n_slots]`` slot logits of raw activations ``h``."""
        return self.shaped_like(h, _linear(self.standardize(self.stacked(h)), self.encoder_weight, self.encoder_bias))

    def slots_from_logits(self, logits: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """Gumbel-softmax soft sample at ``temperature``; with None, the deterministic eval-mode z.

        The eval-mode z is ``softmax(logits / temp_end)``: the noiseless counterpart of the sample
        the model saw at the end of training, so evaluation sees the sharpness it was trained for,
        and the same ``h`` always gives the same ``z`` (interventions are reproducible). The sample
        draws one ``[N, n_slots]`` Gumbel noise shared by every layer, the noise each layer draws
        when trained alone (F.gumbel_softmax's draw).
        """
        if temperature is None:
            return torch.softmax(logits / self.cfg.temp_end, dim=-1)
        noise = gumbel_noise(logits.shape[-2], logits.shape[-1], logits.device)
        return torch.softmax((logits + noise) / temperature, dim=-1)

    def encode(self, h: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """``[N, n_slots]`` slot weights summing to 1 per row; random only when ``temperature`` is given."""
        return self.slots_from_logits(self.slot_logits(h), temperature)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction of ``z`` in the raw activation space (``mean + std * decoder(z)``)."""
        decoded = _linear(self.stacked(z), self.decoder_weight, self.decoder_bias)
        return self.shaped_like(z, self.mean.unsqueeze(1) + self.std.unsqueeze(1) * decoded)

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

    def slot_directions(self, layer: int = 0) -> torch.Tensor:
        """``[n_slots, d]``: how a unit of each slot moves h in raw activation space (decode is
        affine, ``mean + std * (W z + b)``, so slot k's direction is ``std * W[:, k]``)."""
        return self.std[layer] * self.decoder_weight[layer]

    def standardized_value_logits(self, x: torch.Tensor, z: torch.Tensor, rule_idx: torch.Tensor) -> torch.Tensor:
        """:meth:`value_logits` of the standardized activation ``x``."""
        given = x
        x, z = self.stacked(x), self.stacked(z)
        layers, rows, _ = x.shape
        gated = x * z.gather(2, rule_idx.view(1, rows, 1).expand(layers, rows, 1))
        # Rows grouped by rule (one sort), each head run once on its contiguous block: no boolean
        # mask, index_put or host sync per head. The same function as masking rows per head.
        order = torch.argsort(rule_idx, stable=True)
        counts = torch.bincount(rule_idx, minlength=len(self.head_weights)).tolist()
        width = max(self.cfg.value_vocab_sizes)
        blocks = [
            F.pad(_linear(block, weight, bias), (0, width - weight.shape[2]), value=float("-inf"))
            for weight, bias, block in zip(self.head_weights, self.head_biases, gated[:, order].split(counts, dim=1))
        ]
        return self.shaped_like(given, torch.cat(blocks, dim=1)[:, torch.argsort(order)])

    def value_logits(self, h: torch.Tensor, z: torch.Tensor, rule_idx: torch.Tensor) -> torch.Tensor:
        """``[N, max(value_vocab_sizes)]`` logits of each row's rule head, padded with -inf.

        Row i is ``head[rule_idx[i]](standardize(h_i) * z[i, rule_idx[i]])``: the head reads the
        whole activation (which carries the person's identity, so it can learn person-specific
        answers), gated by the row's weight on its rule's slot. Padding is -inf so that softmax,
        cross-entropy and argmax never pick a candidate the rule doesn't have.
        """
        return self.standardized_value_logits(self.standardize(h), z, rule_idx)

    @torch.no_grad()
    def value_predictions(self, h: torch.Tensor, rule_idx: torch.Tensor) -> torch.Tensor:
        """LongTensor ``[N]``: each row's predicted candidate index within its rule (eval-mode z)."""
        return self.value_logits(h, self.encode(h), rule_idx).argmax(dim=-1)


def _stacked_weight(linear: nn.Linear, layers: int) -> nn.Parameter:
    """``[L, in, out]``: ``layers`` copies of nn.Linear's ``[out, in]`` weight, transposed once."""
    return stacked_parameter(linear.weight.t().contiguous(), layers)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-layer ``nn.Linear``: x ``[L, B, in]``, weight ``[L, in, out]``, bias ``[L, out]``."""
    return torch.baddbmm(bias.unsqueeze(1), x, weight)


def gumbel_noise(rows: int, n_slots: int, device) -> torch.Tensor:
    """``[rows, n_slots]`` Gumbel(0, 1) noise from the global RNG, drawn as F.gumbel_softmax draws it."""
    return -torch.empty(rows, n_slots, device=device).exponential_().log()


# --- loss terms -------------------------------------------------------------------------------


# Each term takes a batch ``[N, ...]`` and returns a scalar, or a stack of batches ``[L, N, ...]``
# (every layer of the profile) and returns ``[L]``: one definition for both.


def reconstruction_loss(x: torch.Tensor, x_recon: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all elements of a batch (both in standardized space)."""
    return (x_recon - x).pow(2).mean(dim=(-2, -1))


def slot_entropy(z: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``H(z) = -sum_k z_k log z_k`` (0 for one-hot, log K for uniform)."""
    return -(z * z.clamp_min(LOG_FLOOR).log()).sum(dim=-1).mean(dim=-1)


def _mean_cross_entropy(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the cross-entropy of ``scores`` ``[..., N, C]`` against ``target`` ``[N]``."""
    flat = F.cross_entropy(
        scores.reshape(-1, scores.shape[-1]), target.expand(scores.shape[:-1]).reshape(-1), reduction="none"
    )
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

    ``h`` is a batch ``[B, d]`` (terms are scalars) or, for every layer of ``model`` at once, a
    stack of batches ``[L, B, d]`` (terms are ``[L]``). ``z`` is a Gumbel-softmax sample at
    ``temperature`` (the deterministic eval-mode z when None); the same ``z`` feeds the
    reconstruction, the entropy, the covariance and the value gate. ``total = sum(lambda_term *
    term)`` with the lambdas of ``cfg``.
    """
    given = h
    h = model.stacked(h)
    x = model.standardize(h)
    logits = _linear(x, model.encoder_weight, model.encoder_bias)
    z = model.slots_from_logits(logits, temperature)
    x_recon = _linear(z, model.decoder_weight, model.decoder_bias)
    # built before the entropy: the backward pass sums z's gradients in the order of this graph,
    # and the weights that training gives depend on it (tests/data/make_sae_reference.py)
    indep = independence_loss(z)
    terms = {
        "recon": reconstruction_loss(x, x_recon),
        "sparse": slot_entropy(z),
        "align": alignment_loss(logits, rule_idx),
        "indep": indep,
        "value": value_loss(model.standardized_value_logits(x, z, rule_idx), value_target),
    }
    terms["total"] = sum(getattr(cfg, f"lambda_{name}") * terms[name] for name in LOSS_TERMS)
    return {name: term.squeeze(0) if given.dim() == 2 else term for name, term in terms.items()}


# --- checkpoints ------------------------------------------------------------------------------


def _checkpoint_tensors(model: SupervisedSAE) -> dict[str, torch.Tensor]:
    """The tensors of a one-layer ``model`` under their checkpoint names and shapes (nn.Linear's
    ``[out, in]`` weights): views of the model's own, so loading copies into them."""
    model.require_one_layer("SAE checkpoint")
    tensors = {
        "mean": model.mean[0],
        "std": model.std[0],
        "encoder.weight": model.encoder_weight[0].t(),
        "encoder.bias": model.encoder_bias[0],
        "decoder.weight": model.decoder_weight[0].t(),
        "decoder.bias": model.decoder_bias[0],
    }
    for k, (weight, bias) in enumerate(zip(model.head_weights, model.head_biases)):
        tensors[f"value_heads.{k}.weight"], tensors[f"value_heads.{k}.bias"] = weight[0].t(), bias[0]
    return tensors


def save_sae(directory, model: SupervisedSAE) -> None:
    """Write ``cfg.json`` and ``sae.safetensors`` (every parameter and buffer), each atomically."""
    directory = Path(directory)
    write_json(directory / CFG_FILENAME, model.cfg.to_dict())
    save_tensors(directory / WEIGHTS_FILENAME, _checkpoint_tensors(model), metadata={"format": "biosae.SupervisedSAE"})


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
    targets = _checkpoint_tensors(model)
    expected = {name: tuple(tensor.shape) for name, tensor in targets.items()}
    tensors = load_tensors(weights_path, expected_shapes=expected)
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise BiosaeError(f"{weights_path}: unexpected tensor {extra[0]!r} (not part of this SAE config)")
    bad = [name for name, tensor in tensors.items() if not torch.isfinite(tensor).all()]
    if bad:
        raise BiosaeError(f"{weights_path}: tensor {bad[0]!r} contains nan or inf")
    with torch.no_grad():
        for name, target in targets.items():
            target.copy_(tensors[name])
    return model.eval()
