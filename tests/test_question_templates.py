"""Question wordings: families in the files, content words, the check that no hard wording's
content word is trained, the shipped study configs, and a tiny run with two wordings per rule."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml

from biosae.config import validate_config
from biosae.dataset.build import DatasetConfig, build_dataset
from biosae.dataset.entities import load_templates
from biosae.dataset.question_templates import STOP_WORDS, content_words, fixed_text, heldout_wordings
from biosae.dataset.text import words
from biosae.errors import BiosaeError
from biosae.evaluation.baselines import BagOfWordsClassifier
from biosae.rules import RULES
from tests.conftest import DATA, REPO, planned_jobs, run_snakemake, tiny_config, write_config

STUDY_CONFIGS = sorted((REPO / "config").glob("questions_*.yaml"))
PHRASES = REPO / "config" / "questions_phrases.yaml"
VERBS = REPO / "config" / "questions_verbs.yaml"
WIDE = REPO / "config" / "questions_wide.yaml"
# The verb wordings built on the biography sentences that a set adds: "extended:" (phrases) and
# "wide:" (verbs); the wide setting trains both.
NEW_FRAMES = {PHRASES: (10, 11, 12), VERBS: (13, 14, 15)}
NEW_FRAMES[WIDE] = NEW_FRAMES[PHRASES] + NEW_FRAMES[VERBS]
# Beyond the trained wordings, the phrases, verbs and wide settings pick the biography set; the
# corpus's size stays the default's, and only wide changes the LM's epochs (its steps' cap).
STUDY_KEYS = {
    "questions_phrases": {"dataset": {"train_templates", "biography_templates"}},
    "questions_verbs": {"dataset": {"train_templates", "biography_templates"}},
    "questions_wide": {"dataset": {"train_templates", "biography_templates"}, "training": {"epochs"}},
}


def copy_data(tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(DATA, target)
    return target


def dataset_config(root: Path = DATA, **changes) -> DatasetConfig:
    base = dict(
        num_persons=40,
        biographies_per_person=2,
        entities_dir=str(root / "entities"),
        templates_dir=str(root / "templates"),
        qa_templates_dir=str(root / "qa_templates"),
    )
    return DatasetConfig(**{**base, **changes})


def setting_dataset(path: Path = PHRASES) -> dict:
    """A setting's dataset keys that choose wordings and sentences (not the corpus's size)."""
    section = yaml.safe_load(path.read_text())["dataset"]
    return {key: section[key] for key in ("train_templates", "biography_templates")}


def replace_line(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def one_line_error(match: str, call, *args, **kwargs) -> str:
    with pytest.raises(BiosaeError, match=match) as error:
        call(*args, **kwargs)
    assert "\n" not in str(error.value)
    return str(error.value)


def test_content_words_drop_stop_words_punctuation_and_the_name():
    assert content_words("What is {name}'s birth city?") == ["birth", "city"]
    assert content_words("Where did {name} go to school?") == ["go", "school"]
    assert content_words("{name} works for whom?") == ["works"]
    assert {"what", "is", "the", "of", "did", "was", "s"} <= STOP_WORDS


def test_shipped_wordings_keep_hard_content_words_out_of_every_trainable_wording():
    """Whatever a config trains from the shipped files, no hard wording's content word is in it."""
    templates = load_templates(DATA / "templates", DATA / "qa_templates")
    hard_words = {w for rule in RULES for wording in templates.hard_questions[rule] for w in content_words(wording)}
    assert {"born", "hometown", "birthday", "hired", "study", "school", "based", "office"} <= hard_words
    for rule in RULES:
        for wording in templates.questions[rule]:
            assert not set(content_words(wording)) & hard_words, wording
    # All ten wordings of every rule trained at once pass the dataset stage's check, all thirteen
    # with the biography sentences that frames 10-12 are built on, and all sixteen with those of
    # 13-15.
    build_dataset(dataset_config(train_templates=list(range(10))))
    build_dataset(dataset_config(train_templates=list(range(13)), biography_templates="extended"))
    build_dataset(dataset_config(train_templates=list(range(16)), biography_templates="wide"))


def test_planted_hard_content_word_fails_naming_template_and_word(tmp_path):
    root = copy_data(tmp_path)
    replace_line(
        root / "qa_templates" / "birth_city.txt",
        "noun: Tell me the birth city of {name}.",
        "noun: Tell me the hometown of {name}.",
    )
    build_dataset(dataset_config(root))  # not trained: the default set passes
    message = one_line_error(r"hard wording", build_dataset, dataset_config(root, train_templates=[0, 4]))
    assert message == (
        f"hard wording 'What is the hometown of {{name}}?' ({root}/qa_templates/hard/birth_city.txt, template_idx 1) "
        f"shares the content word 'hometown' with the training wording 'Tell me the hometown of {{name}}.' "
        f"({root}/qa_templates/birth_city.txt, template_idx 4)"
    )


