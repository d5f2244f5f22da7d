"""Stage 1: persons, splits, templates, trained wordings, the vocabulary check, determinism (bytes of
the default config pinned), data-file errors."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml

from biosae.dataset.build import DatasetConfig, build_dataset, write_dataset
from biosae.dataset.entities import load_entity_pools, load_templates
from biosae.dataset.text import words
from biosae.errors import BiosaeError
from biosae.rules import EVALUATION_CELLS, RULES
from tests.conftest import DATA, REPO

OUTPUT_KEYS = ("train_kg", "test_kg", "qa_train", "qa_test", "qa_hard", "corpus")


def config(**changes) -> DatasetConfig:
    base = dict(
        num_persons=60,
        biographies_per_person=3,
        entities_dir=str(DATA / "entities"),
        templates_dir=str(DATA / "templates"),
        qa_templates_dir=str(DATA / "qa_templates"),
    )
    return DatasetConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def dataset():
    return build_dataset(config())


def test_shipped_pools_are_large_enough():
    pools = load_entity_pools(DATA / "entities")
    assert pools.max_unique_names >= 100_000
    assert len(pools.cities) >= 200 and len(pools.universities) >= 300
    assert len(pools.majors) >= 100 and len(pools.employers) >= 250
    templates = load_templates(DATA / "templates", DATA / "qa_templates")
    assert all(len(templates.biography[rule]) >= 5 for rule in RULES)
    for rule in RULES:  # the seed's four noun frames first, then more noun and biography-verb frames
        assert templates.question_families[rule][:4] == ("noun",) * 4
        assert templates.question_families[rule].count("noun") > 4 and "verb" in templates.question_families[rule]
    assert all(len(templates.hard_questions[rule]) >= 3 for rule in RULES)


def test_persons_unique_disjoint_and_work_city_follows_employer(dataset):
    train, test, _, _ = dataset
    persons = train + test
    assert len(persons) == 60 and len(train) == len(test) == 30
    assert len({p["full_name"] for p in persons}) == 60
    assert not {p["person_id"] for p in train} & {p["person_id"] for p in test}
    hq = load_entity_pools(DATA / "entities").employer_city
    assert all(p["work_city"] == hq[p["employer"]] for p in persons)
    for p in persons:
        day, month, year = p["birth_date"].split()
        assert 1900 <= int(year) <= 2099 and 1 <= int(day) <= 31


def test_biographies_shuffled_and_name_first(dataset):
    train, test, _, _ = dataset
    for person in train + test:
        assert len(person["biographies"]) == 3
        for bio in person["biographies"]:
            assert person["full_name"] in bio.split(".")[0]
            for rule in RULES:
                assert person[rule] in bio
    # Sentence order varies: the attribute mentioned first is not always the same one.
    firsts = Counter(next(r for r in RULES if p[r] in b.split(".")[0]) for p in train + test for b in p["biographies"])
    assert len(firsts) >= 4


def test_template_split_and_cells(dataset):
    train, test, qa, corpus = dataset
    train_ids = {p["person_id"] for p in train}
    assert {row["split"] for row in qa["qa_train"]} == {"train"}
    assert all(row["template_idx"] == 0 and row["person_id"] in train_ids for row in qa["qa_train"])
    cells = Counter(row["split"] for row in qa["qa_test"])
    assert set(cells) == set(EVALUATION_CELLS) - {"train"}
    assert cells["ood_template"] == 30 * 6 * 3 and cells["ood_person"] == 30 * 6 and cells["ood_both"] == 30 * 6 * 3
    for row in qa["qa_test"]:
        seen = row["person_id"] in train_ids
        assert (row["template_idx"] == 0) == (row["split"] in ("train", "ood_person"))
        assert seen == (row["split"] in ("train", "ood_template"))
    # Mixed training: biographies of everyone, questions of the training cell only.
    qa_docs = [d for d in corpus if d["source"] == "qa"]
    assert len(qa_docs) == len(qa["qa_train"])
    assert {d["person_id"] for d in corpus if d["source"] == "biography"} == train_ids | {p["person_id"] for p in test}
    assert all(d["person_id"] in train_ids for d in qa_docs)


def test_train_template_index_is_config(dataset):
    _, _, qa, _ = build_dataset(config(train_template_idx=2))
    assert {row["template_idx"] for row in qa["qa_train"]} == {2}
    assert build_dataset(config(train_templates=[2])) == build_dataset(config(train_template_idx=2))


def test_train_templates_selects_exactly_the_listed_wordings_for_train_persons(dataset):
    train, test, qa, corpus = build_dataset(config(train_templates=[8, 0, 4]))
    assert (train, test) == dataset[:2]  # persons and biographies don't depend on the wordings
    templates = load_templates(DATA / "templates", DATA / "qa_templates")
    train_ids, test_ids = {p["person_id"] for p in train}, {p["person_id"] for p in test}

    def cell_rows(rows, cell):
        return Counter((r["person_id"], r["rule_name"], r["template_idx"]) for r in rows if r["split"] == cell)

    def expected(ids, indices):
        return Counter((p, rule, t) for p in ids for rule in RULES for t in indices)

    assert cell_rows(qa["qa_train"], "train") == expected(train_ids, (0, 4, 8))
    assert len(qa["qa_train"]) == 30 * 6 * 3
    assert cell_rows(qa["qa_test"], "ood_person") == expected(test_ids, (0, 4, 8))
    assert cell_rows(qa["qa_test"], "ood_template") == expected(train_ids, (1, 2, 3))
    assert cell_rows(qa["qa_test"], "ood_both") == expected(test_ids, (1, 2, 3))
    assert len(qa["qa_test"]) == 30 * 6 * 3 * 3  # no row for the wordings not listed (5, 6, 7, 9)
    persons = {p["person_id"]: p for p in train + test}
    for row in qa["qa_train"] + qa["qa_test"]:
        wording = templates.questions[row["rule_name"]][row["template_idx"]]
        assert row["question"] == wording.format(name=persons[row["person_id"]]["full_name"])
    # Only the training cell's QA, so only train persons' questions, enters the LM corpus.
    qa_docs = [d for d in corpus if d["source"] == "qa"]
    assert [d["text"] for d in qa_docs] == [r["question"] + "\nAnswer: " + r["answer"] for r in qa["qa_train"]]
    assert {d["person_id"] for d in qa_docs} == train_ids


def test_train_templates_per_rule(dataset):
    per_rule = {rule: [0] for rule in RULES} | {"major": [0, 9], "employer": [5]}
    _, _, qa, _ = build_dataset(config(train_templates=per_rule))
    trained = {rule: {r["template_idx"] for r in qa["qa_train"] if r["rule_name"] == rule} for rule in RULES}
    assert trained == {rule: set(indices) for rule, indices in per_rule.items()}
    # Held out: the seed's wordings 0-3 that the rule does not train (for employer all four).
    held_out = {
        rule: {r["template_idx"] for r in qa["qa_test"] if r["rule_name"] == rule and r["split"] == "ood_both"}
        for rule in RULES
    }
    assert held_out["employer"] == {0, 1, 2, 3} and held_out["major"] == held_out["birth_date"] == {1, 2, 3}


def test_train_wordings_per_question_trains_a_drawn_share_of_each_persons_wordings(dataset):
    wordings = [0, 4, 5, 6, 7, 8, 9]
    every = build_dataset(config(train_templates=wordings))
    train, test, qa, corpus = build_dataset(config(train_templates=wordings, train_wordings_per_question=2))
    assert (train, test) == every[:2]  # persons, biographies and the split are drawn before it
    assert qa["qa_test"] == every[2]["qa_test"] and qa["qa_hard"] == every[2]["qa_hard"]
    per_question = Counter((r["person_id"], r["rule_name"]) for r in qa["qa_train"])
    assert set(per_question.values()) == {2} and len(per_question) == 30 * 6
    assert all(r in every[2]["qa_train"] for r in qa["qa_train"])
    # Drawn per person: every wording is trained, and persons differ in which.
    drawn = {
        key: {r["template_idx"] for r in qa["qa_train"] if (r["person_id"], r["rule_name"]) == key}
        for key in per_question
    }
    assert {t for indices in drawn.values() for t in indices} == set(wordings)
    assert len({frozenset(indices) for indices in drawn.values()}) > 5
    qa_docs = [d["text"] for d in corpus if d["source"] == "qa"]
    assert qa_docs == [r["question"] + "\nAnswer: " + r["answer"] for r in qa["qa_train"]]
    assert build_dataset(config(train_templates=wordings, train_wordings_per_question=2)) == (train, test, qa, corpus)
    assert build_dataset(config(train_templates=wordings, train_wordings_per_question=7)) == every


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            dict(train_templates=[0, 16]),
            r"config key dataset\.train_templates: wording 16 of rule birth_date is not "
            r"in .*birth_date\.txt, which has wordings 0\.\.15",
        ),
        (dict(train_templates={"major": [0]}), r"config key dataset\.train_templates: has no list for rule birth_date"),
        (
            dict(train_templates=[0], train_template_idx=1),
            r"config key dataset\.train_template_idx: 1 disagrees with dataset\.train_templates \[0\]",
        ),
        (dict(train_template_idx=4), r"config key dataset\.train_template_idx: 4 is not in 0\.\.3"),
        (
            dict(train_templates=[0, 8], train_wordings_per_question=3),
            r"config key dataset\.train_wordings_per_question: 3 is more than the 2 training wordings of a rule",
        ),
    ],
)
def test_bad_training_wordings_give_one_line_naming_the_key(changes, message):
    with pytest.raises(BiosaeError, match=message) as error:
        build_dataset(config(**changes))
    assert "\n" not in str(error.value)


def test_hard_questions_use_biography_words_only(dataset):
    _, _, qa, corpus = dataset
    templates = load_templates(DATA / "templates", DATA / "qa_templates")
    training_question_words = set()
    for rule in RULES:
        training_question_words |= set(words(templates.questions[rule][0].replace("{name}", "")))
    corpus_words = {w for d in corpus for w in words(d["text"])}
    bio_words = {w for d in corpus if d["source"] == "biography" for w in words(d["text"])}
    attribute_words = {"birth", "date", "city", "university", "major", "employer", "work"}
    for rule in RULES:
        for template in templates.hard_questions[rule]:
            hard_words = set(words(template.replace("{name}", "")))
            assert hard_words <= corpus_words, (template, hard_words - corpus_words)
            # The words that name the attribute come from biographies, not from the training frame.
            assert not (hard_words & training_question_words & attribute_words), template
            assert hard_words - training_question_words <= bio_words
    assert Counter(r["split"] for r in qa["qa_hard"]) == {"hard_seen_person": 30 * 18, "hard_unseen_person": 30 * 18}


def test_same_config_gives_byte_identical_files(tmp_path):
    digests = []
    for run in ("a", "b"):
        outputs = {key: tmp_path / run / key for key in OUTPUT_KEYS}
        write_dataset(config(), outputs)
        digests.append({key: hashlib.sha256(path.read_bytes()).hexdigest() for key, path in outputs.items()})
    assert digests[0] == digests[1]
    outputs = {key: tmp_path / "c" / key for key in OUTPUT_KEYS}
    write_dataset(config(seed=1), outputs)
    assert hashlib.sha256(outputs["train_kg"].read_bytes()).hexdigest() != digests[0]["train_kg"]


# sha256 of the files the default config (config.yaml) writes, as main's code wrote them before
# question wordings could be added: new wordings and train_templates must not change one byte.
DEFAULT_CONFIG_SHA256 = {
    "train_kg": "7efc89b69f7e4cac6f5d2bbe33da5d6141b2fd5a7137639acd9573ed90f3bda2",
    "test_kg": "6dae957bf62d6cf3005d346b7cc6006d218325dd1dce114dadbc934162d4c8ae",
    "qa_train": "eb28f2d35606c4ebbe478cd1861561616ab1240a2a5eb6c411877d6a7d6a1025",
    "qa_test": "dacff015d08aee48b7b6c2ba06603da61c96b159fb5c4e69cf5c8817bc0b7903",
    "qa_hard": "4167b54fc0f00090fd514ebd319a94c684f6c701d7ba79c54dad5d379863969f",
    "corpus": "b7ca1598f92c9950e5b377db55fd0d8bd27e22b5b6256e5b856bc285dcfc1af2",
}


def test_default_config_dataset_bytes_unchanged(tmp_path):
    section = yaml.safe_load((REPO / "config.yaml").read_text())["dataset"]
    for key in ("entities_dir", "templates_dir", "qa_templates_dir"):
        section[key] = str(REPO / section[key])
    for form in ({}, {"train_templates": None, "train_template_idx": 0}, {"train_templates": None}):
        outputs = {key: tmp_path / json.dumps(form) / key for key in OUTPUT_KEYS}
        write_dataset(DatasetConfig.from_config({**section, **form}), outputs)
        digests = {key: hashlib.sha256(path.read_bytes()).hexdigest() for key, path in outputs.items()}
        assert digests == DEFAULT_CONFIG_SHA256, form


def test_extended_biography_sentences_are_opt_in():
    """Each set joins the seed's sentences only when asked for, and holds the sets before it; the
    seed's set draws as before."""
    seed = load_templates(DATA / "templates", DATA / "qa_templates")
    extended = load_templates(DATA / "templates", DATA / "qa_templates", "extended")
    wide = load_templates(DATA / "templates", DATA / "qa_templates", "wide")
    for rule in RULES:
        assert extended.biography[rule][: len(seed.biography[rule])] == seed.biography[rule]
        assert wide.biography[rule][: len(extended.biography[rule])] == extended.biography[rule]
        assert extended.biography[rule][len(seed.biography[rule]) :] == seed.left_out_biography[rule][:3]
        assert wide.biography[rule][len(seed.biography[rule]) :] == seed.left_out_biography[rule]
        assert len(seed.left_out_biography[rule]) == 6 and len(extended.left_out_biography[rule]) == 3
        assert wide.left_out_biography[rule] == ()
    text = {
        name: " ".join(doc["text"] for doc in build_dataset(config(biography_templates=name))[3])
        for name in ("seed", "extended", "wide")
    }
    for sentence in ("grew up in", "has a job at", "wrote a thesis on", "is stationed in"):
        assert sentence in text["extended"] and sentence in text["wide"] and sentence not in text["seed"]
    for sentence in ("comes originally from", "draws a salary from", "is a scholar of", "makes a living in"):
        assert sentence in text["wide"] and sentence not in text["extended"]
    assert build_dataset(config(biography_templates="seed")) == build_dataset(config())
    with pytest.raises(
        BiosaeError, match=r"^config key dataset\.biography_templates: 'all' is not one of seed, extended, wide$"
    ):
        build_dataset(config(biography_templates="all"))


