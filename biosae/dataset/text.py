"""The text conventions shared by the dataset, the tokenizer and the vocabulary check.

Prompt format (the same in LM training, QA accuracy, activations and interventions):
    "<question>\nAnswer:"  followed by the answer " <answer>" and the end-of-text token.
The answer position is the last prompt token (":" of "Answer:"): its hidden state predicts the
first answer token.
"""

from __future__ import annotations

import re

ANSWER_CUE = "Answer:"

# The from-scratch tokenizer's pre-tokenization: lowercase, words and runs of punctuation.
_WORD = re.compile(r"\w+|[^\w\s]+")


def words(text: str) -> list[str]:
    """The word-level units a from-scratch model sees (lowercased, punctuation split off)."""
    return _WORD.findall(text.lower())


def format_prompt(question: str) -> str:
    return f"{question}\n{ANSWER_CUE}"


def format_answer(answer: str) -> str:
    return f" {answer}"


MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def format_birth_date(day: int, month: int, year: int) -> str:
    """The one surface form of a birth date, in biographies and answers alike: '12 March 1985'."""
    return f"{day} {MONTHS[month - 1]} {year}"
