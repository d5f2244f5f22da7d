"""The shipped config files validate; defaults fill in; the schema and config.yaml agree; command-line
overrides are typed by the schema; the same values from any source give the same params."""

from __future__ import annotations

import copy
import json
import shutil
from collections import OrderedDict

import pytest
import yaml

from biosae.config import SCHEMA_PATH, validate_config
from biosae.config import layered as merged
from biosae.errors import BiosaeError
from tests.conftest import DATA, REPO, planned_jobs, tiny_config


def test_default_config_validates_and_matches_schema_defaults(monkeypatch):
    monkeypatch.chdir(REPO)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    filled = validate_config(config)
    schema = yaml.safe_load(SCHEMA_PATH.read_text())

    # Every default in the schema is the value config.yaml ships, so an omitted key means the same run.
    def check(spec, value, name):
        if spec.get("type") != "object":
            assert value == spec["default"], name
            return
        for key, sub in spec["properties"].items():
            check(sub, value[key], f"{name}.{key}".lstrip("."))

    check(schema, filled, "")
    assert validate_config({}) == filled


def test_gpt2_config_is_the_seed_setup(monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    config = merged(
        yaml.safe_load((REPO / "config.yaml").read_text()), yaml.safe_load((REPO / "config" / "gpt2.yaml").read_text())
    )
    filled = validate_config(config)
    assert filled["model"]["init"] == "pretrained" and filled["model"]["name"] == "gpt2"
    assert (
        filled["training"]["epochs"],
        filled["training"]["lr"],
        filled["training"]["batch_size"],
        filled["training"]["max_length"],
    ) == (3, 2e-5, 8, 512)


# ------------------------------------------------------------------------------------------------
# Command-line overrides and canonical params


def with_command_line(config: dict, *entries: str) -> dict:
    """``config`` with ``--config`` entries merged as Snakemake 9 merges them (its own parser)."""
    from snakemake.cli import parse_config
    from snakemake.utils import update_config

    config = copy.deepcopy(config)
    update_config(config, parse_config(list(entries)))
    return config


def test_nested_command_line_overrides_are_typed_by_the_schema():
    config = with_command_line(
        tiny_config(),
        "sae={lambda_align: 2.0, epochs: 7}",
        "dataset={num_persons: 50}",
        "seed=3",
        "evaluate={hard_questions: false, swap_alphas: [1, 2.5]}",
        "sweep={seeds: [0, 1]}",
        "training={lr: 1e-3}",
    )
    # What Snakemake hands over: the leaves of a nested value as strings, a top-level value parsed.
    assert (config["sae"]["lambda_align"], config["sweep"]["seeds"], config["seed"]) == ("2.0", ["0", "1"], 3)
    filled = validate_config(config)
    assert filled["sae"]["lambda_align"] == 2.0 and filled["sae"]["epochs"] == 7
    assert filled["dataset"]["num_persons"] == 50 and filled["seed"] == 3
    assert filled["evaluate"]["hard_questions"] is False and filled["evaluate"]["swap_alphas"] == [1.0, 2.5]
    assert filled["sweep"]["seeds"] == [0, 1] and filled["training"]["lr"] == 1e-3
    assert [type(v) for v in (filled["sae"]["lambda_align"], filled["sae"]["epochs"], filled["sweep"]["seeds"][1])] == [
        float,
        int,
        int,
    ]


@pytest.mark.parametrize(
    "entry, message",
    [
        ("sae={lambda_align: abc}", "config key sae.lambda_align: 'abc' is not of type 'number'"),
        ("dataset={num_persons: 2.5}", "config key dataset.num_persons: 2.5 is not of type 'integer'"),
        ("evaluate={hard_questions: maybe}", "config key evaluate.hard_questions: 'maybe' is not of type 'boolean'"),
        ("sweep={seeds: [0, x]}", "config key sweep.seeds.1: 'x' is not of type 'integer'"),
        ("sae={lr: nan}", "config key sae.lr: nan is not a finite number"),
        ("seed=abc", "config key seed: 'abc' is not of type 'integer'"),
        ("sae={lambda_typo: 1}", "config key sae.lambda_typo: unknown key"),
    ],
)
def test_a_bad_command_line_override_is_one_line_naming_the_key(entry, message):
    with pytest.raises(BiosaeError) as error:
        validate_config(with_command_line(tiny_config(), entry))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_same_values_from_any_source_give_the_same_params():
    """Snakemake's params rerun trigger compares each param's repr: key order, int vs float and
    OrderedDict vs dict would all rerun a stage."""
    config = tiny_config()
    reordered = {
        section: dict(reversed(values.items())) if isinstance(values, dict) else values
        for section, values in reversed(config.items())
    }
    respelled = copy.deepcopy(config)
    respelled["sae"].update(lambda_align=1, temp_start="1.0")
    respelled["training"]["epochs"] = 40.0
    respelled["dataset"]["num_persons"] = 24.0
    respelled["evaluate"]["swap_alphas"] = [1, 2]
    from_json = json.loads(json.dumps(config), object_pairs_hook=OrderedDict)
    defaults_omitted = {
        "dataset": config["dataset"],
        "model": config["model"],
        "training": {key: config["training"][key] for key in ("precision", "lr", "batch_size", "epochs")},
        "sae": {"batch_size": 16, "epochs": 30},
        "evaluate": {"max_prompts_per_cell": 24},
        "activations": {"batch_size": 64},
        "methods": {"sae_unsupervised": {"n_latents": 128, "epochs": 50}},
    }
    overridden = with_command_line(
        config,
        "sae={lambda_align: 1, epochs: 30.0}",
        "training={epochs: 40}",
        "seed=0",
        "evaluate={swap_alphas: [1, 2.0], hard_questions: true}",
    )
    reference = validate_config(config)
    for variant in (reordered, respelled, from_json, defaults_omitted, overridden):
        filled = validate_config(variant)
        assert list(filled) == list(reference)
        for section in reference:
            assert repr(filled[section]) == repr(reference[section]), section


def test_the_shipped_config_is_already_canonical(monkeypatch):
    """Runs made before canonical params keep theirs: config.yaml is in the schema's key order and
    spells each number as the schema's default does (before, defaults it omits were appended)."""
    monkeypatch.chdir(REPO)
    shipped = yaml.safe_load((REPO / "config.yaml").read_text())
    filled = validate_config(shipped)
    for section, values in shipped.items():
        if isinstance(values, dict):
            values = {**values, **{key: value for key, value in filled[section].items() if key not in values}}
        assert repr(filled[section]) == repr(values), section


def test_quick_config_plans_the_default_pipeline_on_fewer_persons(tmp_path):
    """config/quick.yaml (the README's first look) is an overlay that keeps every stage, layer and
    method of the default and changes only sizes."""
    quick = REPO / "config" / "quick.yaml"
    overlay = yaml.safe_load(quick.read_text())
    assert overlay["dataset"] == {"num_persons": 300}
    assert "model" not in overlay and "sweep" not in overlay and "names" not in overlay.get("methods", {})
    (tmp_path / "data").symlink_to(DATA)
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    assert planned_jobs(tmp_path, "--configfile", str(quick)) == planned_jobs(tmp_path)
