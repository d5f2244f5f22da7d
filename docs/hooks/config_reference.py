"""The configuration reference of the docs, generated from schemas/config.schema.yaml.

An MkDocs hook (mkdocs.yml, ``hooks:``): at build time it replaces the marker line
``<!-- config-reference -->`` of configuration.md with one table per config section, a row per
key (its type, default, allowed values and description), so that the page and the schema can
never disagree. ``reference_markdown`` is the generator; tests/test_docs.py checks that it names
every key of the schema.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

REPOSITORY = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPOSITORY / "schemas" / "config.schema.yaml"
PAGE = "configuration.md"
MARKER = "<!-- config-reference -->"


def load_schema(path: Path = SCHEMA_PATH) -> dict:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _text(text: str) -> str:
    """Plain schema text made safe inside a Markdown table cell (``<rule>`` is not an HTML tag)."""
    return (
        " ".join(str(text).split()).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
    )


def _value(value) -> str:
    """A YAML-style literal: ``all``, ``null``, ``[1.0, 2.0]``, ``{}``."""
    if isinstance(value, str):
        return value
    return json.dumps(value).replace('"', "")


def _code(value) -> str:
    return f"`{_value(value)}`"


def _alternatives(schema: dict) -> list[dict]:
    return schema.get("anyOf") or schema.get("oneOf") or []


def type_text(schema: dict) -> str:
    """The value a key takes: its type with its bounds, or its constants."""
    options = _alternatives(schema)
    if options:
        return " or ".join(type_text(option) for option in options)
    if "const" in schema:
        return f"{_code(schema['const'])} only"
    if "enum" in schema:
        return "one of " + ", ".join(_code(value) for value in schema["enum"])
    kinds = schema.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    words = {
        "integer": "integer",
        "number": "number",
        "string": "string",
        "boolean": "boolean",
        "array": "list",
        "object": "mapping",
        "null": "`null`",
    }
    text = " or ".join(words.get(kind, kind) for kind in kinds) or "any"
    bounds = []
    for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
        if key in schema:
            bounds.append(f"{sign} {_value(schema[key])}")
    if "minLength" in schema:
        bounds.append(f"at least {schema['minLength']} character")
    if "minItems" in schema:
        bounds.append(f"at least {schema['minItems']} item{'s' if schema['minItems'] != 1 else ''}")
    if schema.get("uniqueItems"):
        bounds.append("no repeats")
    if bounds:
        text += " (" + ", ".join(bounds) + ")"
    if "items" in schema:
        text += " of " + type_text(schema["items"])
    if "object" in kinds and "properties" in schema and "array" not in kinds:
        text += " with keys " + ", ".join(f"`{key}`" for key in schema["properties"])
    return text


def _rows(schema: dict, prefix: str) -> list[tuple[str, dict]]:
    """(dotted key, schema) for every key under ``schema``, depth first, in the schema's order;
    keys that only exist in one form of a key (a mapping alternative of an anyOf) included."""
    rows = []
    for key, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}{key}"
        rows.append((path, sub))
        rows.extend(_rows(sub, path + "."))
        for option in _alternatives(sub):
            rows.extend(_rows(option, path + "."))
    return rows


def _row(path: str, schema: dict) -> str:
    if schema.get("type") == "object" and "properties" in schema and not _alternatives(schema):
        kind = "section"
    else:
        kind = type_text(schema)
    default = _code(schema["default"]) if "default" in schema else "required"
    description = _text(schema.get("description", ""))
    return f"| `{path}` | {kind.replace('|', chr(92) + '|')} | {default} | {description} |"


def reference_markdown(schema: dict) -> str:
    """One table per top-level section (top-level scalars first), a row per key."""
    header = ["| key | value | default | what it is |", "|---|---|---|---|"]
    properties = schema.get("properties") or {}
    scalars = [(key, sub) for key, sub in properties.items() if "properties" not in sub and not _alternatives(sub)]
    sections = [(key, sub) for key, sub in properties.items() if (key, sub) not in scalars]
    lines = []
    if scalars:
        lines += ["### Top level", "", *header, *(_row(key, sub) for key, sub in scalars), ""]
    for key, sub in sections:
        lines += [f"### `{key}`", ""]
        if sub.get("description"):
            lines += [_text(sub["description"]).rstrip(".") + ".", ""]
        lines += [*header, *(_row(path, row) for path, row in _rows(sub, key + ".")), ""]
    return "\n".join(lines)


# MkDocs hook events


def on_config(config):
    config.watch.append(str(SCHEMA_PATH))  # `mkdocs serve` rebuilds when the schema changes
    return config


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        from mkdocs.exceptions import PluginError

        raise PluginError(
            f"docs/{PAGE}: the marker line {MARKER} is missing (the generated config reference goes there)"
        )
    return markdown.replace(MARKER, reference_markdown(load_schema()))
