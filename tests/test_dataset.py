"""Stage 1: persons, splits, templates, the vocabulary check, determinism, data-file errors."""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from pathlib import Path

import pytest

from biosae.dataset import DatasetConfig, build_dataset, write_dataset
from biosae.entities import load_entity_pools, load_templates
from biosae.errors import BiosaeError
from biosae.rules import EVALUATION_CELLS, RULES
from biosae.text import words
from tests.conftest import DATA

OUTPUT_KEYS = ("train_kg", "test_kg", "qa_train", "qa_test", "qa_hard", "corpus")


def config(**changes) -> DatasetConfig:
    base = dict(num_persons=60, biographies_per_person=3, entities_dir=str(DATA / "entities"),
                templates_dir=str(DATA / "templates"), qa_templates_dir=str(DATA / "qa_templates"))
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
    assert all(len(templates.questions[rule]) == 4 for rule in RULES)
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


def copy_data(tmp_path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(DATA, target)
    return target


def data_config(root: Path) -> DatasetConfig:
    return config(entities_dir=str(root / "entities"), templates_dir=str(root / "templates"),
                  qa_templates_dir=str(root / "qa_templates"))


def test_unseen_question_word_fails_naming_it(tmp_path):
    root = copy_data(tmp_path)
    path = root / "qa_templates" / "major.txt"
    lines = path.read_text().splitlines()
    lines[2] = "What discipline is {name} famous for?"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BiosaeError, match=r"major\.txt template 3 \['discipline', 'famous'\]"):
        build_dataset(data_config(root))


@pytest.mark.parametrize(
    "relative, content, message",
    [
        ("entities/cities.txt", "", r"cities\.txt: file is empty"),
        ("entities/majors.txt", "Physics\nBiology\nPhysics\n", r"majors\.txt:3: duplicate value 'Physics'"),
        ("templates/major.txt", "{name} studied hard.\n", r"major\.txt:1: template lacks placeholder \{major\}"),
        ("qa_templates/employer.txt", "What is the employer of {name}?\n", r"employer\.txt: a rule needs exactly 4"),
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
