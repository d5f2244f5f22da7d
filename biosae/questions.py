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


def validate_extra_rows(path, rows: list[dict]) -> list[dict]:
    if not rows:
        raise BiosaeError(f"{path}: no question rows")
    cell = extra_cell_name(path)
    out = []
    for line, row in enumerate(rows, start=1):
        for field in REQUIRED_FIELDS:
            if not isinstance(row.get(field), str) or not row[field].strip():
                raise BiosaeError(f"{path}:{line}: field {field!r} is missing or not a non-empty string")
        rule_idx, rule_name = row.get("rule_idx"), row.get("rule_name")
        if rule_idx is None and rule_name is None:
            raise BiosaeError(f"{path}:{line}: needs 'rule_idx' (0-5) or 'rule_name'")
        if rule_idx is not None and (not isinstance(rule_idx, int) or not 0 <= rule_idx < len(RULES)):
            raise BiosaeError(f"{path}:{line}: rule_idx {rule_idx!r} is not an integer in 0..5")
        if rule_name is not None and rule_name not in RULES:
            raise BiosaeError(f"{path}:{line}: rule_name {rule_name!r} is not one of {', '.join(RULES)}")
        if rule_idx is not None and rule_name is not None and RULES[rule_idx] != rule_name:
            raise BiosaeError(f"{path}:{line}: rule_idx {rule_idx} and rule_name {rule_name!r} disagree")
        index = rule_idx if rule_idx is not None else RULES.index(rule_name)
        out.append({**row, "rule_idx": index, "rule_name": RULES[index],
                    "template_idx": int(row.get("template_idx", 0)), "split": cell})
    return out


def load_question_files(files: dict) -> list[dict]:
    """``files`` maps input names (qa_train, qa_test, qa_hard, extra_<i>) to JSONL paths."""
    rows: list[dict] = []
    for key, path in files.items():
        loaded = read_jsonl(path)
        rows.extend(validate_extra_rows(path, loaded) if key.startswith("extra_") else loaded)
    return rows
