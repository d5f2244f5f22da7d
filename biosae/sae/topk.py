"""An ordinary TopK sparse autoencoder, trained without labels: the unsupervised SAE that the
``sae_unsupervised`` method (biosae.methods.unsupervised_sae) reads its latents from.

Architecture (Gao et al. 2024, TopK): on standardized activations ``x = (h - mean) / std``,
``f = TopK(ReLU(W_enc (x - b_dec) + b_enc))``, ``x_hat = W_dec f + b_dec``, decoder directions
kept at unit norm; loss MSE(x, x_hat); Adam. Trained on the train cell only, like every method.

Layer axis (biosae.sae.layer_axis): one :class:`TopKSAE` holds the SAEs of ``layers`` LM layers,
each parameter and buffer ``[L, ...]``; a single layer's SAE is a stack of one, and its methods
also take a plain batch ``[N, d]``.

Why not SAELens: it would add a dependency tree for what is ~40 lines here (model and loop),
and its training runner expects a model and a token stream, not a fixed table of activations. A
trained SAE exports to SAELens's format, standardization folded in (biosae.sae.saelens).

Checkpoints: ``cfg.json`` (the :class:`TopKSAEConfig`, plus what the caller adds, e.g. the log)
next to ``sae.safetensors``, one layer's SAE as ``mean``, ``std``, ``W_dec`` ``[d, n_latents]``,
``W_enc`` ``[n_latents, d]``, ``b_enc`` and ``b_dec``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from biosae.errors import BiosaeError
from biosae.io import load_tensors, read_json, save_tensors, write_json
from biosae.sae.layer_axis import LayerStack, stacked_parameter

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae.safetensors"
# Rows per chunk when a log epoch measures the whole train set: bounds the [L, rows, n_latents]
# latents at scale (1M rows x 512 latents would be 2 GB a layer).
_MEASURE_ROWS = 8192


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


class TopKSAE(LayerStack):
    """Per layer: ``encoder_weight`` ``[L, d, n_latents]``, ``encoder_bias`` ``[L, n_latents]``,
    ``decoder_weight`` ``[L, n_latents, d]`` (row j is latent j's unit direction), ``decoder_bias``
    ``[L, d]``; ``mean``/``std`` ``[L, d]``."""

    def __init__(self, cfg: TopKSAEConfig, layers: int = 1):
        super().__init__(cfg, layers)
        # The seed's initialization, the same for every layer: unit-norm random decoder directions,
        # the encoder tied to them (Gao et al.), zero biases.
        generator = torch.Generator().manual_seed(cfg.seed)
        decoder = torch.randn(cfg.d_model, cfg.n_latents, generator=generator)
        decoder = decoder / decoder.norm(dim=0, keepdim=True)  # [d, n]: column j is latent j's direction
        self.encoder_weight = stacked_parameter(decoder, layers)
        self.encoder_bias = stacked_parameter(torch.zeros(cfg.n_latents), layers)
        self.decoder_weight = stacked_parameter(decoder.T, layers)
        self.decoder_bias = stacked_parameter(torch.zeros(cfg.d_model), layers)

    def standardized_pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """``[L, N, n_latents]``: ``W_enc (x - b_dec) + b_enc`` of standardized ``x`` ``[L, N, d]``."""
        return torch.baddbmm(self.encoder_bias.unsqueeze(1), x - self.decoder_bias.unsqueeze(1), self.encoder_weight)

    def encode_standardized(self, x: torch.Tensor) -> torch.Tensor:
        """``[L, N, n_latents]`` latents ``f`` of standardized ``x``: the k largest ReLU'd
        pre-activations of each row, the rest 0."""
        pre = F.relu(self.standardized_pre_activations(x))
        top = pre.topk(self.cfg.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values)

    def decode_standardized(self, f: torch.Tensor) -> torch.Tensor:
        """``[L, N, d]`` reconstruction ``W_dec f + b_dec``, in standardized space."""
        return torch.baddbmm(self.decoder_bias.unsqueeze(1), f, self.decoder_weight)

    def pre_activations(self, h: torch.Tensor) -> torch.Tensor:
        """``[N, n_latents]`` pre-activations of raw activations ``h`` ``[N, d]``."""
        return self.shaped_like(h, self.standardized_pre_activations(self.standardize(self.stacked(h))))

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        """``[N, n_latents]`` latents of raw activations ``h`` ``[N, d]``."""
        return self.shaped_like(h, self.encode_standardized(self.standardize(self.stacked(h))))

    def raw_decoder_directions(self, layer: int = 0) -> torch.Tensor:
        """``[n_latents, d]``: how a unit of each latent moves h in raw activation space."""
        return self.decoder_weight[layer] * self.std[layer]

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Unit-norm decoder directions: the latent's size lives in f."""
        self.decoder_weight.div_(self.decoder_weight.norm(dim=-1, keepdim=True).clamp_min(1e-8))


def train_topk_sae_layers(train_activations, cfg: TopKSAEConfig, progress=None) -> list[tuple[TopKSAE, list[dict]]]:
    """Fit one TopK SAE per layer on the same train rows, ``train_activations`` ``[L, N, d]`` (or a
    list of ``[N, d]``), all layers at once (one :class:`TopKSAE` with a layer axis). Returns per
    layer its model (a stack of one, eval mode) and one log row per logged epoch (the first, every
    tenth and the last). ``progress(layer, row)`` sees each row. Training runs on the device the
    activations live on."""
    torch.manual_seed(cfg.seed)
    h = (
        torch.stack([layer.float() for layer in train_activations])
        if isinstance(train_activations, (list, tuple))
        else train_activations.float()
    )
    layers, rows_total = h.shape[0], h.shape[1]
    model = TopKSAE(cfg, layers).to(h.device)
    model.fit_standardization(h)
    x_all = model.standardize(h)
    del h
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    histories: list[list[dict]] = [[] for _ in range(layers)]
    for epoch in range(1, cfg.epochs + 1):
        # float64 sums on the CPU: MPS has no float64
        totals = torch.zeros(layers, dtype=torch.float64)
        for batch in torch.randperm(rows_total, generator=generator).split(cfg.batch_size):
            x = x_all[:, batch]
            reconstruction = model.decode_standardized(model.encode_standardized(x))
            losses = (reconstruction - x).pow(2).mean(dim=(1, 2))  # [L]: each layer's MSE
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
            model.normalize_decoder()
            totals += losses.detach().cpu().double() * len(batch)
        if epoch == 1 or epoch % 10 == 0 or epoch == cfg.epochs:
            for index, row in enumerate(_measure(model, x_all, epoch, totals / rows_total)):
                histories[index].append(row)
                if progress:
                    progress(index, row)
    return [(model.layer(index), histories[index]) for index in range(layers)]


@torch.no_grad()
def _measure(model: TopKSAE, x_all: torch.Tensor, epoch: int, mean_loss: torch.Tensor) -> list[dict]:
    """Per layer: the epoch's mean training MSE, the share of variance explained and the latents
    active on some row, over every training row."""
    layers = x_all.shape[0]
    squared_error = torch.zeros(layers, dtype=torch.float64)
    alive = torch.zeros(layers, model.cfg.n_latents, dtype=torch.bool, device=x_all.device)
    for chunk in x_all.split(_MEASURE_ROWS, dim=1):
        f = model.encode_standardized(chunk)
        squared_error += (model.decode_standardized(f) - chunk).pow(2).sum(dim=(1, 2)).cpu().double()
        alive |= (f > 0).any(dim=1)
    mse = squared_error / x_all[0].numel()
    variance = x_all.var(dim=1).mean(dim=1).cpu().double()
    return [
        {
            "epoch": epoch,
            "mse": round(float(mean_loss[index]), 6),
            "explained_variance": round(float(1 - mse[index] / variance[index]), 5),
            "alive_latents": int(alive[index].sum()),
        }
        for index in range(layers)
    ]


def train_topk_sae(train_activations: torch.Tensor, cfg: TopKSAEConfig, progress=None) -> tuple[TopKSAE, list[dict]]:
    """Fit on the train cell's activations ``[N, d]`` (the one-layer case of
    :func:`train_topk_sae_layers`); returns the model (eval mode) and one log row per logged epoch."""
    [(model, history)] = train_topk_sae_layers(
        [train_activations], cfg, progress=(lambda _, row: progress(row)) if progress else None
    )
    return model, history


def _checkpoint_tensors(model: TopKSAE) -> dict[str, torch.Tensor]:
    """The tensors of a one-layer ``model`` under their checkpoint names and shapes: views of the
    model's own, so loading copies into them."""
    model.require_one_layer("TopK SAE checkpoint")
    return {
        "mean": model.mean[0],
        "std": model.std[0],
        "W_dec": model.decoder_weight[0].t(),
        "W_enc": model.encoder_weight[0].t(),
        "b_enc": model.encoder_bias[0],
        "b_dec": model.decoder_bias[0],
    }


def save_topk_sae(directory, model: TopKSAE, extra: dict | None = None) -> None:
    """Write ``cfg.json`` (the config and ``extra``) and ``sae.safetensors``, each atomically."""
    directory = Path(directory)
    write_json(directory / CFG_FILENAME, {**asdict(model.cfg), **(extra or {})})
    save_tensors(directory / WEIGHTS_FILENAME, _checkpoint_tensors(model), metadata={"format": "biosae.TopKSAE"})


def load_topk_sae(directory) -> TopKSAE:
    """Rebuild the SAE saved by :func:`save_topk_sae`, on CPU, in eval mode."""
    directory = Path(directory)
    data = read_json(directory / CFG_FILENAME)
    known = set(TopKSAEConfig.__dataclass_fields__)
    try:
        cfg = TopKSAEConfig(**{key: value for key, value in data.items() if key in known})
    except TypeError as error:
        raise BiosaeError(f"{directory / CFG_FILENAME}: bad unsupervised SAE config ({error})") from None
    model = TopKSAE(cfg)
    targets = _checkpoint_tensors(model)
    weights_path = directory / WEIGHTS_FILENAME
    tensors = load_tensors(weights_path, expected_shapes={name: tuple(t.shape) for name, t in targets.items()})
    extra = sorted(set(tensors) - set(targets))
    if extra:
        raise BiosaeError(f"{weights_path}: unexpected tensor {extra[0]!r} (not part of a TopK SAE)")
    with torch.no_grad():
        for name, target in targets.items():
            target.copy_(tensors[name])
    return model.eval()
