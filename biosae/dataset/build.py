"""Stage 1: synthetic persons, biographies, question-answer rows and the LM training corpus.

Deterministic: the same pools, templates and config give byte-identical outputs (one seeded
numpy Generator drives every choice, in a fixed order).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass

import numpy as np

from biosae.dataset.entities import EntityPools, Templates, load_entity_pools, load_templates
from biosae.dataset.question_templates import (
    check_hard_wordings_untrained,
    check_training_keys,
    describe_training,
    evaluated_wordings,
    fixed_text,
    training_wordings,
)
from biosae.dataset.text import format_answer, format_birth_date, format_prompt, words
from biosae.errors import BiosaeError
from biosae.io import write_json_records, write_jsonl
from biosae.rules import RULES

YEAR_RANGE = (1900, 2099)


@dataclass(frozen=True)
class DatasetConfig:
    num_persons: int = 1000
    test_fraction: float = 0.5
    biographies_per_person: int = 5
    # Trained question wordings: a list of template indices for every rule, or rule -> list;
    # train_template_idx k (the one-wording form) is train_templates [k]. Neither: [0].
    train_templates: list | dict | None = None
    train_template_idx: int | None = None
    # Biography sentences: "seed" (a file's unmarked lines) or "extended" (also its marked ones).
    biography_templates: str = "seed"
    # How many of the trained wordings each seen person's question about a rule is trained in,
    # drawn per person and rule; None: all of them.
    train_wordings_per_question: int | None = None
    seed: int = 0
    entities_dir: str = "data/entities"
    templates_dir: str = "data/templates"
    qa_templates_dir: str = "data/qa_templates"

    @classmethod
    def from_config(cls, section: dict) -> DatasetConfig:
        return cls(**{key: section[key] for key in cls.__dataclass_fields__ if key in section})


def sample_full_names(pools: EntityPools, count: int, rng: np.random.Generator) -> list[str]:
    """``count`` distinct 'First Middle Last' names, drawn without replacement from all combinations."""
    n_first, n_middle, n_last = len(pools.first_names), len(pools.middle_names), len(pools.last_names)
    capacity = n_first * n_middle * n_last
    if count > capacity:
        raise BiosaeError(
            f"dataset.num_persons: {count} persons requested but the name pools allow only {capacity} unique full names"
        )
    codes = rng.choice(capacity, size=count, replace=False)
    names = []
    for code in codes.tolist():
        first, rest = divmod(code, n_middle * n_last)
        middle, last = divmod(rest, n_last)
        names.append(f"{pools.first_names[first]} {pools.middle_names[middle]} {pools.last_names[last]}")
    return names


def sample_birth_dates(count: int, rng: np.random.Generator) -> list[str]:
    years = rng.integers(YEAR_RANGE[0], YEAR_RANGE[1] + 1, size=count)
    months = rng.integers(1, 13, size=count)
    fractions = rng.random(size=count)
    dates = []
    for year, month, fraction in zip(years.tolist(), months.tolist(), fractions.tolist()):
        days_in_month = calendar.monthrange(year, month)[1]
        dates.append(format_birth_date(1 + int(fraction * days_in_month), month, year))
    return dates


def generate_persons(pools: EntityPools, config: DatasetConfig, rng: np.random.Generator) -> list[dict]:
    """Persons with the six attributes; work city is always the employer's headquarters city."""
    n = config.num_persons
    names = sample_full_names(pools, n, rng)
    birth_dates = sample_birth_dates(n, rng)
    birth_cities = rng.integers(len(pools.cities), size=n).tolist()
    universities = rng.integers(len(pools.universities), size=n).tolist()
    majors = rng.integers(len(pools.majors), size=n).tolist()
    employers = rng.integers(len(pools.employers), size=n).tolist()
    persons = []
    for i in range(n):
        employer = pools.employers[employers[i]]
        persons.append(
            {
                "person_id": f"person_{i:06d}",
                "full_name": names[i],
                "birth_date": birth_dates[i],
                "birth_city": pools.cities[birth_cities[i]],
                "university": pools.universities[universities[i]],
                "major": pools.majors[majors[i]],
                "employer": employer,
                "work_city": pools.employer_city[employer],
            }
        )
    return persons


def write_biographies(persons: list[dict], templates: Templates, count: int, rng: np.random.Generator) -> set:
    """Add ``count`` biographies to each person: one sentence per attribute, order shuffled.

    Every sentence names the person in full (Allen-Zhu & Li's "fullname" variant, which helps
    knowledge extraction), so the first sentence always carries the full name. Returns the set of
    (rule, template index) pairs used, for the vocabulary check.
    """
    n_rules = len(RULES)
    template_counts = np.array([len(templates.biography[rule]) for rule in RULES])
    choices = (rng.random((len(persons), count, n_rules)) * template_counts).astype(np.int64)
    orders = np.argsort(rng.random((len(persons), count, n_rules)), axis=-1)
    used = {(rule, int(t)) for r, rule in enumerate(RULES) for t in np.unique(choices[:, :, r])}
    for p, person in enumerate(persons):
        bios = []
        for b in range(count):
            sentences = [
                templates.biography[rule][choices[p, b, r]].format(name=person["full_name"], **{rule: person[rule]})
                for r, rule in enumerate(RULES)
            ]
            bios.append(" ".join(sentences[r] for r in orders[p, b]))
        person["biographies"] = bios
    return used


