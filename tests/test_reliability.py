"""Reliability: bad config and data files, corrupt artifacts, planted pickles, killed
training, determinism, numerical faults, and a scan for unsafe loaders.

Already covered elsewhere, not repeated here: bad config through the engine for a wrong type,
an unknown key, a minimum, temp_end above temp_start, too many persons and an unknown model
offline (tests/test_workflow.py); each bad data file at library level (tests/test_dataset.py);
load_sae on a truncated file, a harmless pickle and shapes from another cfg.json, a nan SAE loss
term, and in-process SAE/LM resume equality (tests/test_sae.py, tests/test_lm.py).

The determinism test compares the session's twin runs (tests/conftest.py), two cheaper copies of
the tiny config run side by side, rather than a second copy of the session's tiny_pipeline: that
one trains for minutes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
import tokenize
from pathlib import Path

import pytest
import torch

from biosae.config import SCHEMA_PATH, validate_config
from biosae.errors import BiosaeError
from biosae.io import atomic_directory, atomic_path, load_tensors, read_yaml, save_tensors
from tests.conftest import DATA, REPO, interrupted_after, run_snakemake, start_snakemake, tiny_config, write_config

# ------------------------------------------------------------------------------------------------
# Helpers


class PlantedPickle:
    """A pickle that, if ever unpickled, creates ``marker``: proof that a loader executed it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_pickle(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(PlantedPickle(marker)))


def test_planted_pickle_would_execute_if_unpickled(tmp_path):
    """The payload is live (so the refusals below mean something)."""
    plant_pickle(tmp_path / "payload.pkl", tmp_path / "marker")
    pickle.loads((tmp_path / "payload.pkl").read_bytes())
    assert (tmp_path / "marker").exists()


def raises_one_line(match: str, call, *args, **kwargs) -> str:
    """Call, expect a BiosaeError matching ``match`` whose message is one line; return it."""
    with pytest.raises(BiosaeError, match=match) as error:
        call(*args, **kwargs)
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message, message
    return message


