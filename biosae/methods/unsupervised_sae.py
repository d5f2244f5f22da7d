"""``sae_unsupervised``: an ordinary TopK sparse autoencoder trained without labels, and the
latent per rule that best detects it (AxBench's "SAE-A").

The comparison the supervised SAE's premise rests on (AlignSAE: supervised beats unsupervised).
Architecture (Gao et al. 2024, TopK): on standardized activations ``x = (h - mean) / std``,
``f = TopK(ReLU(W_enc (x - b_dec) + b_enc))``, ``x_hat = W_dec f + b_dec``, decoder columns kept at
unit norm; loss MSE(x, x_hat); Adam. Trained on the train cell only, like every method.

Per rule r, the chosen latent ``j_r`` is the one whose pre-activation best separates rule-r rows
from the others on the train cell (highest AUROC). As a method it is a subspace
(biosae.methods.base.SubspaceMethod) whose ablation is the latent's, error term kept:
- ablation of rule r: latent ``j_r`` set to 0, i.e. ``h - std * W_dec[:, j_r] * f_{j_r}(h)``
  (its ablation direction is the latent's raw decoder direction, its amount the latent);
- interchange and steering: on the span of the chosen latents' decoder directions (in raw
  activation space, ``std * W_dec[:, j_r]``);
- read-out: ``argmax_r`` of the chosen latents' pre-activations (never all-zero ties).

Why not SAELens: it would add a dependency tree for what is ~40 lines here (model and loop),
and its training runner expects a model and a token stream, not a fixed table of activations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from biosae.errors import BiosaeError
from biosae.io import load_tensors, read_json, save_tensors, write_json
from biosae.methods.base import FitInputs, SubspaceMethod, class_means
from biosae.rules import RULES
from biosae.sae.layer_stack import stacked_parameter

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae.safetensors"


@dataclass(kw_only=True)
class TopKSAEConfig:
    d_model: int
    n_latents: int = 512
    k: int = 16
    epochs: int = 200
    lr: float = 1e-3
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self):
        if not 1 <= self.k <= self.n_latents:
            raise BiosaeError(f"unsupervised SAE config: k must be in 1..n_latents ({self.n_latents}), got {self.k}")


class TopKSAE(nn.Module):
    def __init__(self, cfg: TopKSAEConfig):
        super().__init__()
        self.cfg = cfg
        generator = torch.Generator().manual_seed(cfg.seed)
        decoder = torch.randn(cfg.d_model, cfg.n_latents, generator=generator)
        self.register_buffer("mean", torch.zeros(cfg.d_model))
        self.register_buffer("std", torch.ones(cfg.d_model))
        self.W_dec = nn.Parameter(decoder / decoder.norm(dim=0, keepdim=True))
        self.W_enc = nn.Parameter(self.W_dec.detach().T.clone())  # tied initialization (Gao et al.)
        self.b_enc = nn.Parameter(torch.zeros(cfg.n_latents))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_model))

    def pre_activations(self, h: torch.Tensor) -> torch.Tensor:
        x = (h - self.mean) / self.std
        return (x - self.b_dec) @ self.W_enc.T + self.b_enc

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.pre_activations(h))
        top = pre.topk(self.cfg.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values)

    def decode_standardized(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec.T + self.b_dec

    def raw_decoder_directions(self) -> torch.Tensor:
        """[n_latents, d]: how a unit of each latent moves h in raw activation space."""
        return (self.W_dec * self.std[:, None]).T


class LayerStackedTopKSAE(nn.Module):
    """``layers`` copies of one freshly initialized :class:`TopKSAE`, trained side by side.

    The TopK SAE's step is a dozen small operations (measured, 1 thread: ~15 ms a step at the
    default sizes, of which ~2 ms is arithmetic), so the profile's layers share each operation
    instead of a job each (the supervised SAE's biosae.sae.layer_stack does the same). Each
    layer's slice is the SAE that layer would get alone: the seed's initialization, the same
    batches, its own standardization, TopK and loss, whose gradient reaches only its own slice;
    Adam is elementwise. Weights are stored ``[L, in, out]`` so that the products run on
    contiguous tensors. Works on standardized activations ``x`` ``[L, B, d]``."""

    def __init__(self, template: TopKSAE, layers: int):
        super().__init__()
        self.cfg = template.cfg

        self.register_buffer("mean", template.mean.detach().unsqueeze(0).repeat(layers, 1))
        self.register_buffer("std", template.std.detach().unsqueeze(0).repeat(layers, 1))
        self.encoder_weight = stacked_parameter(template.W_enc.T, layers)  # [L, d, n]
        self.encoder_bias = stacked_parameter(template.b_enc, layers)      # [L, n]
        self.decoder_weight = stacked_parameter(template.W_dec.T, layers)  # [L, n, d]: row j is latent j's direction
        self.decoder_bias = stacked_parameter(template.b_dec, layers)      # [L, d]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(torch.baddbmm(self.encoder_bias.unsqueeze(1), x - self.decoder_bias.unsqueeze(1),
                                   self.encoder_weight))
        top = pre.topk(self.cfg.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.decoder_bias.unsqueeze(1), f, self.decoder_weight)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Unit-norm decoder directions: the latent's size lives in f."""
        self.decoder_weight.div_(self.decoder_weight.norm(dim=-1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def layer(self, index: int) -> TopKSAE:
        """Layer ``index``'s SAE as a :class:`TopKSAE` (eval mode)."""
        model = TopKSAE(self.cfg)
        model.mean.copy_(self.mean[index])
        model.std.copy_(self.std[index])
        model.W_enc.copy_(self.encoder_weight[index].T)
        model.b_enc.copy_(self.encoder_bias[index])
        model.W_dec.copy_(self.decoder_weight[index].T)
        model.b_dec.copy_(self.decoder_bias[index])
        return model.eval()


# Rows per chunk when a log epoch measures the whole train set: bounds the [L, rows, n_latents]
# latents at scale (1M rows x 512 latents would be 2 GB a layer).
_MEASURE_ROWS = 8192


def train_topk_sae_layers(train_activations, cfg: TopKSAEConfig, progress=None) -> list[tuple[TopKSAE, list[dict]]]:
    """Fit one TopK SAE per layer on the same train rows, ``train_activations`` ``[L, N, d]`` (or a
    list of ``[N, d]``), all layers at once (:class:`LayerStackedTopKSAE`). Returns per layer the
    model (eval mode) and one log row per logged epoch. ``progress(layer, row)`` sees each row."""
    torch.manual_seed(cfg.seed)
    h = torch.stack([layer.float() for layer in train_activations]) if isinstance(train_activations, (list, tuple)) \
        else train_activations.float()
    layers, rows_total = h.shape[0], h.shape[1]
    model = LayerStackedTopKSAE(TopKSAE(cfg), layers)
    model.mean.copy_(h.mean(dim=1))
    model.std.copy_(h.std(dim=1, unbiased=False).clamp_min(1e-6))
    x_all = (h - model.mean.unsqueeze(1)) / model.std.unsqueeze(1)
    del h
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    histories: list[list[dict]] = [[] for _ in range(layers)]
    for epoch in range(1, cfg.epochs + 1):
        totals = torch.zeros(layers, dtype=torch.float64)
        for batch in torch.randperm(rows_total, generator=generator).split(cfg.batch_size):
            x = x_all[:, batch]
            losses = (model.decode(model.encode(x)) - x).pow(2).mean(dim=(1, 2))  # [L]: each layer's MSE
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
            model.normalize_decoder()
            totals += losses.detach().double() * len(batch)
        if epoch == 1 or epoch % 10 == 0 or epoch == cfg.epochs:
            for index, row in enumerate(_measure(model, x_all, epoch, totals / rows_total)):
                histories[index].append(row)
                if progress:
                    progress(index, row)
    return [(model.layer(index), histories[index]) for index in range(layers)]


@torch.no_grad()
def _measure(model: LayerStackedTopKSAE, x_all: torch.Tensor, epoch: int, mean_loss: torch.Tensor) -> list[dict]:
    """Per layer: the epoch's mean training MSE, the share of variance explained and the latents
    active on some row, over every training row."""
    layers = x_all.shape[0]
    squared_error = torch.zeros(layers, dtype=torch.float64)
    alive = torch.zeros(layers, model.cfg.n_latents, dtype=torch.bool)
    for chunk in x_all.split(_MEASURE_ROWS, dim=1):
        f = model.encode(chunk)
        squared_error += (model.decode(f) - chunk).pow(2).sum(dim=(1, 2)).double()
        alive |= (f > 0).any(dim=1)
    mse = squared_error / x_all[0].numel()
    variance = x_all.var(dim=1).mean(dim=1).double()
    return [{"epoch": epoch, "mse": round(float(mean_loss[index]), 6),
             "explained_variance": round(float(1 - mse[index] / variance[index]), 5),
             "alive_latents": int(alive[index].sum())} for index in range(layers)]


def train_topk_sae(train_activations: torch.Tensor, cfg: TopKSAEConfig, progress=None) -> tuple[TopKSAE, list[dict]]:
    """Fit on the train cell's activations (the one-layer case of :func:`train_topk_sae_layers`);
    returns the model (eval mode) and one log row per logged epoch."""
    [(model, history)] = train_topk_sae_layers([train_activations], cfg,
                                               progress=(lambda _, row: progress(row)) if progress else None)
    return model, history


def average_ranks(scores: torch.Tensor) -> np.ndarray:
    """[rows, n_latents] rank (1 = lowest) of each row's score within its column, tied values
    sharing the average of their ranks."""
    s = scores.double().numpy()
    order = s.argsort(axis=0, kind="stable")
    ranks = np.empty_like(s)
    np.put_along_axis(ranks, order, np.arange(1, len(s) + 1, dtype=np.float64)[:, None].repeat(s.shape[1], 1), axis=0)
    # average the ranks of tied values, column by column only where ties exist
    for column in range(s.shape[1]):
        values = s[:, column]
        unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
        if len(unique) < len(values):
            sums = np.bincount(inverse, weights=ranks[:, column])
            ranks[:, column] = (sums / counts)[inverse]
    return ranks


def auroc_from_ranks(ranks: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """[n_latents] AUROC of each column for ``positive`` rows vs the rest, from
    :func:`average_ranks` (Mann-Whitney U)."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    u = ranks[positive].sum(axis=0) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def auroc_by_latent(scores: torch.Tensor, positive: np.ndarray) -> np.ndarray:
    """[n_latents] AUROC of each score column for ``positive`` rows vs the rest (Mann-Whitney U,
    average ranks for ties)."""
    return auroc_from_ranks(average_ranks(scores), positive)


def choose_latents(model: TopKSAE, train_activations: torch.Tensor, train_rule_idx) -> tuple[list[int], list[float]]:
    """Per rule, the latent whose pre-activation detects it best on the train cell, and its AUROC."""
    rules = np.asarray(train_rule_idx)
    with torch.no_grad():
        scores = model.pre_activations(train_activations.float())
    # The ranks don't depend on the rule: sorted once for all six rules (sorting the 512 columns
    # takes ~0.25 s on a default train cell).
    ranks = average_ranks(scores)
    chosen, auroc = [], []
    for r in range(len(RULES)):
        values = auroc_from_ranks(ranks, rules == r)
        chosen.append(int(values.argmax()))
        auroc.append(float(values.max()))
    return chosen, auroc


class UnsupervisedSAEMethod(SubspaceMethod):
    def __init__(self, model: TopKSAE, latents: list[int], means: torch.Tensor):
        directions = model.raw_decoder_directions().detach()[latents]
        super().__init__("sae_unsupervised", basis=directions, ablation_directions=directions, rule_means=means,
                         steerable=True)
        self.model, self.latents = model, list(latents)
        # decode(f with f_j = 0) + error term = h - f_j(h) * (raw decoder direction j)
        self.ablation_directions = directions

    def ablation_amount(self, h: torch.Tensor, rule: int) -> torch.Tensor:
        with torch.no_grad():
            return self.model.encode(h.float())[:, self.latents[rule]]

    def rule_scores(self, h: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model.pre_activations(h.float())[:, self.latents]


def fit_unsupervised_method(inputs: FitInputs) -> UnsupervisedSAEMethod:
    """The trained TopK SAE (``inputs.unsupervised_sae``) with its latent per rule."""
    if inputs.unsupervised_sae is None:
        raise BiosaeError("method sae_unsupervised: no trained unsupervised SAE given")
    model, train_activations, train_rule_idx = inputs.unsupervised_sae, inputs.train_activations, inputs.train_rule_idx
    latents, _ = choose_latents(model, train_activations, train_rule_idx)
    return UnsupervisedSAEMethod(model, latents, class_means(train_activations, train_rule_idx))


def save_topk_sae(directory, model: TopKSAE, extra: dict | None = None) -> None:
    from pathlib import Path

    directory = Path(directory)
    write_json(directory / CFG_FILENAME, {**asdict(model.cfg), **(extra or {})})
    save_tensors(directory / WEIGHTS_FILENAME, model.state_dict(), metadata={"format": "biosae.TopKSAE"})


def load_topk_sae(directory) -> TopKSAE:
    from pathlib import Path

    directory = Path(directory)
    data = read_json(directory / CFG_FILENAME)
    known = set(TopKSAEConfig.__dataclass_fields__)
    try:
        cfg = TopKSAEConfig(**{key: value for key, value in data.items() if key in known})
    except TypeError as error:
        raise BiosaeError(f"{directory / CFG_FILENAME}: bad unsupervised SAE config ({error})") from None
    model = TopKSAE(cfg)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    model.load_state_dict(load_tensors(directory / WEIGHTS_FILENAME, expected_shapes=expected))
    return model.eval()