def split_persons(persons: list[dict], test_fraction: float, rng: np.random.Generator):
    """Disjoint train (QA-trained) and test (biography-only) persons, in person-id order."""
    n_test = int(round(len(persons) * test_fraction))
    if not 0 < n_test < len(persons):
        raise BiosaeError(
            f"dataset.test_fraction: {test_fraction} leaves no train or no test persons out of {len(persons)}"
        )
    test_ids = set(rng.choice(len(persons), size=n_test, replace=False).tolist())
    train = [p for i, p in enumerate(persons) if i not in test_ids]
    test = [p for i, p in enumerate(persons) if i in test_ids]
    return train, test


def evaluation_cell(seen_person: bool, seen_template: bool) -> str:
    if seen_person:
        return "train" if seen_template else "ood_template"
    return "ood_person" if seen_template else "ood_both"


def _qa_row(person: dict, rule_idx: int, template_idx: int, template: str, split: str) -> dict:
    """One QA row (the seed's fields, plus template_idx and the evaluation cell as split)."""
    rule = RULES[rule_idx]
    return {
        "person_id": person["person_id"],
        "full_name": person["full_name"],
        "rule_idx": rule_idx,
        "rule_name": rule,
        "question": template.format(name=person["full_name"]),
        "answer": person[rule],
        "template_idx": template_idx,
        "split": split,
    }


def qa_rows(persons: list[dict], templates: Templates, trained: dict, seen_person: bool) -> list[dict]:
    """Rows of every evaluated wording (trained and held out), its cell from person x wording."""
    evaluated = evaluated_wordings(trained)
    return [
        _qa_row(
            person,
            rule_idx,
            template_idx,
            templates.questions[rule][template_idx],
            evaluation_cell(seen_person, template_idx in trained[rule]),
        )
        for person in persons
        for rule_idx, rule in enumerate(RULES)
        for template_idx in evaluated[rule]
    ]


def sample_trained_wordings(rows: list[dict], trained: dict, per_question: int, rng: np.random.Generator) -> list[dict]:
    """The train-cell rows of ``per_question`` wordings per person and rule, drawn without
    replacement; the other cells' rows unchanged.

    With many trained wordings, training every one for every person makes QA most of the corpus,
    and the LM learns unseen persons' attributes from their biographies less well. A draw per
    person keeps every wording trained, on a share of the persons, at a fraction of the QA text.
    """
    drawn = {}
    for row in rows:
        key = (row["person_id"], row["rule_name"])
        if row["split"] == "train" and key not in drawn:
            options = np.array(trained[row["rule_name"]])
            drawn[key] = set(rng.choice(options, size=per_question, replace=False).tolist())
    return [
        row
        for row in rows
        if row["split"] != "train" or row["template_idx"] in drawn[(row["person_id"], row["rule_name"])]
    ]


def hard_qa_rows(persons: list[dict], templates: Templates, cell: str) -> list[dict]:
    return [
        _qa_row(person, rule_idx, template_idx, template, cell)
        for person in persons
        for rule_idx, rule in enumerate(RULES)
        for template_idx, template in enumerate(templates.hard_questions[rule])
    ]


def _template_words(template: str) -> set[str]:
    """Words of a template's fixed text (placeholders removed)."""
    return set(words(fixed_text(template)))


def training_vocabulary(persons, templates: Templates, used_biography_templates, trained: dict) -> set[str]:
    """Every word the LM's training text contains, computed from its parts (exact, and fast)."""
    vocabulary: set[str] = set()
    for rule, t in used_biography_templates:
        vocabulary |= _template_words(templates.biography[rule][t])
    for rule in RULES:
        for index in trained[rule]:
            vocabulary |= _template_words(format_prompt(templates.questions[rule][index]))
    values = {person[key] for person in persons for key in ("full_name", *RULES)}
    for value in values:
        vocabulary.update(words(value))
    return vocabulary


def check_question_vocabulary(templates: Templates, vocabulary: set[str], qa_templates_dir, trained: dict) -> None:
    """Fail naming each evaluated question template whose words the training text never contains.

    A model trained from scratch cannot read a word it never saw, so such a template would test
    vocabulary, not generalization of wording (measured: 21 unseen words gave chance-level rule
    detection and ~12% answer accuracy). Wordings no QA row uses are not checked.
    """
    evaluated = evaluated_wordings(trained)
    problems = []
    for subdir, table in (("", templates.questions), ("hard/", templates.hard_questions)):
        for rule in RULES:
            for index, template in enumerate(table[rule]):
                if not subdir and index not in evaluated[rule]:
                    continue
                unseen = sorted(_template_words(format_prompt(template)) - vocabulary)
                if unseen:
                    problems.append(f"{qa_templates_dir}/{subdir}{rule}.txt template {index + 1} {unseen}")
    if problems:
        raise BiosaeError("question words never seen in the training text: " + "; ".join(problems))