def test_hard_wording_trained_verbatim_fails(tmp_path):
    root = copy_data(tmp_path)
    (root / "qa_templates" / "hard" / "work_city.txt").write_text("Where is {name} from?\n")  # only stop words
    appended = len(load_templates(root / "templates", root / "qa_templates").questions["work_city"])
    with (root / "qa_templates" / "work_city.txt").open("a") as handle:
        handle.write("verb: Where is {name} from?\n")
    trained = {rule: [0] for rule in RULES} | {"work_city": [appended]}
    one_line_error(
        r"hard wording 'Where is \{name\} from\?' \(.*hard/work_city\.txt, template_idx 0\) is trained as "
        rf"'Where is \{{name\}} from\?' \(.*/work_city\.txt, template_idx {appended}\)",
        build_dataset,
        dataset_config(root, train_templates=trained),
    )


@pytest.mark.parametrize(
    "line, message",
    [
        ("nuon: What is the major of {name}?", r"major\.txt:\d+: unknown wording family 'nuon' \(known: noun, verb\)"),
        (
            "noun: What major is {name}'s?",
            r"major\.txt:\d+: duplicate wording \"What major is \{name\}'s\?\" "
            r"\(first on line 9\)",
        ),
    ],
)
def test_bad_wording_line_names_file_and_line(tmp_path, line, message):
    root = copy_data(tmp_path)
    with (root / "qa_templates" / "major.txt").open("a") as handle:
        handle.write(line + "\n")
    one_line_error(message, load_templates, root / "templates", root / "qa_templates")


def test_unmarked_wordings_still_load(tmp_path):
    """A question file written before families existed (no prefix) loads as wordings of no family."""
    root = copy_data(tmp_path)
    path = root / "qa_templates" / "major.txt"
    path.write_text(
        "".join(
            line.split(": ", 1)[1] + "\n"
            for line in path.read_text().splitlines()
            if line.startswith(("noun:", "verb:"))
        )
    )
    templates = load_templates(root / "templates", root / "qa_templates")
    assert templates.questions["major"][0] == "What is the major of {name}?"
    assert set(templates.question_families["major"]) == {None}
    assert build_dataset(dataset_config(root))[2] == build_dataset(dataset_config())[2]


def test_config_keys_disagreeing_is_one_config_line():
    config = tiny_config(dataset={"train_templates": [0, 4], "train_template_idx": 0})
    one_line_error(
        r"^config key dataset\.train_template_idx: 0 disagrees with dataset\.train_templates \[0, 4\]",
        validate_config,
        config,
    )
    validate_config(tiny_config(dataset={"train_templates": [2], "train_template_idx": 2}))


@pytest.mark.parametrize("path", STUDY_CONFIGS, ids=lambda p: p.stem)
def test_shipped_study_configs_validate_and_pass_the_dataset_checks(path):
    overlay = yaml.safe_load(path.read_text())
    keys = STUDY_KEYS.get(path.stem, {"dataset": {"train_templates"}})
    assert {section: set(values) for section, values in overlay.items()} == keys
    config = tiny_config()
    for section, values in overlay.items():
        config[section].update(values)
    section = validate_config(config)["dataset"]
    train, _, qa, _ = build_dataset(DatasetConfig.from_config(section))
    trained = set(overlay["dataset"]["train_templates"])
    assert {r["template_idx"] for r in qa["qa_train"]} == trained
    assert {r["template_idx"] for r in qa["qa_test"] if r["split"] == "ood_template"} == {1, 2, 3}
    assert heldout_wordings({rule: tuple(trained) for rule in RULES}) == {rule: (1, 2, 3) for rule in RULES}


def test_study_configs_are_the_six_settings():
    families = load_templates(DATA / "templates", DATA / "qa_templates").question_families
    settings = {}
    for path in STUDY_CONFIGS:
        indices = yaml.safe_load(path.read_text())["dataset"]["train_templates"]
        settings[path.stem] = Counter(families[rule][i] for rule in RULES for i in indices)
    assert settings == {
        "questions_seed": {"noun": 6},
        "questions_nouns": {"noun": 6 * 5},
        "questions_nouns_verbs": {"noun": 6 * 5, "verb": 6 * 2},
        "questions_phrases": {"noun": 6 * 5, "verb": 6 * 5},
        "questions_verbs": {"noun": 6, "verb": 6 * 8},
        "questions_wide": {"noun": 6 * 5, "verb": 6 * 8},
    }