def copy_data(tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(DATA, target)
    return target


def config_on_data(root: Path, **overrides) -> dict:
    config = tiny_config(**overrides)
    config["dataset"].update(
        entities_dir=str(root / "entities"),
        templates_dir=str(root / "templates"),
        qa_templates_dir=str(root / "qa_templates"),
    )
    return config


def good_question_row(**changes) -> dict:
    row = {
        "person_id": "p1",
        "rule_idx": 2,
        "question": "What is the university of Ann Lee Smith?",
        "answer": "Harvard University",
    }
    row.update(changes)
    return row


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


# ------------------------------------------------------------------------------------------------
# Bad config: every schema section, one line naming the key


# (section, key or None for the section itself, bad value, expected start of the message)
SCHEMA_CASES = [
    ("seed", None, "zero", "config key seed: 'zero' is not of type 'integer'"),
    ("seed", None, -1, "config key seed: -1 is less than the minimum of 0"),
    ("colour", None, "blue", "config key colour: unknown key"),
    ("dataset", None, 5, "config key dataset: 5 is not of type 'object'"),
    ("dataset", "seed", 1.5, "config key dataset.seed: 1.5 is not of type 'integer'"),
    ("dataset", "test_fraction", 1.0, "config key dataset.test_fraction: 1.0 is greater than or equal"),
    ("dataset", "num_persons", 3, "config key dataset.num_persons: 3 is less than the minimum of 4"),
    ("dataset", "biographies_per_person", 101, "config key dataset.biographies_per_person: 101 is greater"),
    ("dataset", "persons", 10, "config key dataset.persons: unknown key"),
    ("model", "init", "finetune", "config key model.init: 'finetune' is not one of"),
    ("model", "n_head", 0, "config key model.n_head: 0 is less than the minimum of 1"),
    ("model", "block_size", "long", "config key model.block_size: 'long' is not of type 'integer'"),
    ("model", "dropout", 0.1, "config key model.dropout: unknown key"),
    ("training", "epochs", 0, "config key training.epochs: 0 is less than or equal to the minimum of 0"),
    ("training", "lr", 2.0, "config key training.lr: 2.0 is greater than the maximum of 1"),
    ("training", "precision", "fp16", "config key training.precision: 'fp16' is not one of"),
    ("training", "batch_size", True, "config key training.batch_size: True is not of type 'integer'"),
    ("activations", "layer", -2, "config key activations.layer: -2 is less than the minimum of -1"),
    ("activations", "batch_size", "big", "config key activations.batch_size: 'big' is not of type 'integer'"),
    ("activations", "position", 0, "config key activations.position: unknown key"),
    ("sae", None, [1], "config key sae: [1] is not of type 'object'"),
    ("sae", "n_slots", 5, "config key sae.n_slots: 6 was expected"),
    ("sae", "temp_end", 0, "config key sae.temp_end: 0 is less than or equal to the minimum of 0"),
    ("sae", "batch_size", 1, "config key sae.batch_size: 1 is less than the minimum of 2"),
    ("sae", "lambda_l1", 1.0, "config key sae.lambda_l1: unknown key"),
    ("evaluate", "swap_alphas", [], "config key evaluate.swap_alphas: [] should be non-empty"),
    ("evaluate", "swap_alphas", [1.0, 0], "config key evaluate.swap_alphas.1: 0 is less than or equal"),
    ("evaluate", "hard_questions", "yes", "config key evaluate.hard_questions: 'yes' is not of type 'boolean'"),
    ("evaluate", "max_prompts_per_cell", 5, "config key evaluate.max_prompts_per_cell: 5 is less than"),
    ("sweep", "seeds", [1, 1], "config key sweep.seeds: [1, 1] has non-unique elements"),
    ("sweep", "layers", [-3], "config key sweep.layers.0: -3 is less than the minimum of -1"),
    ("sweep", "models", ["a"], "config key sweep.models: unknown key"),
    ("methods", "names", [], "config key methods.names: [] should be non-empty"),
    ("methods", "names", ["das", "das"], "config key methods.names: ['das', 'das'] has non-unique elements"),
    ("methods", "das", {"rank": 0}, "config key methods.das.rank: 0 is less than the minimum of 1"),
    (
        "methods",
        "sae_unsupervised",
        {"k": 600},
        "config key methods.sae_unsupervised.k: 600 active latents is more than n_latents 512",
    ),
]


def test_schema_cases_cover_every_section():
    sections = set(read_yaml(SCHEMA_PATH)["properties"])
    assert sections <= {section for section, *_ in SCHEMA_CASES}


@pytest.mark.parametrize("section, key, value, message", SCHEMA_CASES)
def test_schema_violation_is_one_line_naming_the_key(section, key, value, message):
    config = tiny_config()
    if key is None:
        config[section] = value
    else:
        config[section][key] = value
    assert raises_one_line(re.escape(message), validate_config, config).startswith(message)


def test_semantic_config_errors_are_one_line_naming_the_key(tmp_path, monkeypatch):
    cases = [
        (dict(sae={"temp_start": 0.5, "temp_end": 0.6}), "config key sae.temp_end: 0.6 is above sae.temp_start 0.5"),
        (dict(model={"n_embd": 30, "n_head": 4}), "config key model.n_embd: 30 is not divisible by model.n_head 4"),
        (dict(activations={"layer": 3}), "config key activations.layer: 3 is above model.n_layer 2"),
        (dict(sweep={"layers": [-1, 5]}), "config key sweep.layers: 5 is above model.n_layer 2"),
        (
            dict(sweep={"layers": [1, 2]}),
            "config key sweep.layers: 2 and -1 (activations.layer) are the same hook point",
        ),
        (
            dict(activations={"layer": 2}, sweep={"layers": [-1]}),
            "config key sweep.layers: -1 and 2 (activations.layer) are the same hook point",
        ),
        (dict(dataset={"test_fraction": 0.01}), "config key dataset.test_fraction: 0.01 of 24 persons leaves no"),
        (dict(dataset={"templates_dir": str(tmp_path / "nowhere")}), "config key dataset.templates_dir: directory"),
        (dict(evaluate={"extra_questions": [str(tmp_path / "q.jsonl")]}), "config key evaluate.extra_questions: file "),
    ]
    for overrides, message in cases:
        raises_one_line(re.escape(message), validate_config, tiny_config(**overrides))

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    raises_one_line(
        r"config key model\.name: 'no-such-org/no-such-model' is neither a local directory",
        validate_config,
        tiny_config(model={"init": "pretrained", "name": "no-such-org/no-such-model"}),
    )
    (tmp_path / "not-a-model").mkdir()
    raises_one_line(
        r"config key model\.name: directory .* has no config\.json",
        validate_config,
        tiny_config(model={"init": "pretrained", "name": str(tmp_path / "not-a-model")}),
    )


def test_more_persons_than_the_pools_allow(tmp_path):
    root = copy_data(tmp_path)
    for name in ("first_names", "middle_names", "last_names"):
        write_lines(root / "entities" / f"{name}.txt", ["Ann", "Bob"])
    raises_one_line(
        r"config key dataset\.num_persons: 9 is more than the 8 unique full names",
        validate_config,
        config_on_data(root, dataset={"num_persons": 9}),
    )


def test_bad_entity_file_is_a_config_error_naming_file_and_line(tmp_path):
    root = copy_data(tmp_path)
    write_lines(root / "entities" / "majors.txt", ["Physics", "Biology", "Physics"])
    raises_one_line(
        r"majors\.txt:3: duplicate value 'Physics' \(first on line 1\)", validate_config, config_on_data(root)
    )
    (root / "entities" / "majors.txt").write_text("# only a comment\n\n")
    raises_one_line(r"majors\.txt: file is empty", validate_config, config_on_data(root))
    (root / "entities" / "majors.txt").unlink()
    raises_one_line(r"majors\.txt: file not found", validate_config, config_on_data(root))


# ------------------------------------------------------------------------------------------------
# Bad data files not covered by tests/test_dataset.py


@pytest.mark.parametrize(
    "relative, lines, message",
    [
        (
            "qa_templates/major.txt",
            [
                "What is the major of {name}?",
                "What is the major?",
                "What major is {name}'s?",
                "What is the major {name} has?",
            ],
            r"qa_templates/major\.txt:2: template lacks placeholder \{name\}",
        ),
        (
            "qa_templates/hard/employer.txt",
            ["Who hired {name}?", "Who hired {name} and {person}?"],
            r"hard/employer\.txt:2: unknown placeholder \{person\}",
        ),
        ("templates/birth_city.txt", ["{name} was born in {birth_city"], r"birth_city\.txt:1: malformed placeholder"),
        (
            "qa_templates/university.txt",
            ["What is the university of {name}?"] * 5,
            r"university\.txt:2: duplicate wording 'What is the university of \{name\}\?' \(first on line 1\)",
        ),
    ],
)
def test_bad_template_files_name_file_and_line(tmp_path, relative, lines, message):
    from biosae.dataset.entities import load_templates

    root = copy_data(tmp_path)
    write_lines(root / relative, lines)
    raises_one_line(message, load_templates, root / "templates", root / "qa_templates")


@pytest.mark.parametrize(
    "lines, message",
    [
        ([json.dumps(good_question_row()), "{not json"], r"q\.jsonl:2: not valid JSON"),
        ([json.dumps(good_question_row()), "[1, 2]"], r"q\.jsonl:2: expected a JSON object, got list"),
        (
            [json.dumps({k: v for k, v in good_question_row().items() if k != "answer"})],
            r"q\.jsonl:1: field 'answer' is missing",
        ),
        ([json.dumps(good_question_row(rule_idx=6))], r"q\.jsonl:1: rule_idx 6 is not an integer in 0\.\.5"),
        ([json.dumps(good_question_row(rule_idx="2"))], r"q\.jsonl:1: rule_idx '2' is not an integer"),
        ([json.dumps(good_question_row(rule_idx=True))], r"q\.jsonl:1: rule_idx True is not an integer"),
        ([json.dumps(good_question_row(rule_idx=None))], r"q\.jsonl:1: needs 'rule_idx' \(0-5\) or 'rule_name'"),
        (
            [json.dumps(good_question_row(rule_name="employer"))],
            r"q\.jsonl:1: rule_idx 2 and rule_name 'employer' disagree",
        ),
        ([json.dumps(good_question_row(template_idx="x"))], r"q\.jsonl:1: template_idx 'x' is not an integer"),
        # Blank lines don't shift the reported line number.
        (
            [json.dumps(good_question_row()), "", "", json.dumps(good_question_row(rule_idx=-1))],
            r"q\.jsonl:4: rule_idx -1 is not an integer",
        ),
        ([""], r"q\.jsonl: no question rows"),
    ],
)
def test_malformed_user_question_file_names_file_line_and_problem(tmp_path, lines, message):
    from biosae.dataset.questions import load_question_files

    path = write_lines(tmp_path / "q.jsonl", lines)
    raises_one_line(message, load_question_files, {"extra_0": str(path)})
    # Checked with the config, before any job: not after hours of LM training.
    raises_one_line(message, validate_config, tiny_config(evaluate={"extra_questions": [str(path)]}))


def test_valid_user_question_file_passes(tmp_path):
    from biosae.dataset.questions import load_question_files

    path = write_lines(
        tmp_path / "mine.jsonl",
        [json.dumps(good_question_row()), "", json.dumps(good_question_row(rule_idx=None, rule_name="major"))],
    )
    rows = load_question_files({"extra_0": str(path)})
    assert [(r["rule_idx"], r["split"], r["template_idx"]) for r in rows] == [
        (2, "extra:mine", 0),
        (3, "extra:mine", 0),
    ]


@pytest.mark.slow
def test_bad_data_file_fails_the_job_with_one_line_in_its_log(tmp_path):
    """Through the real engine: the dataset job fails, logs/dataset.log holds our one line, no traceback."""
    root = copy_data(tmp_path)
    bad = root / "qa_templates" / "employer.txt"
    lines = bad.read_text().splitlines()
    write_lines(bad, [line for line in lines if line.strip() and not line.startswith("#")][:3])
    write_config(tmp_path, config_on_data(root))
    result = run_snakemake(tmp_path, "--cores", "1", "results/dataset/qa_train.jsonl", check=False)
    assert result.returncode != 0
    expected = (
        f"biosae error: {bad}: a rule needs at least 4 question templates (the seed's 1 trained + 3 held out), found 3"
    )
    log = (tmp_path / "logs" / "dataset.log").read_text()
    assert [line for line in log.splitlines() if "biosae error:" in line][0].endswith(expected)
    assert "Traceback" not in log
    assert expected in result.stderr
    assert not list((tmp_path / "results").rglob("*.json*")), "no output under a final name"


@pytest.mark.slow
def test_malformed_question_file_stops_the_engine_before_any_job(tmp_path):
    questions = write_lines(
        tmp_path / "mine.jsonl", [json.dumps(good_question_row()), "", json.dumps(good_question_row(rule_idx=9))]
    )
    write_config(tmp_path, tiny_config(evaluate={"extra_questions": [str(questions)]}))
    result = run_snakemake(tmp_path, "--cores", "1", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if "biosae config error" in line]
    assert lines == [f"biosae config error: {questions}:3: rule_idx 9 is not an integer in 0..5"]
    assert "Traceback" not in output
    assert not (tmp_path / "results").exists()


# ------------------------------------------------------------------------------------------------
# Outputs: never half-written under a final name


def test_atomic_path_leaves_nothing_on_error_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "out" / "metrics.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"half": ')
            raise RuntimeError("killed mid-write")
    assert not target.exists() and list(target.parent.iterdir()) == []

    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("new, half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and list(target.parent.iterdir()) == [target]

    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and list(target.parent.iterdir()) == [target]
    assert target.stat().st_mode & 0o777 == 0o644


def test_atomic_directory_leaves_nothing_on_error_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "lm" / "final"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "config.json").write_text("{}")
            raise RuntimeError("killed mid-save")
    assert not target.exists() and list(target.parent.iterdir()) == []

    target.mkdir()
    (target / "model.safetensors").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "model.safetensors").write_text("half")
            raise RuntimeError("killed mid-save")
    assert (target / "model.safetensors").read_text() == "old" and list(target.parent.iterdir()) == [target]

    with atomic_directory(target) as tmp:
        (tmp / "config.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["config.json"]
    assert list(target.parent.iterdir()) == [target]


def test_save_tensors_failing_leaves_no_file(tmp_path):
    target = tmp_path / "activations.safetensors"
    with pytest.raises(Exception):  # noqa: B017 (whatever the failure, no file may be left)
        save_tensors(target, {"activations": torch.zeros(2, 3), "bad": "not a tensor"})
    assert list(tmp_path.iterdir()) == []


def test_save_tensors_writes_the_same_bytes_for_the_same_tensors(tmp_path):
    """safetensors' own writer orders the header by a hash map (DAS's two metadata keys came out in
    either order across runs); ours gives one file for one content, read back unchanged."""
    from safetensors import safe_open

    tensors = {"basis": torch.randn(8, 3), "bias": torch.arange(5.0), "counts": torch.arange(4, dtype=torch.int64)}
    metadata = {key: f"value {i}" for i, key in enumerate("hgfedcba")}
    contents = set()
    for attempt in range(8):
        path = tmp_path / f"{attempt}.safetensors"
        save_tensors(path, tensors, metadata=dict(reversed(metadata.items())) if attempt % 2 else metadata)
        contents.add(path.read_bytes())
    assert len(contents) == 1
    loaded = load_tensors(path)
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    with safe_open(str(path), "pt") as handle:
        assert handle.metadata() == metadata
    raw = contents.pop()
    assert (8 + int.from_bytes(raw[:8], "little")) % 8 == 0  # data region stays 8-byte aligned


@pytest.mark.parametrize(
    "records",
    [
        [],
        [{"person_id": 1, "answer": "Paris"}],
        [{"person_id": i, "question": f"Where was person {i} born?", "answer": "Bochum"} for i in range(23)],
        # text holding the records' own boundary, and a record of records: each encoded alone
        [{"answer": "},{"}, {"nested": [{"x": 1}, {"y": "é"}]}, {"z": None}, {}] * 3,
    ],
)
def test_json_records_are_written_as_orjson_writes_each_record(tmp_path, monkeypatch, records):
    """The dataset's writers encode a chunk of records per call (not one per record) and cut it at
    the records' boundaries; the bytes must be those of one call per record, across chunks too."""
    import orjson

    import biosae.io

    monkeypatch.setattr(biosae.io, "_RECORDS_PER_CHUNK", 5)
    biosae.io.write_jsonl(tmp_path / "rows.jsonl", iter(records))
    biosae.io.write_json_records(tmp_path / "records.json", records)
    assert (tmp_path / "rows.jsonl").read_bytes() == b"".join(
        orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE) for record in records
    )
    assert (tmp_path / "records.json").read_bytes() == b"[\n" + b",\n".join(map(orjson.dumps, records)) + b"\n]\n"
    assert json.loads((tmp_path / "records.json").read_text(encoding="utf-8")) == records


