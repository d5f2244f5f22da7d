"""The LM's answer-position passes with an edit at a hook point, on cached prompt prefixes.

Every causal test (ablation, interchange, steering) and DAS's training edit the residual stream
at the last prompt token. :class:`PromptCache` runs each prompt's prefix once and every edited
pass on the last token alone; :func:`edited_predictions` reads the LM's first answer token and the
correct token's log-prob from such a pass. An edit is a function ``h [N, d] -> h' [N, d]``.
"""

from __future__ import annotations

import numpy as np
import torch

from biosae.lm.activations import apply_edit, residual_hook, resolve_layer
from biosae.lm.last_token import Gpt2LastToken
from biosae.lm.qa_accuracy import takes_logits_to_keep


class PromptCache:
    """Prompts grouped by length, each group's prefix (all tokens but the last) run once.

    An edit at the answer position (the last prompt token) can't change any earlier position
    (causal attention), so every edited pass needs only the last token, run on top of the cached
    keys and values of the prefix: one token instead of ~20 per prompt, for each of the ~30
    passes of the causal tests. Grouping by length means no padding at all.

    GPT-2-family models go further (biosae.lm.last_token): the last token's clean residual at
    every hook point is kept too, so an edited pass starts at the hook's block instead of the
    embeddings, and several edits share the prefix without copying it. Other architectures run
    the whole model on the last token through Hugging Face's cache.
    tests/test_interventions.py checks both paths against full forward passes.
    """

    def __init__(self, model, prompt_ids: list[list[int]], batch_size: int = 256, for_training: bool = False):
        # for_training: prefixes computed under no_grad rather than inference_mode, since autograd
        # can't save inference tensors for backward (DAS trains through the cached passes).
        with torch.no_grad() if for_training else torch.inference_mode():
            self._build(model, prompt_ids, batch_size)

    def _build(self, model, prompt_ids, batch_size):
        self.model = model
        self.tail = Gpt2LastToken(model) if Gpt2LastToken.supports(model) else None
        device = next(model.parameters()).device
        keeps_logits = takes_logits_to_keep(model)
        by_length: dict[int, list[int]] = {}
        for i, prompt in enumerate(prompt_ids):
            by_length.setdefault(len(prompt), []).append(i)
        self.groups = []
        self._resumable = []  # per group, for the GPT-2 path: (prefix keys/values per block, residuals)
        for length, rows in sorted(by_length.items()):
            for start in range(0, len(rows), batch_size):
                index = np.array(rows[start : start + batch_size])
                ids = torch.tensor([prompt_ids[i] for i in index], device=device)
                cache = None
                if length > 1:
                    # only the keys and values are kept: no LM head over the prefix's tokens
                    # (logits_to_keep=1: its last one, the least the model computes)
                    keep = {"logits_to_keep": 1} if keeps_logits else {}
                    output = model(input_ids=ids[:, :-1], use_cache=True, **keep)
                    cache = getattr(output, "cache", None) or output.past_key_values
                if self.tail is not None:
                    prefix = None if cache is None else [(layer.keys, layer.values) for layer in cache.layers]
                    self._resumable.append((prefix, self.tail.clean_residuals(ids[:, -1], prefix, length - 1)))
                    cache = None  # the prefix lives on in `prefix`; the group holds no Hugging Face cache
                self.groups.append((index, ids[:, -1:], cache, length))
        self.size = len(prompt_ids)

    def _tail_logits(self, group: int, layer: int, edits: list) -> torch.Tensor:
        """GPT-2 path: logits [E, B, vocab] of group ``group``, one row block per edit (None: clean)."""
        prefix, residuals = self._resumable[group]
        hook = resolve_layer(self.model, layer)
        clean = residuals[hook]
        h = torch.stack([clean if edit is None else apply_edit(edit, clean) for edit in edits])
        return self.tail.logits_from(hook, h, prefix)

    def last_token_logprobs(self, layer: int, edit_for_rows=None):
        """Yield (row indices, next-token log-probs [B, vocab]) per group, with the edit applied
        (:meth:`last_token_logprobs_many` with that one edit)."""
        for index, logprobs in self.last_token_logprobs_many(layer, [edit_for_rows]):
            yield index, logprobs[0]

    @torch.inference_mode()
    def last_token_logprobs_many(self, layer: int, edits_for_rows: list, max_rows: int = 4096):
        """Yield (row indices, next-token log-probs [n_edits, B, vocab]) per group, one block per
        edit of ``edits_for_rows`` (each a function of a group's row indices that returns the edit;
        None: clean). Each group runs once per chunk of edits, its rows repeated
        once per edit in one forward call: on a small model the per-call overhead, not the
        arithmetic, bounds these passes (~80 single-edit passes per cell, ~25 ms a call on the
        tiny test model). Equal to one pass per edit (tests/test_interventions.py)."""
        from transformers import DynamicCache  # only the generic path needs transformers

        for group, (index, last, cache, _length) in enumerate(self.groups):
            rows = len(index)
            per_call = max(1, max_rows // rows)
            out = []
            for start in range(0, len(edits_for_rows), per_call):
                chunk = edits_for_rows[start : start + per_call]
                edits = [None if make is None else make(index) for make in chunk]
                if self.tail is not None:
                    logits = self._tail_logits(group, layer, edits)
                    out.append(torch.log_softmax(logits.float(), dim=-1).cpu())
                    continue

                def edit(h, edits=edits):
                    return torch.cat([part if e is None else e(part) for e, part in zip(edits, h.split(rows))])

                repeated = None
                if cache is not None:
                    repeated = DynamicCache(
                        ddp_cache_data=[
                            (
                                layer_cache.keys.repeat(len(chunk), 1, 1, 1),
                                layer_cache.values.repeat(len(chunk), 1, 1, 1),
                            )
                            for layer_cache in cache.layers
                        ]
                    )
                positions = torch.zeros(rows * len(chunk), dtype=torch.long, device=last.device)
                with residual_hook(self.model, layer, positions, capture=None, edit=edit):
                    logits = self.model(
                        input_ids=last.repeat(len(chunk), 1), cache=repeated, use_cache=repeated is not None
                    ).logits
                out.append(torch.log_softmax(logits[:, -1].float(), dim=-1).cpu().view(len(chunk), rows, -1))
            yield index, torch.cat(out)

    def group_logits(self, group: int, layer: int, edit) -> torch.Tensor:
        """Next-token logits ``[B, vocab]`` of group ``group`` with ``edit`` applied, autograd on
        (for training an intervention through the frozen LM). The prefix cache is restored after."""
        if self.tail is not None:
            return self._tail_logits(group, layer, [edit])[0].float()
        index, last, cache, length = self.groups[group]
        positions = torch.zeros(len(index), dtype=torch.long, device=last.device)
        try:
            with residual_hook(self.model, layer, positions, capture=None, edit=edit):
                logits = self.model(input_ids=last, cache=cache, use_cache=cache is not None).logits
        finally:
            if cache is not None:
                cache.crop(-1)
                for cached in getattr(cache, "layers", []):  # cut the step's graph off the prefix
                    if getattr(cached, "keys", None) is not None:
                        cached.keys, cached.values = cached.keys.detach(), cached.values.detach()
        return logits[:, -1].float()


def edited_predictions(prompts: PromptCache, answer_first_token: np.ndarray, layer: int, edit_for_rows=None):
    """The LM's first answer token and the correct token's log-prob, with an edit applied.

    ``edit_for_rows(index) -> edit`` builds the edit for rows ``index`` of a group (so that per-row
    edits such as swaps line up), or is None for the clean pass.
    """
    predicted, answer_logprob = edited_predictions_many(prompts, answer_first_token, layer, [edit_for_rows])
    return predicted[0], answer_logprob[0]


def edited_predictions_many(prompts: PromptCache, answer_first_token: np.ndarray, layer: int, edits_for_rows: list):
    """:func:`edited_predictions` for a list of edits (None: clean), in fewer forward calls.
    Returns (predicted int[E, N], correct-token log-prob float[E, N])."""
    n_edits = len(edits_for_rows)
    predicted = np.zeros((n_edits, prompts.size), dtype=np.int64)
    answer_logprob = np.zeros((n_edits, prompts.size), dtype=np.float32)
    for index, logprobs in prompts.last_token_logprobs_many(layer, edits_for_rows):
        predicted[:, index] = logprobs.argmax(-1).numpy()
        tokens = torch.from_numpy(answer_first_token[index])
        answer_logprob[:, index] = logprobs[:, torch.arange(len(index)), tokens].numpy()
    return predicted, answer_logprob
