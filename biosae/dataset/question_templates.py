"""Question wordings: their families, which ones are trained, and the checks on that choice.

A rule's question file ``qa_templates/<rule>.txt`` lists its wordings, one a line, each marked
with its family (``noun: What is the birth city of {name}?``). A wording's index is its position
among the file's wordings (0-based; comment lines don't count): the index that
``dataset.train_templates`` lists and that every QA row carries as ``template_idx``.

- Indices 0-3 are the seed's four wordings. Those not trained are the held-out wordings of the
  cells ``ood_template`` and ``ood_both``; by default 0 is trained and 1-3 are held out.
- Indices from 4 on exist to be trained: listed in ``dataset.train_templates`` they join the
  training cell (and ``ood_person``); otherwise no QA row uses them.

The hard set ``qa_templates/hard/<rule>.txt`` is evaluated as its own cells; it is built from
biography words, and no training wording may share a content word with it (``STOP_WORDS``).
"""

from __future__ import annotations

import re
import string

from biosae.dataset.text import words
from biosae.errors import BiosaeError
from biosae.rules import RULES

SEED_WORDINGS = 4  # indices 0-3: the seed's 1 trained + 3 held-out wordings per rule

# noun: built only from the rule's attribute word ("Tell me the major of {name}.");
# verb: built on a biography phrase the hard set does not use ("From which university has
# {name} graduated?").
FAMILIES = ("noun", "verb")
_FAMILY_PREFIX = re.compile(r"^([A-Za-z_]+):\s+(.*)$")

# Words that carry no attribute: articles, prepositions, question words, auxiliaries, pronouns
# and the possessive 's (tokenized as "'" + "s"). Every other word of a wording is a content
# word. Deliberately short: a hard wording must not hide behind a long stop list.
STOP_WORDS = frozenset(
    """
    a an the
    of in on at to by for from with into about as
    what which who whom whose where when how why
    is was are were be been am do does did has have had
    me it its this that s
    """.split()
)


def split_family(line: str, known: tuple[str, ...] = FAMILIES, kind: str = "wording family") -> tuple[str | None, str]:
    """``"noun: What ...?"`` -> ("noun", "What ...?"); an unmarked line -> (None, line).

    Raises ValueError naming an unknown mark (``kind``, e.g. a wording family), so that a typo is
    not read as a template.
    """
    match = _FAMILY_PREFIX.match(line)
    if not match:
        return None, line
    family, wording = match.groups()
    if family not in known:
        raise ValueError(f"unknown {kind} {family!r} (known: {', '.join(known)})")
    return family, wording


def fixed_text(wording: str) -> str:
    """A wording's own text, its placeholders removed (a name is not a word of the wording)."""
    return " ".join(literal for literal, _, _, _ in string.Formatter().parse(wording))


def content_words(wording: str) -> list[str]:
    """The wording's words that are not stop words or punctuation, in order, each once."""
    seen: dict[str, None] = {}
    for word in words(fixed_text(wording)):
        if word.isalnum() and word not in STOP_WORDS:
            seen.setdefault(word, None)
    return list(seen)


# ------------------------------------------------------------------------------------------------
# Which wordings are trained


def check_training_keys(train_templates, train_template_idx, per_question=None) -> None:
    """The config keys agree: ``train_template_idx: k`` is ``train_templates: [k]``, and
    ``train_wordings_per_question`` draws no more wordings than a rule trains."""
    if train_templates is None:
        lists = [[0 if train_template_idx is None else train_template_idx]]
    else:
        lists = list(train_templates.values()) if isinstance(train_templates, dict) else [train_templates]
        if train_template_idx is not None and any(list(indices) != [train_template_idx] for indices in lists):
            raise BiosaeError(
                f"config key dataset.train_template_idx: {train_template_idx} disagrees with dataset.train_templates "
                f"{train_templates}; give one of the two (train_template_idx: {train_template_idx} is train_templates: "
                f"[{train_template_idx}])"
            )
    fewest = min((len(indices) for indices in lists), default=0)
    if per_question is not None and per_question > fewest:
        raise BiosaeError(
            f"config key dataset.train_wordings_per_question: {per_question} is more than the {fewest} "
            "training wordings of a rule in dataset.train_templates"
        )


