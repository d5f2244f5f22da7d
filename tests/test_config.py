"""The shipped config files validate; defaults fill in; the schema and config.yaml agree."""

from __future__ import annotations

import copy

import yaml

from biosae.config import SCHEMA_PATH, validate_config
from tests.conftest import REPO


def merged(base: dict, override: dict) -> dict:
    """Snakemake's --configfile semantics: nested mappings merge, other values replace."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


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
    config = merged(yaml.safe_load((REPO / "config.yaml").read_text()),
                    yaml.safe_load((REPO / "config" / "gpt2.yaml").read_text()))
    filled = validate_config(config)
    assert filled["model"]["init"] == "pretrained" and filled["model"]["name"] == "gpt2"
    assert (filled["training"]["epochs"], filled["training"]["lr"], filled["training"]["batch_size"],
            filled["training"]["max_length"]) == (3, 2e-5, 8, 512)