@pytest.mark.parametrize("path", STUDY_CONFIGS, ids=lambda p: p.stem)
def test_study_settings_leave_the_hard_wordings_unreadable_from_words(path):
    """The issue's bar: bag-of-words, fit on the training cell, stays <= 0.30 on the hard cells."""
    section = yaml.safe_load(path.read_text())["dataset"]
    _, _, qa, _ = build_dataset(
        dataset_config(**{key: section[key] for key in section if key != "biographies_per_person"})
    )
    train, hard = qa["qa_train"], qa["qa_hard"]
    bag_of_words = BagOfWordsClassifier().fit(
        [r["question"] for r in train], [r["full_name"] for r in train], [r["rule_idx"] for r in train]
    )
    assert (
        bag_of_words.accuracy(
            [r["question"] for r in hard], [r["full_name"] for r in hard], [r["rule_idx"] for r in hard]
        )
        <= 0.30
    )


def test_new_phrase_frame_sharing_a_hard_content_word_fails_naming_both(tmp_path):
    """A frame on a new biography phrase is held to the content-word rule like every other."""
    root = copy_data(tmp_path)
    replace_line(
        root / "qa_templates" / "birth_city.txt",
        "verb: {name} grew up in which city?",
        "verb: {name} was raised in which city?",
    )
    build_dataset(dataset_config(root))  # not trained: the default set passes
    message = one_line_error(r"hard wording", build_dataset, dataset_config(root, **setting_dataset()))
    assert message == (
        f"hard wording 'Where was {{name}} raised?' ({root}/qa_templates/hard/birth_city.txt, template_idx 2) "
        f"shares the content word 'raised' with the training wording '{{name}} was raised in which city?' "
        f"({root}/qa_templates/birth_city.txt, template_idx 10)"
    )


@pytest.mark.parametrize("path", [PHRASES, VERBS, WIDE], ids=lambda p: p.stem)
def test_new_frames_are_built_on_words_of_the_biographies(path):
    """Every word of a new frame is in the LM's training text outside its own QA rows: in the
    biographies, or in the noun wordings trained beside it (the attribute word, question words)."""
    setting = setting_dataset(path)
    templates = load_templates(DATA / "templates", DATA / "qa_templates", setting["biography_templates"])
    _, _, qa, corpus = build_dataset(dataset_config(**setting))
    biography_words = {w for doc in corpus if doc["source"] == "biography" for w in words(doc["text"])}
    trained = setting["train_templates"]
    for rule in RULES:
        noun_words = {
            w
            for index in trained
            if templates.question_families[rule][index] == "noun"
            for w in words(fixed_text(templates.questions[rule][index]))
        }
        for index in NEW_FRAMES[path]:
            frame = templates.questions[rule][index]
            assert templates.question_families[rule][index] == "verb", frame
            assert set(words(fixed_text(frame))) - biography_words <= noun_words, frame
            # its phrase's own words: at least one content word no noun wording has
            assert set(content_words(frame)) & biography_words - noun_words, frame
    assert {(r["rule_name"], r["template_idx"]) for r in qa["qa_train"]} >= {
        (rule, i) for rule in RULES for i in NEW_FRAMES[path]
    }


def syntax(wording: str) -> tuple[str, ...]:
    """A wording's syntax: its words with each run of content words one slot ("Who hired {name}?"
    -> who _ {name} ?), so that a wording with other content words in the same frame matches."""
    out: list[str] = []
    for word in words(wording.replace("{name}", "namedperson")):
        token = "{name}" if word == "namedperson" else "_" if word.isalnum() and word not in STOP_WORDS else word
        if not (token == "_" and out and out[-1] == "_"):
            out.append(token)
    return tuple(out)


def test_verb_frames_do_not_copy_a_hard_wordings_syntax():
    """No verb frame is a hard wording with its content words swapped ("Who recruited {name}?")."""
    assert syntax("Who recruited {name}?") == syntax("Who hired {name}?") == ("who", "_", "{name}", "?")
    templates = load_templates(DATA / "templates", DATA / "qa_templates", "wide")
    hard = {syntax(wording): wording for rule in RULES for wording in templates.hard_questions[rule]}
    frames = [
        wording
        for rule in RULES
        for wording, family in zip(templates.questions[rule], templates.question_families[rule])
        if family == "verb"
    ]
    assert len(frames) == 6 * 8
    for frame in frames:
        assert syntax(frame) not in hard, (frame, hard.get(syntax(frame)))
    # and they vary: statements ending in the question word as well as which/what questions
    ending = sum(words(frame)[0] not in {"what", "which", "in", "at", "on", "for", "from", "to"} for frame in frames)
    assert 6 <= ending <= len(frames) - 6