def training_wordings(train_templates, train_template_idx, questions: dict, qa_templates_dir) -> dict:
    """rule -> sorted tuple of trained wording indices, from the config keys and the files.

    ``train_templates`` is one list for every rule or a mapping rule -> list; without it, the
    one wording ``train_template_idx`` (default 0) is trained.
    """
    check_training_keys(train_templates, train_template_idx)
    if train_templates is None:
        index = 0 if train_template_idx is None else train_template_idx
        if not 0 <= index < SEED_WORDINGS:
            raise BiosaeError(f"config key dataset.train_template_idx: {index} is not in 0..{SEED_WORDINGS - 1}")
        train_templates = [index]
    if isinstance(train_templates, dict):
        missing = [rule for rule in RULES if rule not in train_templates]
        unknown = sorted(set(train_templates) - set(RULES))
        if missing or unknown:
            problem = f"has no list for rule {missing[0]}" if missing else f"names unknown rule {unknown[0]!r}"
            raise BiosaeError(f"config key dataset.train_templates: {problem} (rules: {', '.join(RULES)})")
        by_rule = {rule: list(train_templates[rule]) for rule in RULES}
    else:
        by_rule = {rule: list(train_templates) for rule in RULES}
    for rule, indices in by_rule.items():
        if not indices:
            raise BiosaeError(f"config key dataset.train_templates: no training wording for rule {rule}")
        if len(set(indices)) != len(indices):
            raise BiosaeError(f"config key dataset.train_templates: {indices} lists a wording twice for rule {rule}")
        count = len(questions[rule])
        for index in indices:
            if not 0 <= index < count:
                raise BiosaeError(
                    f"config key dataset.train_templates: wording {index} of rule {rule} is not in "
                    f"{qa_templates_dir}/{rule}.txt, which has wordings 0..{count - 1}"
                )
    return {rule: tuple(sorted(indices)) for rule, indices in by_rule.items()}


def heldout_wordings(trained: dict) -> dict:
    """rule -> the seed's wordings (0-3) that are not trained: the cells ood_template, ood_both."""
    return {rule: tuple(i for i in range(SEED_WORDINGS) if i not in trained[rule]) for rule in RULES}


def evaluated_wordings(trained: dict) -> dict:
    """rule -> every wording index that makes a QA row, in index order."""
    heldout = heldout_wordings(trained)
    return {rule: tuple(sorted(set(trained[rule]) | set(heldout[rule]))) for rule in RULES}


def check_hard_wordings_untrained(questions: dict, hard_questions: dict, trained: dict, qa_templates_dir) -> None:
    """Fail if a hard wording, or one of its content words, is in a training question.

    The hard cells test wording the training questions never used; one shared word (or the
    wording itself) would let the LM read the rule from training questions instead. One line
    names the hard wording, the word and the training wording that has it.
    """
    owner: dict[str, tuple[str, int]] = {}  # content word -> (rule, index) of a training wording
    trained_text: dict[tuple[str, ...], tuple[str, int]] = {}
    for rule in RULES:
        for index in trained[rule]:
            wording = questions[rule][index]
            for word in content_words(wording):
                owner.setdefault(word, (rule, index))
            trained_text.setdefault(tuple(words(fixed_text(wording))), (rule, index))
    for rule in RULES:
        for index, hard in enumerate(hard_questions[rule]):
            where = _name(hard, f"{qa_templates_dir}/hard/{rule}.txt", index)
            same = trained_text.get(tuple(words(fixed_text(hard))))
            if same:
                raise BiosaeError(f"hard wording {where} is trained as {_trained(questions, same, qa_templates_dir)}")
            for word in content_words(hard):
                if word in owner:
                    raise BiosaeError(
                        f"hard wording {where} shares the content word {word!r} with the training wording "
                        f"{_trained(questions, owner[word], qa_templates_dir)}"
                    )


def _name(wording: str, path: str, index: int) -> str:
    return f"{wording!r} ({path}, template_idx {index})"


def _trained(questions: dict, key: tuple[str, int], qa_templates_dir) -> str:
    rule, index = key
    return _name(questions[rule][index], f"{qa_templates_dir}/{rule}.txt", index)


def describe_training(trained: dict, families: dict) -> str:
    """'2 wordings per rule (noun 1, verb 1)', for the dataset log."""
    counts = {len(indices) for indices in trained.values()}
    per_family: dict[str, int] = {}
    for rule in RULES:
        for index in trained[rule]:
            family = families[rule][index] or "unmarked"
            per_family[family] = per_family.get(family, 0) + 1
    per_rule = "/".join(str(c) for c in sorted(counts))
    mix = ", ".join(f"{family} {count / len(RULES):g}" for family, count in sorted(per_family.items()))
    return f"{per_rule} training wordings per rule ({mix})"