# ------------------------------------------------------------------------------------------------
# Corrupt artifacts


@pytest.fixture
def tensor_file(tmp_path) -> Path:
    path = tmp_path / "activations.safetensors"
    save_tensors(path, {"activations": torch.randn(12, 8)})
    return path


def test_load_tensors_refuses_corrupt_foreign_and_misshapen_files(tensor_file, tmp_path):
    good = tensor_file.read_bytes()
    assert load_tensors(tensor_file, {"activations": (12, 8)})["activations"].shape == (12, 8)
    for _case, content in [
        ("truncated", good[: len(good) // 2]),
        ("header only", good[:8]),
        ("empty", b""),
        ("foreign", b"PK\x03\x04 this is a zip, not safetensors" * 20),
        ("json", b'{"activations": [1, 2, 3]}'),
    ]:
        tensor_file.write_bytes(content)
        raises_one_line(rf"{re.escape(str(tensor_file))}: not a readable safetensors file", load_tensors, tensor_file)
    tensor_file.write_bytes(good)
    raises_one_line(
        r"activations\.safetensors: tensor 'activations' has shape \(12, 8\), config expects \(12, 16\)",
        load_tensors,
        tensor_file,
        {"activations": (12, 16)},
    )
    raises_one_line(r"activations\.safetensors: tensor 'index' is missing", load_tensors, tensor_file, {"index": (12,)})
    raises_one_line(r"nothing\.safetensors: file not found", load_tensors, tmp_path / "nothing.safetensors")


def test_load_tensors_refuses_a_planted_pickle(tensor_file, tmp_path):
    plant_pickle(tensor_file, tmp_path / "marker")
    raises_one_line("not a readable safetensors file", load_tensors, tensor_file)
    assert not (tmp_path / "marker").exists()


def test_activation_table_refuses_corrupt_or_foreign_files(tmp_path):
    import pandas as pd

    from biosae.lm.activations import INDEX_COLUMNS, load_activation_table

    tensors, index = tmp_path / "activations.safetensors", tmp_path / "index.csv"
    pd.DataFrame({column: range(4) for column in INDEX_COLUMNS}).to_csv(index, index=False)
    save_tensors(tensors, {"activations": torch.randn(4, 8)})
    assert load_activation_table(tensors, index)[0].shape == (4, 8)

    save_tensors(tensors, {"weights": torch.randn(4, 8)})
    raises_one_line(r"activations\.safetensors: no 'activations' tensor", load_activation_table, tensors, index)
    save_tensors(tensors, {"activations": torch.randn(4)})
    raises_one_line(
        r"activations\.safetensors: 'activations' is torch\.float32 of shape \(4,\), expected a 2-D",
        load_activation_table,
        tensors,
        index,
    )
    save_tensors(tensors, {"activations": torch.randn(5, 8)})
    raises_one_line(r"index\.csv: 4 rows but .*activations\.safetensors holds 5", load_activation_table, tensors, index)
    tensors.write_bytes(tensors.read_bytes()[:-10])
    raises_one_line(r"activations\.safetensors: not a readable safetensors file", load_activation_table, tensors, index)
    plant_pickle(tensors, tmp_path / "marker")
    raises_one_line(r"activations\.safetensors: not a readable", load_activation_table, tensors, index)
    assert not (tmp_path / "marker").exists()


def test_sae_directory_refuses_a_planted_pickle(tmp_path):
    from biosae.sae.model import SAEConfig, SupervisedSAE, load_sae, save_sae

    save_sae(tmp_path / "sae", SupervisedSAE(SAEConfig(d_model=8, value_vocab_sizes=[2] * 6)))
    plant_pickle(tmp_path / "sae" / "sae.safetensors", tmp_path / "marker")
    raises_one_line(r"sae\.safetensors: not a readable safetensors file", load_sae, tmp_path / "sae")
    assert not (tmp_path / "marker").exists()


def test_sae_training_checkpoint_refuses_a_planted_pickle(tmp_path):
    from biosae.sae.model import SAEConfig
    from biosae.sae.training import train_sae

    h, rule, value = sae_data(n_rows=120, d=8)
    cfg = SAEConfig(d_model=8, value_vocab_sizes=[3] * 6, epochs=3, batch_size=32)
    train_sae(h, rule, value, cfg, checkpoint_dir=tmp_path / "ckpt", progress=False, stop_after_epochs=1)
    plant_pickle(tmp_path / "ckpt" / "state.safetensors", tmp_path / "marker")
    raises_one_line(
        r"ckpt/state\.safetensors: not a readable safetensors file",
        train_sae,
        h,
        rule,
        value,
        cfg,
        checkpoint_dir=tmp_path / "ckpt",
        progress=False,
    )
    assert not (tmp_path / "marker").exists()


TEXTS = [f"person {i} was born in city {i % 7} and works for company {i % 5} ." for i in range(60)]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A saved 2-layer scratch GPT-2 with its word tokenizer (untrained: loading is what is tested)."""
    from biosae.lm.model import build_scratch_model
    from biosae.lm.tokenization import train_word_tokenizer

    tokenizer = train_word_tokenizer(TEXTS)
    model = build_scratch_model(tokenizer, dict(n_layer=2, n_embd=16, n_head=2, block_size=32), seed=0)
    directory = tmp_path_factory.mktemp("tiny_lm") / "final"
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def model_dir(tiny_lm, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_lm, tmp_path / "final"))


def edit_model_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_model_dir_loads_when_intact(model_dir):
    from biosae.lm.model import load_model_dir

    model, tokenizer = load_model_dir(model_dir)
    assert model.config.n_layer == 2 and tokenizer.pad_token_id is not None


@pytest.mark.parametrize(
    "corruption", ["truncated", "foreign", "pickle", "bin_only", "wider", "deeper", "other_tensors"]
)
def test_model_dir_refuses_corrupt_or_misfitting_weights(model_dir, tmp_path, corruption):
    from safetensors.torch import save_file

    from biosae.lm.model import load_model_dir

    weights, marker = model_dir / "model.safetensors", tmp_path / "marker"
    if corruption == "truncated":
        weights.write_bytes(weights.read_bytes()[:-100])
        expected = r"final: cannot load the model \(.*incomplete metadata"
    elif corruption == "foreign":
        weights.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(500))
        expected = r"final: cannot load the model"
    elif corruption == "pickle":
        plant_pickle(weights, marker)
        expected = r"final: cannot load the model"
    elif corruption == "bin_only":  # only a pickle checkpoint: refused, use_safetensors=True
        weights.unlink()
        plant_pickle(model_dir / "pytorch_model.bin", marker)
        expected = r"final: cannot load the model \(.*no file named model\.safetensors"
    elif corruption == "wider":
        edit_model_config(model_dir, n_embd=32)
        expected = r"final: tensor 'transformer\..*' has shape \(\d+.*\), config\.json expects \(\d+.*\)"
    elif corruption == "deeper":  # layer 2 would be left at random init
        edit_model_config(model_dir, n_layer=3)
        expected = r"final: weights don't fit config\.json \(\d+ tensors missing, e\.g\. 'transformer\.h\.2\."
    else:
        save_file({"foo": torch.zeros(3)}, str(weights))
        expected = r"final: weights don't fit config\.json \(\d+ tensors missing"
    raises_one_line(expected, load_model_dir, model_dir)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's weights-only unpickler, refusing it
def test_pretrained_loader_refuses_a_pickle_checkpoint_without_running_it(model_dir, tmp_path):
    from biosae.lm.model import load_pretrained

    (model_dir / "model.safetensors").unlink()
    plant_pickle(model_dir / "pytorch_model.bin", tmp_path / "marker")
    raises_one_line(r"model\.name '.*final': cannot load a pretrained causal LM", load_pretrained, str(model_dir))
    assert not (tmp_path / "marker").exists()


def lm_training(tokenizer_dir: Path, tmp_path: Path, **cfg_changes):
    """A fresh tiny scratch model and a ``run(**kwargs)`` that trains it in ``tmp_path``; returns both."""
    from transformers import AutoTokenizer

    from biosae.lm.model import TrainingConfig, build_scratch_model

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    model = build_scratch_model(tokenizer, dict(n_layer=2, n_embd=16, n_head=2, block_size=32), seed=0)
    values = dict(epochs=2, batch_size=2, lr=1e-3, precision="fp32", block_size=32, checkpoint_every_steps=1)
    cfg = TrainingConfig(**{**values, **cfg_changes})

    def run(**kwargs):
        from biosae.lm.model import train_language_model

        return train_language_model(
            model,
            tokenizer,
            TEXTS,
            cfg,
            tmp_path / "final",
            tmp_path / "checkpoint",
            tmp_path / "log.csv",
            progress=False,
            **kwargs,
        )

    return model, run


@pytest.mark.parametrize("corruption", ["pickle", "bad_json", "wrong_shapes"])
def test_lm_checkpoint_refuses_corrupt_state(tiny_lm, tmp_path, corruption):
    _, run = lm_training(tiny_lm, tmp_path)
    assert interrupted_after(2, run) == {"interrupted_at_step": 2}
    checkpoint, marker = tmp_path / "checkpoint", tmp_path / "marker"
    if corruption == "pickle":
        plant_pickle(checkpoint / "state.safetensors", marker)
        expected = r"checkpoint/state\.safetensors: not a readable safetensors file"
    elif corruption == "bad_json":
        (checkpoint / "state.json").write_text('{"fingerprint": "abc", "step": ')
        expected = r"checkpoint/state\.json: not valid JSON"
    else:
        tensors = load_tensors(checkpoint / "state.safetensors")
        save_tensors(
            checkpoint / "state.safetensors",
            {
                name: torch.zeros(*(2 * n for n in t.shape)) if name.startswith("model.") else t
                for name, t in tensors.items()
            },
        )
        expected = r"checkpoint/state\.safetensors: tensor 'model\..*' has shape .*, config expects"
    raises_one_line(expected, run)
    assert not marker.exists() and not (tmp_path / "final").exists()


# ------------------------------------------------------------------------------------------------
# Numerical faults


def test_nan_weight_stops_lm_training_saying_where(tiny_lm, tmp_path):
    model, run = lm_training(tiny_lm, tmp_path)
    with torch.no_grad():
        model.transformer.ln_f.weight[0] = float("nan")
    raises_one_line(r"LM training: loss is nan at epoch 0 step 0; stopping", run)
    assert not (tmp_path / "final").exists() and not (tmp_path / "checkpoint").exists()


def test_exploding_lr_stops_lm_training_saying_where(tiny_lm, tmp_path):
    model, run = lm_training(tiny_lm, tmp_path, lr=1e30, warmup_fraction=0.0, grad_clip=1e30)
    raises_one_line(r"LM training: loss is (nan|inf) at epoch \d+ step [1-9]\d*; stopping", run)
    assert not (tmp_path / "final").exists()


# ------------------------------------------------------------------------------------------------
# Interruption: a real process killed mid-training, then resumed


def sae_data(n_rows=1500, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    rule = torch.arange(n_rows) % 6
    h = 3 * torch.randn(6, d, generator=g)[rule] + torch.randn(n_rows, d, generator=g)
    value = (h[:, 0] > 0).long() + (h[:, 1] > 0).long()
    return h, rule, value


SAE_JOB = dict(epochs=10, batch_size=16)


def sae_job(checkpoint_dir: str):
    """What the killed subprocess runs (and the resumed run repeats): SAE training with checkpoints."""
    from biosae.sae.model import SAEConfig
    from biosae.sae.training import train_sae

    torch.set_num_threads(1)
    h, rule, value = sae_data()
    cfg = SAEConfig(d_model=h.shape[1], value_vocab_sizes=[3] * 6, **SAE_JOB)
    # a checkpoint every epoch (not every 30 s, the default) so that the kill lands mid-training,
    # between checkpoints; what the kill-and-resume test checks holds for any interval
    return train_sae(h, rule, value, cfg, checkpoint_dir=checkpoint_dir, progress=False, checkpoint_every_s=0)


def wait_for(predicate, process: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"process ended (rc {process.returncode}) before {what}:\n{output[-4000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def checkpoint_field(path: Path, field: str) -> int:
    try:
        return int(json.loads(path.read_text())[field])
    except (OSError, ValueError, KeyError):  # not there yet, or caught mid-replace
        return 0


@pytest.fixture(scope="module")
def uninterrupted_sae(tmp_path_factory):
    threads = torch.get_num_threads()
    model, history = sae_job(str(tmp_path_factory.mktemp("sae_full") / "ckpt"))
    torch.set_num_threads(threads)
    return model, history


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_sae_training_resumes_to_the_uninterrupted_result(tmp_path, sig, uninterrupted_sae):
    checkpoint = tmp_path / "ckpt"
    code = f"from tests.test_reliability import sae_job; sae_job({str(checkpoint)!r})"
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )
    wait_for(lambda: checkpoint_field(checkpoint / "state.json", "epoch") >= 2, process, 120, "an SAE checkpoint")
    process.send_signal(sig)
    process.communicate(timeout=30)
    assert process.returncode == -sig
    done = checkpoint_field(checkpoint / "state.json", "epoch")
    assert 2 <= done < SAE_JOB["epochs"], "killed before the end"

    threads = torch.get_num_threads()
    resumed, history = sae_job(str(checkpoint))
    torch.set_num_threads(threads)
    full, full_history = uninterrupted_sae
    assert len(history) == SAE_JOB["epochs"] and history == full_history
    for name, tensor in full.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


def process_tree(pid: int) -> set[int]:
    """``pid`` and its descendants, from /proc (a job may not share Snakemake's process group)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    tree, stack = set(), [pid]
    while stack:
        current = stack.pop()
        tree.add(current)
        stack.extend(children.get(current, []))
    return tree


def read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def kill_tree(process: subprocess.Popen, sig: int) -> None:
    """Signal Snakemake's whole process group and any descendant outside it, as SLURM or a power cut would."""
    tree = process_tree(process.pid)
    os.killpg(process.pid, sig)
    for pid in tree:
        try:
            if os.getpgid(pid) != process.pid:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass
    process.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid) for pid in tree - {process.pid}):
        assert time.monotonic() < deadline, "killed processes still running"
        time.sleep(0.1)


def _state(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}") / "status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"


def assert_no_partial_model(lm: Path) -> None:
    """results/lm/final is absent, or complete (config and loadable weights)."""
    final = lm / "final"
    if final.exists():
        from biosae.lm.model import load_model_dir

        load_model_dir(final)
    assert not (lm / "train_log.csv").exists() or final.exists()


@pytest.mark.slow
def test_killed_lm_job_resumes_from_its_checkpoint_through_snakemake(tmp_path):
    """SIGTERM, then SIGKILL, to the running train_lm job; each rerun resumes from the checkpoint."""
    # A few seconds of training, a checkpoint every 2 steps: time to kill it twice.
    write_config(tmp_path, tiny_config(training={"epochs": 3, "batch_size": 8, "checkpoint_every_steps": 2}))
    lm, state = tmp_path / "results" / "lm", tmp_path / "results" / "lm" / "checkpoint" / "state.json"
    log = tmp_path / "logs" / "train_lm.log"

    # 1. SIGTERM (a scheduler's time limit): Snakemake marks the job failed and removes its outputs.
    process = start_snakemake(tmp_path, "--cores", "2", "results/lm/final")  # the dataset job, then train_lm
    wait_for(lambda: checkpoint_field(state, "step") >= 2, process, 300, "the first LM checkpoint")
    kill_tree(process, signal.SIGTERM)
    first = checkpoint_field(state, "step")
    assert first >= 2
    assert_no_partial_model(lm)
    assert not (lm / "final").exists()

    # 2. Rerun, then SIGKILL (a power cut) once it has moved past the first checkpoint.
    process = start_snakemake(tmp_path, "--cores", "2", "--rerun-incomplete", "results/lm/final")
    wait_for(lambda: checkpoint_field(state, "step") > first, process, 300, "a later LM checkpoint")
    wait_for(lambda: "resuming from" in read_text(log), process, 60, "the resume line in the log")
    total = int(re.search(rf"resuming from \S*checkpoint at step {first} of (\d+)", read_text(log)).group(1))
    kill_tree(process, signal.SIGKILL)
    second = checkpoint_field(state, "step")
    assert second > first
    assert_no_partial_model(lm)

    # 3. A SIGKILLed Snakemake leaves its lock: unlock, rerun incomplete jobs, finish from the checkpoint.
    run_snakemake(tmp_path, "--unlock")
    run_snakemake(tmp_path, "--cores", "2", "--rerun-incomplete", "results/lm/final")
    text = log.read_text()
    assert re.search(rf"resuming from \S*checkpoint at step {second} of {total}", text), text[-2000:]
    assert "biosae error" not in text
    from biosae.lm.model import load_model_dir

    load_model_dir(lm / "final")
    summary = json.loads((lm / "train_summary.json").read_text())
    assert summary["steps"] == total


# ------------------------------------------------------------------------------------------------
# Determinism


def digests(directory: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
        if path.is_file()
    }


@pytest.mark.slow
def test_same_config_twice_gives_identical_dataset_and_metrics(twin_runs):
    """Two pipelines side by side (one core each, so both train with one thread): same bytes, same numbers."""
    first, second = (run / "results" for run in twin_runs)
    assert len(digests(first / "dataset")) == 6
    assert digests(first / "dataset") == digests(second / "dataset")
    for relative in ("eval/metrics.json", "lm/qa_accuracy.json"):
        assert json.loads((first / relative).read_text()) == json.loads((second / relative).read_text()), relative
    for relative in ("lm/final/model.safetensors", "sae/layer_-1/sae.safetensors"):
        a, b = load_tensors(first / relative), load_tensors(second / relative)
        assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a), relative