def test_new_frames_without_their_biography_sentences_fail_naming_the_key():
    """Trained on the seed's biographies, a new frame would ask about a sentence no biography holds."""
    message = one_line_error(
        r"built on a biography sentence",
        build_dataset,
        dataset_config(train_templates=setting_dataset()["train_templates"]),
    )
    assert message == (
        f"training verb wording 'The arrival of {{name}} took place on which date?' ({DATA}/qa_templates/birth_date.txt, "
        f"template_idx 10) is built on a biography sentence this run leaves out: the word 'arrival' is only in "
        f"{DATA}/templates/birth_date.txt's sentences outside config key dataset.biography_templates: seed"
    )
    # and the wide set's frames on the extended set alone
    message = one_line_error(
        r"built on a biography sentence",
        build_dataset,
        dataset_config(train_templates=setting_dataset(VERBS)["train_templates"], biography_templates="extended"),
    )
    assert message == (
        f"training verb wording '{{name}} was delivered on which date?' ({DATA}/qa_templates/birth_date.txt, "
        f"template_idx 13) is built on a biography sentence this run leaves out: the word 'delivered' is only in "
        f"{DATA}/templates/birth_date.txt's sentences outside config key dataset.biography_templates: extended"
    )


def test_phrases_verbs_and_wide_configs_dry_run_plans_the_whole_pipeline(tmp_path):
    """The documented way to run a setting: its own directory, data linked in, the overlay on
    config.yaml. Its dry run plans every stage, as the default's does."""
    (tmp_path / "data").symlink_to(DATA)
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    default = planned_jobs(tmp_path)
    assert planned_jobs(tmp_path, "--configfile", str(PHRASES)) == default
    assert planned_jobs(tmp_path, "--configfile", str(VERBS)) == default
    assert planned_jobs(tmp_path, "--configfile", str(WIDE)) == default
    assert {"dataset", "train_lm", "activations", "train_sae", "evaluate_methods", "evaluate", "aggregate"} <= set(
        default
    )


@pytest.mark.slow
def test_planted_overlap_fails_the_dataset_job_with_one_line_in_its_log(tmp_path):
    root = copy_data(tmp_path)
    replace_line(
        root / "qa_templates" / "employer.txt",
        "noun: Give the employer of {name}.",
        "noun: Which company is the employer of {name}?",
    )
    config = tiny_config(dataset={"train_templates": [0, 7]})
    config["dataset"].update(
        entities_dir=str(root / "entities"),
        templates_dir=str(root / "templates"),
        qa_templates_dir=str(root / "qa_templates"),
    )
    write_config(tmp_path, config)
    result = run_snakemake(tmp_path, "--cores", "1", "results/dataset/qa_train.jsonl", check=False)
    assert result.returncode != 0
    log = (tmp_path / "logs" / "dataset.log").read_text()
    errors = [line for line in log.splitlines() if "biosae error:" in line]
    assert len(errors) == 1 and "Traceback" not in log
    assert errors[0].endswith(
        f"biosae error: hard wording 'Which company employs {{name}}?' ({root}/qa_templates/hard/employer.txt, "
        f"template_idx 1) shares the content word 'company' with the training wording "
        f"'Which company is the employer of {{name}}?' ({root}/qa_templates/employer.txt, template_idx 7)"
    )


@pytest.mark.slow
def test_tiny_run_with_two_training_wordings_per_rule(twin_runs):
    """End to end with a noun and a biography-verb frame trained: every stage runs, and every cell
    (hard ones included) is evaluated, the train cell on both wordings. The run is the first of the
    session's twin runs (tests/conftest.py): two LM epochs, the seed's hook only, since this test
    checks the wiring, not how well the LM learns."""
    run = twin_runs[0]
    results = run / "results"
    rows = [json.loads(line) for line in (results / "dataset" / "qa_train.jsonl").read_text().splitlines()]
    assert Counter((r["rule_name"], r["template_idx"]) for r in rows) == {
        (rule, t): 12 for rule in RULES for t in (0, 8)
    }
    metrics = json.loads((results / "eval" / "metrics.json").read_text())
    assert metrics["cells"] == [
        "train",
        "ood_template",
        "ood_person",
        "ood_both",
        "hard_seen_person",
        "hard_unseen_person",
    ]
    for cell in ("train", "ood_person"):
        by_template = metrics["lm_qa_accuracy"][cell]["by_template"]
        assert set(by_template) == {f"{rule}/{t}" for rule in RULES for t in (0, 8)}
    assert set(metrics["lm_qa_accuracy"]["ood_both"]["by_template"]) == {
        f"{rule}/{t}" for rule in RULES for t in (1, 2, 3)
    }
    for cell in metrics["cells"]:
        assert metrics["slot_accuracy"][cell] is not None
    assert "2 training wordings per rule (noun 1, verb 1)" in (run / "logs" / "dataset.log").read_text()
    assert (results / "eval" / "summary.md").is_file()
