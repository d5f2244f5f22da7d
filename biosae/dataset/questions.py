"""QA rows from the dataset stage and from user-written question files, as one list of rows.

Every row carries its evaluation cell in ``split``. Rows of a user file (config
``evaluate.extra_questions``) form a cell of their own, named ``extra:<file stem>``, whatever
their own ``split`` says; they are validated field by field with one-line errors.
"""

from __future__ import annotations

from pathlib import Path

from biosae.errors import BiosaeError
from biosae.io import read_jsonl
from biosae.rules import RULES

REQUIRED_FIELDS = ("person_id", "question", "answer")


def extra_cell_name(path) -> str:
    return f"extra:{Path(path).stem}"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not rule 1


def _row_line_numbers(path) -> list[int]:
    """The file line of each row read_jsonl returns (it skips blank lines)."""
    with open(path, encoding="utf-8") as handle:
        return [number for number, line in enumerate(handle, start=1) if line.strip()]


def validate_extra_rows(path, rows: list[dict], line_numbers: list[int] | None = None) -> list[dict]:
    """Check a user question file's rows field by field; errors name the file and its line."""
    if not rows:
        raise BiosaeError(f"{path}: no question rows")
    cell = extra_cell_name(path)
    line_numbers = line_numbers or list(range(1, len(rows) + 1))
    out = []
    for line, row in zip(line_numbers, rows):
        for field in REQUIRED_FIELDS:
            if not isinstance(row.get(field), str) or not row[field].strip():
                raise BiosaeError(f"{path}:{line}: field {field!r} is missing or not a non-empty string")
        rule_idx, rule_name = row.get("rule_idx"), row.get("rule_name")
        if rule_idx is None and rule_name is None:
            raise BiosaeError(f"{path}:{line}: needs 'rule_idx' (0-5) or 'rule_name'")
        if rule_idx is not None and (not _is_int(rule_idx) or not 0 <= rule_idx < len(RULES)):
            raise BiosaeError(f"{path}:{line}: rule_idx {rule_idx!r} is not an integer in 0..5")
        if "template_idx" in row and (not _is_int(row["template_idx"]) or row["template_idx"] < 0):
            raise BiosaeError(f"{path}:{line}: template_idx {row['template_idx']!r} is not an integer >= 0")
        if rule_name is not None and rule_name not in RULES:
            raise BiosaeError(f"{path}:{line}: rule_name {rule_name!r} is not one of {', '.join(RULES)}")
        if rule_idx is not None and rule_name is not None and RULES[rule_idx] != rule_name:
            raise BiosaeError(f"{path}:{line}: rule_idx {rule_idx} and rule_name {rule_name!r} disagree")
        index = rule_idx if rule_idx is not None else RULES.index(rule_name)
        out.append(
            {
                **row,
                "rule_idx": index,
                "rule_name": RULES[index],
                "template_idx": int(row.get("template_idx", 0)),
                "split": cell,
            }
        )
    return out


def load_question_files(files: dict) -> list[dict]:
    """``files`` maps input names (qa_train, qa_test, qa_hard, extra_<i>) to JSONL paths."""
    rows: list[dict] = []
    for key, path in files.items():
        loaded = read_jsonl(path)
        rows.extend(validate_extra_rows(path, loaded, _row_line_numbers(path)) if key.startswith("extra_") else loaded)
    return rows


def check_extra_words(files: dict, unknown_word) -> None:
    """Every question and answer of the user question files among ``files`` (keys ``extra_<i>``)
    uses words the LM knows: ``unknown_word(text)`` gives the first word of ``text`` the LM's
    tokenizer has no token for, or None. An unknown word is one line naming the file and line."""
    for key, path in files.items():
        if not key.startswith("extra_"):
            continue
        for line, row in zip(_row_line_numbers(path), read_jsonl(path)):
            for field in ("question", "answer"):
                word = unknown_word(row[field])
                if word is not None:
                    raise BiosaeError(f"{path}:{line}: the {field}'s word {word!r} is not in the LM's vocabulary")