# ------------------------------------------------------------------------------------------------
# Safety: no unsafe loader anywhere in the code that runs


SCANNED = [REPO / "biosae", REPO / "workflow_scripts", REPO / "bench", REPO / "rules", REPO / "Snakefile"]
UNSAFE_NAMES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal", "read_pickle"}


def scanned_files() -> list[Path]:
    files = []
    for root in SCANNED:
        if root.is_file():
            files.append(root)
        elif root.is_dir():
            files += sorted(p for p in root.rglob("*") if p.suffix in (".py", ".smk") and "__pycache__" not in p.parts)
    return files


def code_tokens(source: str) -> list[tokenize.TokenInfo]:
    """Tokens of code, without comments and strings (a docstring may say "no pickle")."""
    return [
        t
        for t in tokenize.generate_tokens(io.StringIO(source).readline)
        if t.type not in (tokenize.COMMENT, tokenize.STRING)
    ]


def unsafe_uses(source: str) -> list[str]:
    problems = []
    tokens = code_tokens(source)
    for index, token in enumerate(tokens):
        if token.type != tokenize.NAME:
            continue
        if token.string in UNSAFE_NAMES:
            problems.append(f"line {token.start[0]}: {token.string}")
        if token.string in ("unsafe_load", "full_load", "UnsafeLoader", "FullLoader"):
            problems.append(f"line {token.start[0]}: yaml.{token.string}")
        if token.string == "load" and index >= 2 and tokens[index - 1].string == ".":
            owner = tokens[index - 2].string
            call = tokens[index : index + 60]
            closing = next((i for i, t in enumerate(call) if t.string == ")"), len(call))
            arguments = "".join(t.string for t in call[:closing])
            if owner == "yaml":
                problems.append(f"line {token.start[0]}: yaml.load (use yaml.safe_load)")
            if owner == "torch" and "weights_only=True" not in arguments:
                problems.append(f"line {token.start[0]}: torch.load without weights_only=True")
        if token.string == "allow_pickle":
            problems.append(f"line {token.start[0]}: allow_pickle")
    return problems


