"""Resume a GPT-2 forward pass at a hook point, for the last prompt token only.

The causal tests edit the residual stream at the answer position, the last prompt token. Causal
attention means an edit there changes nothing at earlier positions, and the blocks before the
hook point compute the same state for the last token as in the clean pass. So an edited pass
needs only:

- the last token's clean residual at the hook, computed once per prompt for every hook point;
- the prompt prefix's keys and values at the blocks from the hook on, computed once;
- blocks L .. n_layer - 1, ``ln_f`` and the unembedding, for the last token.

At the last block's output (the seed's hook) that is ``ln_f`` and the unembedding alone.

Several edits of the same prompts run as one batch ``[E, B, d]`` whose queries attend to the
prefix's keys by broadcasting. The generic path (a whole-model pass through Hugging Face's
cache, in biosae.lm.prompt_cache) repeats the prefix once per edit and concatenates it
with the new token at every block: on the default evaluate, those copies take a third of the
causal tests' time.

Only GPT-2-family models (transformers' ``GPT2LMHeadModel``, scratch or pretrained) take this
path, because the attention is written out here; other architectures use the generic one.
tests/test_interventions.py checks both against full forward passes. Dropout is not applied:
these passes are inference (or DAS training through a frozen LM), as in ``model.eval()``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Activations that are GPT-2's tanh approximation of GELU, by transformers' class name. transformers'
# NewGELUActivation (GPT-2's default, "gelu_new") spells the formula out in eight element-wise ops;
# torch's fused kernel computes the same function (max difference 2.4e-7 on N(0, 1) inputs) ~4.5x
# faster, and on the causal tests the MLP's activation took ~15% of a lower layer's edited passes.
TANH_GELU_CLASSES = {"NewGELUActivation", "GELUTanh", "PytorchGELUTanh", "GELUPytorchTanh", "FastGELUActivation"}


def _tanh_gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


class Gpt2LastToken:
    """The last-token tail of a GPT-2 forward pass, from any hook point to the next-token logits."""

    def __init__(self, model):
        self.blocks = model.transformer.h
        self.wte, self.wpe = model.transformer.wte, model.transformer.wpe
        self.ln_f, self.lm_head = model.transformer.ln_f, model.lm_head
        self.n_head = model.config.n_head
        self.width = model.config.n_embd
        self.activations = [
            _tanh_gelu if type(block.mlp.act).__name__ in TANH_GELU_CLASSES else block.mlp.act for block in self.blocks
        ]

    @staticmethod
    def supports(model) -> bool:
        config = getattr(model, "config", None)
        return (
            getattr(config, "model_type", None) == "gpt2"
            and not getattr(config, "add_cross_attention", False)
            and hasattr(model, "transformer")
            and hasattr(model, "lm_head")
        )

    def clean_residuals(self, last_ids: torch.Tensor, prefix: list, position: int) -> torch.Tensor:
        """The last token's residual stream at every hook point, ``[n_layer + 1, B, d]``: index L
        is the state after L blocks (0: the embeddings). ``prefix[i]`` = (keys, values) of block
        i for the prompt's other tokens, ``[B, heads, T, head_dim]``; ``position`` = T."""
        positions = torch.full_like(last_ids, position)
        h = (self.wte(last_ids) + self.wpe(positions))[None]
        states = [h[0]]
        for i in range(len(self.blocks)):
            h = self._block(i, h, prefix)
            states.append(h[0])
        return torch.stack(states)

    def logits_from(self, hook: int, h: torch.Tensor, prefix: list) -> torch.Tensor:
        """Next-token logits ``[E, B, vocab]`` of the last token whose residual after ``hook``
        blocks is ``h`` ``[E, B, d]`` (E edits of the same B prompts, sharing ``prefix``)."""
        for i in range(hook, len(self.blocks)):
            h = self._block(i, h, prefix)
        return self.lm_head(self.ln_f(h))

    def _block(self, i: int, x: torch.Tensor, prefix: list) -> torch.Tensor:
        block = self.blocks[i]
        keys, values = prefix[i] if prefix is not None else (None, None)
        edits, batch, width = x.shape
        heads = self.n_head
        query, key, value = block.attn.c_attn(block.ln_1(x)).split(width, dim=-1)
        query, key, value = (t.view(edits, batch, heads, width // heads) for t in (query, key, value))
        # The token attends to the prefix (shared by every edit) and to itself.
        own = (query * key).sum(-1, keepdim=True) * block.attn.scaling
        if keys is None or keys.shape[2] == 0:
            weights = torch.softmax(own, dim=-1)
            mixed = weights * value
        else:
            scores = torch.einsum("ebhd,bhtd->ebht", query, keys) * block.attn.scaling
            weights = torch.softmax(torch.cat([scores, own], dim=-1), dim=-1)
            mixed = torch.einsum("ebht,bhtd->ebhd", weights[..., :-1], values) + weights[..., -1:] * value
        x = x + block.attn.c_proj(mixed.reshape(edits, batch, width))
        mlp = block.mlp
        return x + mlp.c_proj(self.activations[i](mlp.c_fc(block.ln_2(x))))