def copy_data(tmp_path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(DATA, target)
    return target


def data_config(root: Path, **changes) -> DatasetConfig:
    return config(
        entities_dir=str(root / "entities"),
        templates_dir=str(root / "templates"),
        qa_templates_dir=str(root / "qa_templates"),
        **changes,
    )


def test_unseen_question_word_fails_naming_it(tmp_path):
    root = copy_data(tmp_path)
    path = root / "qa_templates" / "major.txt"
    text = path.read_text()
    assert "noun: What major is {name}'s?" in text  # held-out wording 2
    path.write_text(text.replace("noun: What major is {name}'s?", "noun: What discipline is {name} famous for?"))
    with pytest.raises(BiosaeError, match=r"major\.txt template 3 \['discipline', 'famous'\]"):
        build_dataset(data_config(root))
    # A wording no QA row uses is not checked; trained, its words are in the training text.
    build_dataset(data_config(root, train_templates=[0, 2]))
    path.write_text(text.replace("noun: Give the major", "noun: Kindly give the major"))
    build_dataset(data_config(root))


@pytest.mark.parametrize(
    "relative, content, message",
    [
        ("entities/cities.txt", "", r"cities\.txt: file is empty"),
        ("entities/majors.txt", "Physics\nBiology\nPhysics\n", r"majors\.txt:3: duplicate value 'Physics'"),
        ("templates/major.txt", "{name} studied hard.\n", r"major\.txt:1: template lacks placeholder \{major\}"),
        (
            "templates/major.txt",
            "{name} studied {major}.\nextnded: {name} read {major}.\n",
            r"major\.txt:2: unknown biography set 'extnded' \(known: extended, wide\)",
        ),
        ("qa_templates/employer.txt", "What is the employer of {name}?\n", r"employer\.txt: a rule needs at least 4"),
        ("entities/employers.tsv", "Acme Corp\n", r"employers\.tsv:1: expected 'employer<TAB>headquarters city'"),
        ("entities/employers.tsv", "Acme Corp\tAtlantis\n", r"employers\.tsv:1: headquarters city 'Atlantis'"),
    ],
)
def test_bad_data_files_give_one_line_errors(tmp_path, relative, content, message):
    root = copy_data(tmp_path)
    (root / relative).write_text(content)
    with pytest.raises(BiosaeError, match=message) as error:
        build_dataset(data_config(root))
    assert "\n" not in str(error.value)


def test_missing_entity_file(tmp_path):
    root = copy_data(tmp_path)
    (root / "entities" / "universities.txt").unlink()
    with pytest.raises(BiosaeError, match=r"universities\.txt: file not found"):
        build_dataset(data_config(root))


def test_more_persons_than_names(tmp_path):
    root = copy_data(tmp_path)
    for name in ("first_names", "middle_names", "last_names"):
        (root / "entities" / f"{name}.txt").write_text("A\nB\n")
    with pytest.raises(BiosaeError, match=r"dataset\.num_persons: 60 persons requested but .* only 8"):
        build_dataset(data_config(root))