def test_scanner_catches_what_it_should():
    bad = (
        "import pickle\nx = yaml.load(f)\ny = torch.load(p)\nz = torch.load(p, weights_only=False)\n"
        "import dill\nnp.load(p, allow_pickle=True)\nyaml.unsafe_load(s)\n"
    )
    assert len(unsafe_uses(bad)) == 7
    good = (
        'a = torch.load(p, map_location="cpu", weights_only=True)\nb = yaml.safe_load(f)\n"""no pickle"""  # pickle\n'
    )
    assert unsafe_uses(good) == []


def test_no_unsafe_loading_anywhere():
    files = scanned_files()
    assert any(p.name == "io.py" for p in files) and any(p.suffix == ".smk" for p in files)
    problems = {}
    for path in files:
        found = unsafe_uses(path.read_text(encoding="utf-8"))
        if found:
            problems[str(path.relative_to(REPO))] = found
    assert problems == {}


def test_interrupted_directory_swap_keeps_the_old_version_readable(tmp_path):
    """A kill between atomic_directory's two renames leaves the old version aside, complete."""
    import os

    from biosae.io import atomic_directory, existing_version, previous_version

    target = tmp_path / "checkpoint"
    with atomic_directory(target) as tmp:
        (tmp / "state.json").write_text('{"step": 1}')
    # Simulate the kill: the old version was renamed aside, the new one not yet in place.
    os.replace(target, previous_version(target))
    assert existing_version(target) == previous_version(target)
    assert (existing_version(target) / "state.json").read_text() == '{"step": 1}'
    with atomic_directory(target) as tmp:
        (tmp / "state.json").write_text('{"step": 2}')
    assert existing_version(target) == target and not previous_version(target).exists()
    assert (target / "state.json").read_text() == '{"step": 2}'
