"""Greedy exact-match QA accuracy, computed teacher-forced in one batched forward pass.

Teacher forcing gives exactly greedy decoding's verdict: greedy decoding reproduces the answer
iff the argmax at every answer position (and at the end-of-text position after it) is the
reference token, given that all earlier ones were. tests/test_qa_accuracy.py checks this
against ``model.generate`` on a sample.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from biosae.rules import RULES
from biosae.dataset.text import format_answer, format_prompt
from biosae.lm.tokenization import encode_qa_batch


@dataclass
class EncodedQA:
    prompt_ids: list[list[int]]
    answer_ids: list[list[int]]  # answer tokens + end-of-text


def encode_rows(tokenizer, rows: list[dict]) -> EncodedQA:
    """Prompt and answer ids of every row (biosae.lm.tokenization.encode_qa_batch)."""
    return EncodedQA(*encode_qa_batch(tokenizer, [format_prompt(row["question"]) for row in rows],
                                      [format_answer(row["answer"]) for row in rows]))


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
    """Per row: exact match, first-token correctness, first-token log-prob and argmax token."""
    device = device or next(model.parameters()).device
    n = len(encoded.prompt_ids)
    exact = np.zeros(n, dtype=bool)
    first = np.zeros(n, dtype=bool)
    first_logprob = np.zeros(n, dtype=np.float32)
    predicted_first = np.zeros(n, dtype=np.int64)
    # Sorting by length keeps padding small; results go back to row order.
    order = np.argsort([len(p) + len(a) for p, a in zip(encoded.prompt_ids, encoded.answer_ids)], kind="stable")
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        sequences = [encoded.prompt_ids[i] + encoded.answer_ids[i] for i in index]
        ids, mask = right_padded(sequences, pad_id)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        predictions = logits.argmax(-1).cpu()
        logprobs = torch.log_softmax(logits, dim=-1).cpu()
        for row, i in enumerate(index):
            p_len, answer = len(encoded.prompt_ids[i]), encoded.answer_ids[i]
            # logits at position t predict token t + 1; the answer position is p_len - 1.
            span = predictions[row, p_len - 1 : p_len - 1 + len(answer)]
            exact[i] = bool((span == torch.tensor(answer)).all())
            first[i] = bool(span[0] == answer[0])
            first_logprob[i] = float(logprobs[row, p_len - 1, answer[0]])
            predicted_first[i] = int(span[0])
    return {"exact": exact, "first_token": first, "first_token_logprob": first_logprob, "predicted_first": predicted_first}


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
