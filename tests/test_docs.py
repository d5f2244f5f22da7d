"""The docs site: its configuration reference covers the whole schema, and it builds strictly."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
GENERATOR = REPOSITORY / "docs" / "hooks" / "config_reference.py"


def load_generator():
    spec = importlib.util.spec_from_file_location("config_reference", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def schema_keys(schema: dict, prefix: str = "") -> list[str]:
    """Every dotted key of a JSON schema, the keys of each alternative of an anyOf/oneOf/allOf included."""
    keys = []
    for key, sub in (schema.get("properties") or {}).items():
        keys.append(prefix + key)
        keys += schema_keys(sub, f"{prefix}{key}.")
        for combinator in ("anyOf", "oneOf", "allOf"):
            for option in sub.get(combinator) or []:
                keys += schema_keys(option, f"{prefix}{key}.")
    return keys


def test_the_config_reference_names_every_key_of_the_schema():
    generator = load_generator()
    schema = generator.load_schema()
    reference = generator.reference_markdown(schema)
    keys = schema_keys(schema)
    assert {"seed", "sae.lambda_align", "methods.das.rank", "sweep.layers"} <= set(keys)
    # a top-level section is a heading of its own; every other key is a row of its section's table
    missing = [key for key in keys if f"| `{key}` |" not in reference and f"### `{key}`" not in reference]
    assert not missing, f"docs/configuration.md's generated reference leaves out {missing}"


def test_the_config_reference_gives_every_default():
    generator = load_generator()
    schema = generator.load_schema()
    rows = {
        line.split("`")[1]: line for line in generator.reference_markdown(schema).splitlines() if line.startswith("| `")
    }

    def check(section: dict, prefix: str = "") -> None:
        for key, sub in (section.get("properties") or {}).items():
            if "default" in sub and prefix + key in rows:
                assert f"| {generator._code(sub['default'])} |" in rows[prefix + key], rows[prefix + key]
            check(sub, f"{prefix}{key}.")

    check(schema)
    assert len(rows) > 40


def test_the_docs_site_builds_strictly(tmp_path):
    """A broken link, a missing anchor or a page left out of the nav fails the build."""
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must build the docs: install the docs extra (pip install -e '.[docs]')")
        pytest.skip("mkdocs and mkdocs-material are not installed (pip install -e '.[docs]')")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sae.lambda_align" in (tmp_path / "site" / "configuration" / "index.html").read_text(encoding="utf-8")
