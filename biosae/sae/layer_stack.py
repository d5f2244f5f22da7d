"""Every layer's supervised SAE of one LM as one model: the same SAE, with a leading layer axis.

Why: the SAE's training step is ~100 small tensor operations; at the default sizes the step time
is per-operation overhead, not arithmetic (measured on 2 CPU cores: a batch of 64 rows takes
7.6 ms a step, five times as many rows 12.8 ms). Stacking the L layers of the layer profile on
a leading axis runs each operation once for all of them, so training the whole profile costs
little more than training one layer, on a CPU as on a GPU.

Each layer's slice is exactly the :class:`~biosae.sae.model.SupervisedSAE` that layer would get
on its own: the same initialization (the seed's), the same batches, the same Gumbel noise (drawn
once per step and shared, as separate runs with one seed would draw it), its own standardization,
and its own loss, whose gradient reaches only its own slice (the layers' totals are summed for
one backward pass). Adam is elementwise, so the shared optimizer steps every slice as a separate
Adam would. :func:`stacked_sae_loss` is checked against :func:`~biosae.sae.model.sae_loss`, and
training layers together against training each alone (tests/test_sae.py).

Shapes: ``h`` is ``[L, B, d_model]``, ``z`` ``[L, B, n_slots]``; every loss term is ``[L]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from biosae.sae.model import (
    LOSS_TERMS,
    STD_FLOOR,
    SAEConfig,
    SupervisedSAE,
    alignment_loss,
    independence_loss,
    reconstruction_loss,
    slot_entropy,
    value_loss,
)


def stacked_parameter(tensor: torch.Tensor, layers: int) -> nn.Parameter:
    """``layers`` copies of ``tensor`` on a new leading axis, as one trainable parameter."""
    return nn.Parameter(tensor.detach().unsqueeze(0).repeat(layers, *([1] * tensor.dim())))


def _stacked_weight(linear: nn.Linear, layers: int) -> nn.Parameter:
    """``[L, in, out]``: nn.Linear's ``[out, in]`` weight transposed once, so that the products
    and their gradients run on contiguous tensors (a transposed view in every step made the
    autograd copy each gradient: ~30% of the step, measured)."""
    return stacked_parameter(linear.weight.t().contiguous(), layers)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-layer ``nn.Linear``: x ``[L, B, in]``, weight ``[L, in, out]``, bias ``[L, out]``."""
    return torch.baddbmm(bias.unsqueeze(1), x, weight)


