"""The LM's greedy answers, optionally with an edit of the residual stream at the answer position."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch

from biosae.lm.activations import residual_hook
from biosae.lm.qa_accuracy import right_padded, takes_logits_to_keep


def greedy_answers(
    model,
    prompt_ids: Sequence[Sequence[int]],
    pad_id: int,
    eos_id: int,
    layer: int,
    edit_for_rows=None,
    max_tokens: int = 16,
    batch_size: int = 64,
) -> list[list[int]]:
    """Each prompt's greedy answer tokens (up to end-of-text, at most ``max_tokens``).

    ``edit_for_rows(rows) -> edit`` (None: no edit) gives the edit of a batch of prompts ``rows``
    (row i of the edit's input is prompt ``rows[i]``); it replaces the residual stream at ``layer``
    at the answer position in every decoding step's forward pass, so that each generated token
    sees the same edited answer position. Each step runs the whole sequence (prompt and answer so
    far, right-padded as in biosae.lm.qa_accuracy): answers are a few tokens.
    """
    device = next(model.parameters()).device
    keeps_logits = takes_logits_to_keep(model)
    answers: list[list[int]] = [[] for _ in prompt_ids]
    order = np.argsort([len(p) for p in prompt_ids], kind="stable")  # little padding, as the pipeline batches
    for start in range(0, len(prompt_ids), batch_size):
        rows = order[start : start + batch_size]
        edit = None if edit_for_rows is None else edit_for_rows(rows)
        answer_positions = torch.tensor([len(prompt_ids[i]) - 1 for i in rows], device=device)
        finished = np.zeros(len(rows), dtype=bool)
        for _ in range(max_tokens):
            sequences = [list(prompt_ids[i]) + answers[i] for i in rows]
            ids, mask = right_padded(sequences, pad_id)
            last = torch.tensor([len(s) - 1 for s in sequences], device=device)
            hook = (
                residual_hook(model, layer, answer_positions, edit=edit)
                if edit is not None
                else contextlib.nullcontext()
            )
            with torch.inference_mode(), hook:
                if keeps_logits:  # the LM head at each row's last token only
                    logits = model(
                        input_ids=ids.to(device), attention_mask=mask.to(device), logits_to_keep=last[:, None]
                    ).logits[:, 0]
                else:
                    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
                    logits = logits[torch.arange(len(rows), device=device), last]
            for row, token in zip(np.flatnonzero(~finished), logits.argmax(-1).cpu().numpy()[~finished]):
                if token == eos_id:
                    finished[row] = True
                else:
                    answers[rows[row]].append(int(token))
            if finished.all():
                break
    return answers
