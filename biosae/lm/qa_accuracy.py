"""Greedy exact-match QA accuracy, computed teacher-forced in one batched forward pass.

Teacher forcing gives exactly greedy decoding's verdict: greedy decoding reproduces the answer
iff the argmax at every answer position (and at the end-of-text position after it) is the
reference token, given that all earlier ones were. tests/test_qa_accuracy.py checks this
against ``model.generate`` on a sample.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from biosae.dataset.text import format_answer, format_prompt
from biosae.rules import RULES


@dataclass
class EncodedQA:
    prompt_ids: list[list[int]]
    answer_ids: list[list[int]]  # answer tokens + end-of-text


def encode_rows(tokenizer, rows: list[dict]) -> EncodedQA:
    """Prompt and answer ids of every row (biosae.lm.tokenization.encode_qa_batch)."""
    # imported here: this module's right_padded is needed by jobs that never tokenize (the SAE
    # trainings read activation files), and transformers' import is ~1 s of each such job
    from biosae.lm.tokenization import encode_qa_batch

    return EncodedQA(
        *encode_qa_batch(
            tokenizer, [format_prompt(row["question"]) for row in rows], [format_answer(row["answer"]) for row in rows]
        )
    )


def takes_logits_to_keep(model) -> bool:
    """Whether ``model``'s forward can compute the LM head at chosen positions only
    (transformers' ``logits_to_keep``: GPT-2, Llama and most causal LMs)."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def right_padded(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right padding: causal attention never lets a real token see a pad token, and absolute
    position ids stay those of an unpadded sequence (left padding would shift them in GPT-2)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1
    return ids, mask


@torch.inference_mode()
def score_answers(model, encoded: EncodedQA, pad_id: int, batch_size: int = 256, device=None) -> dict:
    """Per row: exact match, first-token correctness, first-token log-prob and argmax token.

    Only the answer positions need the LM head: with a model that takes ``logits_to_keep`` (GPT-2,
    Llama and most of transformers' causal LMs) the head and the argmax run on those ~4 positions
    per row instead of all ~25, and the log-softmax on the first answer position alone. Measured
    on a quarter of the default run's rows (10,500, 2 threads): 23.6 s with the head and a
    full-width log-softmax at every position, 18.9 s without. Other models take the full logits;
    both give the same verdicts (tests/test_lm.py).
    """
    device = device or next(model.parameters()).device
    n = len(encoded.prompt_ids)
    exact = np.zeros(n, dtype=bool)
    first = np.zeros(n, dtype=bool)
    first_logprob = np.zeros(n, dtype=np.float32)
    predicted_first = np.zeros(n, dtype=np.int64)
    keeps_logits = takes_logits_to_keep(model)
    # Sorting by length keeps padding small; results go back to row order.
    order = np.argsort([len(p) + len(a) for p, a in zip(encoded.prompt_ids, encoded.answer_ids)], kind="stable")
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        sequences = [encoded.prompt_ids[i] + encoded.answer_ids[i] for i in index]
        ids, mask = right_padded(sequences, pad_id)
        # logits at position t predict token t + 1: row r's answer is predicted from positions
        # p_len - 1 .. p_len - 2 + len(answer), one span per row.
        spans = [(len(encoded.prompt_ids[i]) - 1, len(encoded.answer_ids[i])) for i in index]
        answer_positions = torch.zeros(ids.shape, dtype=torch.bool)
        for row, (begin, length) in enumerate(spans):
            answer_positions[row, begin : begin + length] = True
        if keeps_logits:  # [positions of every row's span, in row order, vocab]
            logits = model(
                input_ids=ids.to(device), attention_mask=mask.to(device), logits_to_keep=answer_positions.to(device)
            ).logits.float()
        else:
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            logits = logits[answer_positions.to(device)]
        predictions = logits.argmax(-1).cpu()
        lengths = [length for _, length in spans]
        firsts = torch.tensor(np.cumsum([0] + lengths[:-1]))
        answers = torch.tensor([token for i in index for token in encoded.answer_ids[i]])
        first_tokens = answers[firsts]
        correct = (predictions == answers).split(lengths)
        logprobs = torch.log_softmax(logits[firsts.to(device)], dim=-1).cpu()
        exact[index] = [bool(span.all()) for span in correct]
        first[index] = (predictions[firsts] == first_tokens).numpy()
        first_logprob[index] = logprobs[torch.arange(len(index)), first_tokens].numpy()
        predicted_first[index] = predictions[firsts].numpy()
    return {
        "exact": exact,
        "first_token": first,
        "first_token_logprob": first_logprob,
        "predicted_first": predicted_first,
    }


def accuracy_report(rows: list[dict], scores: dict) -> dict:
    """Exact-match and first-token accuracy per cell, per rule and per question template."""
    groups: dict = defaultdict(lambda: defaultdict(list))
    for i, row in enumerate(rows):
        cell = row["split"]
        for key in ("all", f"rule/{row['rule_name']}", f"template/{row['rule_name']}/{row['template_idx']}"):
            groups[cell][key].append(i)
    report = {}
    for cell, keys in groups.items():
        entry = {"n": len(keys["all"])}
        for metric in ("exact", "first_token"):
            entry[metric] = float(scores[metric][keys["all"]].mean())
        entry["by_rule"] = {
            rule: {m: float(scores[m][keys[f"rule/{rule}"]].mean()) for m in ("exact", "first_token")}
            for rule in RULES
            if keys.get(f"rule/{rule}")
        }
        entry["by_template"] = {
            key.removeprefix("template/"): {m: float(scores[m][idx].mean()) for m in ("exact", "first_token")}
            for key, idx in sorted(keys.items())
            if key.startswith("template/")
        }
        report[cell] = entry
    return report


def monitor_for_cells(tokenizer, rows: list[dict], cells=("train", "ood_person"), per_cell: int = 300, seed: int = 0):
    """A callback for the training loop: exact-match accuracy on a fixed sample of each cell."""
    rng = np.random.default_rng(seed)
    samples = {}
    for cell in cells:
        cell_rows = [row for row in rows if row["split"] == cell]
        if cell_rows:
            pick = rng.choice(len(cell_rows), size=min(per_cell, len(cell_rows)), replace=False)
            samples[cell] = encode_rows(tokenizer, [cell_rows[i] for i in sorted(pick)])

    def monitor(model) -> dict:
        return {
            f"{cell}_exact": round(float(score_answers(model, encoded, tokenizer.pad_token_id)["exact"].mean()), 4)
            for cell, encoded in samples.items()
        }

    return monitor