class LayerStackedSAE(nn.Module):
    """``layers`` copies of one freshly initialized :class:`SupervisedSAE`, trained side by side."""

    def __init__(self, template: SupervisedSAE, layers: int):
        super().__init__()
        self.cfg = template.cfg
        self.register_buffer("mean", template.mean.detach().unsqueeze(0).repeat(layers, 1))
        self.register_buffer("std", template.std.detach().unsqueeze(0).repeat(layers, 1))
        self.encoder_weight = _stacked_weight(template.encoder, layers)
        self.encoder_bias = stacked_parameter(template.encoder.bias, layers)
        self.decoder_weight = _stacked_weight(template.decoder, layers)
        self.decoder_bias = stacked_parameter(template.decoder.bias, layers)
        self.head_weights = nn.ParameterList(_stacked_weight(head, layers) for head in template.value_heads)
        self.head_biases = nn.ParameterList(stacked_parameter(head.bias, layers) for head in template.value_heads)

    @torch.no_grad()
    def fit_standardization(self, h: torch.Tensor) -> None:
        """Each layer's ``mean``/``std`` from its own rows of ``h`` ``[L, N, d]`` (as SupervisedSAE's)."""
        self.mean.copy_(h.mean(dim=1))
        self.std.copy_(h.std(dim=1, unbiased=False).clamp_min(STD_FLOOR))

    def standardize(self, h: torch.Tensor) -> torch.Tensor:
        return (h - self.mean.unsqueeze(1)) / self.std.unsqueeze(1)

    def slot_logits(self, h: torch.Tensor) -> torch.Tensor:
        return _linear(self.standardize(h), self.encoder_weight, self.encoder_bias)

    def eval_slots(self, logits: torch.Tensor) -> torch.Tensor:
        """The deterministic eval-mode z of SupervisedSAE: ``softmax(logits / temp_end)``."""
        return torch.softmax(logits / self.cfg.temp_end, dim=-1)

    def value_logits(self, x: torch.Tensor, z: torch.Tensor, rule_idx: torch.Tensor) -> torch.Tensor:
        """``[L, B, max vocab]``: SupervisedSAE.value_logits per layer, from the standardized ``x``."""
        layers, rows, _ = x.shape
        gated = x * z.gather(2, rule_idx.view(1, rows, 1).expand(layers, rows, 1))
        order = torch.argsort(rule_idx, stable=True)
        counts = torch.bincount(rule_idx, minlength=len(self.head_weights)).tolist()
        width = max(self.cfg.value_vocab_sizes)
        blocks = [
            F.pad(_linear(block, weight, bias), (0, width - weight.shape[2]), value=float("-inf"))
            for weight, bias, block in zip(self.head_weights, self.head_biases, gated[:, order].split(counts, dim=1))
        ]
        return torch.cat(blocks, dim=1)[:, torch.argsort(order)]

    @torch.no_grad()
    def value_predictions(self, h: torch.Tensor, rule_idx: torch.Tensor) -> torch.Tensor:
        """LongTensor ``[L, N]``: each row's predicted candidate per layer (eval-mode z)."""
        x = self.standardize(h)
        z = self.eval_slots(_linear(x, self.encoder_weight, self.encoder_bias))
        return self.value_logits(x, z, rule_idx).argmax(dim=-1)

    def layer_sae(self, layer: int) -> SupervisedSAE:
        """Layer ``layer``'s slice as a plain SupervisedSAE (a copy, in eval mode)."""
        model = SupervisedSAE(self.cfg)
        state = {"mean": self.mean[layer], "std": self.std[layer],
                 "encoder.weight": self.encoder_weight[layer].t(), "encoder.bias": self.encoder_bias[layer],
                 "decoder.weight": self.decoder_weight[layer].t(), "decoder.bias": self.decoder_bias[layer]}
        for k, (weight, bias) in enumerate(zip(self.head_weights, self.head_biases)):
            state[f"value_heads.{k}.weight"], state[f"value_heads.{k}.bias"] = weight[layer].t(), bias[layer]
        model.load_state_dict(state)  # copies into the new model's own tensors
        return model.to(self.mean.device).eval()


def gumbel_noise(rows: int, n_slots: int, device) -> torch.Tensor:
    """``[rows, n_slots]`` Gumbel(0, 1) noise from the global RNG, drawn as F.gumbel_softmax draws it."""
    return -torch.empty(rows, n_slots, device=device).exponential_().log()


def stacked_sae_loss(
    model: LayerStackedSAE,
    h: torch.Tensor,
    rule_idx: torch.Tensor,
    value_target: torch.Tensor,
    temperature: float,
    cfg: SAEConfig,
) -> dict[str, torch.Tensor]:
    """:func:`biosae.sae.model.sae_loss` of every layer at once: each term and ``total`` is ``[L]``.

    One Gumbel draw ``[B, n_slots]`` serves every layer (what each layer would draw alone).
    """
    x = model.standardize(h)
    logits = _linear(x, model.encoder_weight, model.encoder_bias)
    noise = gumbel_noise(h.shape[1], cfg.n_slots, h.device)
    z = torch.softmax((logits + noise) / temperature, dim=-1)
    x_recon = _linear(z, model.decoder_weight, model.decoder_bias)
    # built before the entropy so that the backward pass sums z's gradients in the order it always
    # has (losses and gradients checked bitwise equal to those of the recorded run's code)
    indep = independence_loss(z)
    terms = {  # the terms of biosae.sae.model, each [L] on a stack of batches
        "recon": reconstruction_loss(x, x_recon),
        "sparse": slot_entropy(z),
        "align": alignment_loss(logits, rule_idx),
        "indep": indep,
        "value": value_loss(model.value_logits(x, z, rule_idx), value_target),
    }
    terms["total"] = sum(getattr(cfg, f"lambda_{name}") * terms[name] for name in LOSS_TERMS)
    return terms
