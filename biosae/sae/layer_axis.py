"""The layer axis both SAEs share: the SAEs of ``layers`` LM layers side by side in one module,
every parameter and buffer with a leading ``[L, ...]`` axis. A single layer's SAE is a stack of one.

Why: an SAE's training step is many small tensor operations (~100 for the supervised SAE, a dozen
for the TopK SAE), so at the default sizes its time is per-operation overhead, not arithmetic (on 2
CPU cores a supervised step of 64 rows takes 7.6 ms, of five times as many rows 12.8 ms). With the
layers of the layer profile on a leading axis each operation runs once for all of them, and
training the whole profile costs little more than training one layer, on a CPU as on a GPU.

Each layer's slice is exactly the SAE that layer gets when trained alone: the seed's
initialization, drawn once and copied to every layer; the same batches; its own standardization;
its own loss, whose gradient reaches only its own slice (training sums the layers' losses for one
backward pass); and Adam, which is elementwise, steps every slice as a separate Adam would.
Weights are stored ``[L, in, out]`` so that the products and their gradients run on contiguous
tensors (a transposed view in every step makes autograd copy each gradient, ~30% of the step).

Shapes: methods take a stack of batches ``[L, N, ...]`` and return ``[L, ...]``; a stack of one
also takes a plain batch ``[N, ...]`` and returns ``[...]``, which is how a single layer's SAE is
used in evaluation.
"""

from __future__ import annotations

import torch
from torch import nn

from biosae.errors import BiosaeError

STD_FLOOR = 1e-6  # a constant activation dimension must not divide by zero when standardized


def stacked_parameter(tensor: torch.Tensor, layers: int) -> nn.Parameter:
    """``layers`` copies of ``tensor`` on a new leading axis, as one trainable parameter."""
    return nn.Parameter(tensor.detach().unsqueeze(0).repeat(layers, *([1] * tensor.dim())))


class LayerStack(nn.Module):
    """An SAE's config (``cfg``, with ``d_model``), its number of ``layers`` and its per-layer
    standardization: buffers ``mean``/``std`` ``[L, d_model]``, registered before any parameter."""

    def __init__(self, cfg, layers: int):
        super().__init__()
        if layers < 1:
            raise BiosaeError(f"{type(self).__name__}: a stack needs at least one layer, got {layers}")
        self.cfg = cfg
        self.layers = layers
        self.register_buffer("mean", torch.zeros(layers, cfg.d_model))
        self.register_buffer("std", torch.ones(layers, cfg.d_model))

    def stacked(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` as a stack of batches ``[L, N, ...]``; a plain batch only for a stack of one."""
        if tensor.dim() == 2:
            if self.layers != 1:
                raise BiosaeError(
                    f"{type(self).__name__}: a batch of shape {tuple(tensor.shape)} for a stack of "
                    f"{self.layers} layers (expected [{self.layers}, N, ...])"
                )
            return tensor.unsqueeze(0)
        return tensor

    @staticmethod
    def shaped_like(given: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        """``result`` ``[L, ...]`` without its layer axis when ``given`` was a plain batch."""
        return result.squeeze(0) if given.dim() == 2 else result

    @torch.no_grad()
    def fit_standardization(self, h: torch.Tensor) -> None:
        """Each layer's ``mean``/``std``: the per-dimension statistics of its rows of ``h`` (std
        floored at STD_FLOOR)."""
        h = self.stacked(h)
        self.mean.copy_(h.mean(dim=1))
        self.std.copy_(h.std(dim=1, unbiased=False).clamp_min(STD_FLOOR))

    def standardize(self, h: torch.Tensor) -> torch.Tensor:
        """``(h - mean) / std``, each layer's rows with that layer's statistics."""
        return self.shaped_like(h, (self.stacked(h) - self.mean.unsqueeze(1)) / self.std.unsqueeze(1))

    def layer(self, layer: int):
        """Layer ``layer``'s slice as an SAE of its own (a stack of one; a copy, in eval mode)."""
        model = type(self)(self.cfg)
        model.load_state_dict({name: tensor[layer : layer + 1] for name, tensor in self.state_dict().items()})
        return model.to(self.mean.device).eval()

    def require_one_layer(self, what: str) -> None:
        if self.layers != 1:
            raise BiosaeError(f"{what}: holds one layer's SAE, got a stack of {self.layers} (take .layer(i))")