def check_trained_phrases_in_biographies(templates: Templates, biography_vocabulary: set[str], config, trained) -> None:
    """Fail naming a trained verb wording built on a biography phrase that this run's biographies leave out.

    A trained wording's words are in the training text through its own QA rows, so the vocabulary
    check passes it; but a verb frame (built on a biography phrase) whose phrase no biography holds
    links nothing the LM has read. A word of the frame found in none of the biographies or values
    (``biography_vocabulary``) but in a left-out sentence template names that sentence's set.
    """
    left_out = {
        word: rule
        for rule in RULES
        for template in templates.left_out_biography[rule]
        for word in _template_words(template)
        if word not in biography_vocabulary
    }
    for rule in RULES:
        for index in trained[rule]:
            if templates.question_families[rule][index] != "verb":
                continue
            wording = templates.questions[rule][index]
            missing = [word for word in words(fixed_text(wording)) if word in left_out]
            if missing:
                raise BiosaeError(
                    f"training verb wording {wording!r} ({config.qa_templates_dir}/{rule}.txt, template_idx {index}) is "
                    f"built on a biography sentence this run leaves out: the word {missing[0]!r} is only in "
                    f"{config.templates_dir}/{left_out[missing[0]]}.txt's sentences outside config key "
                    f"dataset.biography_templates: {config.biography_templates}"
                )


def build_dataset(config: DatasetConfig):
    """Generate everything in memory: (train persons, test persons, QA rows by file, corpus)."""
    pools = load_entity_pools(config.entities_dir)
    templates = load_templates(config.templates_dir, config.qa_templates_dir, config.biography_templates)
    trained = training_wordings(
        config.train_templates, config.train_template_idx, templates.questions, config.qa_templates_dir
    )
    check_training_keys(config.train_templates, config.train_template_idx, config.train_wordings_per_question)
    check_hard_wordings_untrained(templates.questions, templates.hard_questions, trained, config.qa_templates_dir)
    rng = np.random.default_rng(config.seed)
    persons = generate_persons(pools, config, rng)
    used = write_biographies(persons, templates, config.biographies_per_person, rng)
    train_persons, test_persons = split_persons(persons, config.test_fraction, rng)

    train_rows = qa_rows(train_persons, templates, trained, seen_person=True)
    if config.train_wordings_per_question is not None:
        train_rows = sample_trained_wordings(train_rows, trained, config.train_wordings_per_question, rng)
    test_rows = qa_rows(test_persons, templates, trained, seen_person=False)
    qa_train = [row for row in train_rows if row["split"] == "train"]
    qa_test = [row for row in train_rows if row["split"] != "train"] + test_rows
    qa_hard = hard_qa_rows(train_persons, templates, "hard_seen_person") + hard_qa_rows(
        test_persons, templates, "hard_unseen_person"
    )

    vocabulary = training_vocabulary(persons, templates, used, trained)
    check_question_vocabulary(templates, vocabulary, config.qa_templates_dir, trained)
    no_questions = {rule: () for rule in RULES}
    check_trained_phrases_in_biographies(
        templates, training_vocabulary(persons, templates, used, no_questions), config, trained
    )

    # Mixed training: biographies of ALL persons + QA of the training cell only.
    corpus = [
        {"source": "biography", "person_id": p["person_id"], "text": bio} for p in persons for bio in p["biographies"]
    ]
    corpus += [
        {
            "source": "qa",
            "person_id": row["person_id"],
            "text": format_prompt(row["question"]) + format_answer(row["answer"]),
        }
        for row in qa_train
    ]
    return train_persons, test_persons, {"qa_train": qa_train, "qa_test": qa_test, "qa_hard": qa_hard}, corpus


def write_dataset(config: DatasetConfig, outputs: dict) -> dict:
    """Build the dataset and write it to the paths in ``outputs``; returns a small summary."""
    train_persons, test_persons, qa, corpus = build_dataset(config)
    write_json_records(outputs["train_kg"], train_persons)
    write_json_records(outputs["test_kg"], test_persons)
    for key, rows in qa.items():
        write_jsonl(outputs[key], rows)
    write_jsonl(outputs["corpus"], corpus)
    templates = load_templates(config.templates_dir, config.qa_templates_dir, config.biography_templates)
    trained = training_wordings(
        config.train_templates, config.train_template_idx, templates.questions, config.qa_templates_dir
    )
    per_rule = "/".join(sorted({str(len(templates.biography[rule])) for rule in RULES}))
    return {
        "training_wordings": describe_training(trained, templates.question_families),
        "biography_templates": f"{config.biography_templates} ({per_rule} sentences per rule)",
        "train_persons": len(train_persons),
        "test_persons": len(test_persons),
        **{f"{key}_rows": len(rows) for key, rows in qa.items()},
        "corpus_documents": len(corpus),
    }
