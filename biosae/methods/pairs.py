"""Base/source pairs for interchange interventions (MIB's IIA), shared by every method.

A pair is (base row: person P asked rule A, source row: person Q != P asked rule B != A), both
from the same evaluation cell. Interchange gives the base the source's value of the rule variable;
success is the LM answering P's rule-B attribute. Pairs are seeded and rule-stratified: the
rule-A bases cycle through the five other rules as B, so every (A, B) is about equally frequent.
RAVEL's Isolate uses same-rule pairs (source: person Q != P asked rule A): there a method that
moves only the rule leaves P's own answer in place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from biosae.errors import BiosaeError
from biosae.io import atomic_path
from biosae.rules import RULES


@dataclass
class InterchangePairs:
    base_rows: np.ndarray  # int[N] row numbers of the activation index
    source_rows: np.ndarray  # int[N]; -1 where no source exists (such a base is not scored)

    @property
    def scored(self) -> np.ndarray:
        return self.source_rows >= 0

    def as_set(self) -> set[tuple[int, int]]:
        return {(int(b), int(s)) for b, s in zip(self.base_rows, self.source_rows) if s >= 0}


def draw_pairs(
    index, base_rows: np.ndarray, candidate_rows: np.ndarray, seed, sources_per_base: int = 1, same_rule: bool = False
) -> InterchangePairs:
    """For each base row, ``sources_per_base`` sources among ``candidate_rows`` (rows of the
    activation index): another person, another rule, the rules cycled per base rule; with
    ``same_rule``, another person asked the base's own rule (RAVEL's Isolate pairs)."""
    rng = np.random.default_rng(seed)
    rules = index["rule_idx"].to_numpy()
    persons = index["person_id"].to_numpy()
    candidates = np.asarray(candidate_rows)
    by_rule = {r: candidates[rules[candidates] == r] for r in range(len(RULES))}
    seen_per_rule = np.zeros(len(RULES), dtype=np.int64)
    bases, sources = [], []
    for base in np.asarray(base_rows):
        a = int(rules[base])
        for _ in range(sources_per_base):
            b = a if same_rule else (a + 1 + seen_per_rule[a] % (len(RULES) - 1)) % len(RULES)
            seen_per_rule[a] += 1
            pool = by_rule[b]
            pool = pool[persons[pool] != persons[base]]
            bases.append(int(base))
            sources.append(int(rng.choice(pool)) if len(pool) else -1)
    return InterchangePairs(np.array(bases, dtype=np.int64), np.array(sources, dtype=np.int64))


def evaluation_pairs(index, cell: str, base_rows: np.ndarray, seed: int) -> InterchangePairs:
    """The scored pairs of one cell: one source per base of the cell's causal sample."""
    cell_rows = np.flatnonzero((index["split"] == cell).to_numpy())
    return draw_pairs(index, base_rows, cell_rows, [seed, 104729, sum(map(ord, cell))])


def same_rule_pairs(index, cell: str, base_rows: np.ndarray, seed: int) -> InterchangePairs:
    """The cell's Isolate pairs: one source per base of the causal sample, another person asked
    the same rule (its own seed, so the IIA pairs stay as they are)."""
    cell_rows = np.flatnonzero((index["split"] == cell).to_numpy())
    return draw_pairs(index, base_rows, cell_rows, [seed, 7919, sum(map(ord, cell))], same_rule=True)


def person_answer_tokens(index) -> dict[str, list]:
    """person_id -> first answer token of each of the six rules (None where never asked)."""
    table: dict[str, list] = {}
    for person, rule, token in zip(index["person_id"], index["rule_idx"], index["answer_first_token"]):
        table.setdefault(person, [None] * len(RULES))[int(rule)] = int(token)
    return table


def target_tokens(index, base_rows: np.ndarray, target_rules: np.ndarray) -> np.ndarray:
    """int[N]: the first answer token of each base row's person for ``target_rules[i]`` (-1: unknown)."""
    answers = person_answer_tokens(index)
    persons = index["person_id"].to_numpy()
    out = np.full(len(base_rows), -1, dtype=np.int64)
    for i, (row, rule) in enumerate(zip(base_rows, target_rules)):
        token = answers[persons[row]][int(rule)]
        out[i] = -1 if token is None else token
    return out


def write_training_pairs(path, training, validation) -> None:
    """The (base_row, source_row) pairs a trained method (DAS, a causal SAE) trained and validated
    on, one CSV row each with its use, so that evaluation can refuse to score any of them."""
    import pandas as pd

    table = pd.DataFrame(
        {
            "base_row": np.concatenate([training.base_rows, validation.base_rows]),
            "source_row": np.concatenate([training.source_rows, validation.source_rows]),
            "use": ["train"] * len(training.base_rows) + ["validation"] * len(validation.base_rows),
        }
    )
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def read_training_pairs(path, owner: str) -> set[tuple[int, int]]:
    """:func:`write_training_pairs`' pairs with a source; ``owner`` names the method in the one-line error."""
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as error:
        raise BiosaeError(f"{path}: cannot read {owner} ({error})") from None
    return {(int(b), int(s)) for b, s in zip(table["base_row"], table["source_row"]) if s >= 0}
