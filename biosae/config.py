"""Config validation: JSON schema (types, ranges, unknown keys) plus the checks a schema can't say.

Every problem becomes one line naming the key, raised as BiosaeError before any job runs. The
validated config is canonical: the same values give the same dicts, whatever their source.
"""

from __future__ import annotations

import copy
import math
import os
import re
from pathlib import Path

import jsonschema

from biosae.dataset.entities import load_entity_pools
from biosae.dataset.question_templates import check_training_keys
from biosae.dataset.questions import load_question_files
from biosae.errors import BiosaeError
from biosae.io import read_yaml
from biosae.lm.layers import ALL_LAYERS, block_count
from biosae.methods.registry import method_entries

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"


def _key_path(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(part) for part in error.absolute_path)
    if error.validator == "additionalProperties":
        # jsonschema reports the parent object; name the unknown key itself.
        allowed = set(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - allowed)
        return ".".join(filter(None, [path, unknown[0] if unknown else ""]))
    return path or "(top level)"


def _one_line(error: jsonschema.ValidationError) -> str:
    key = _key_path(error)
    if error.validator == "additionalProperties":
        return f"config key {key}: unknown key (allowed: {', '.join(sorted(error.schema.get('properties', {})))})"
    return f"config key {key}: {error.message}"


def _fill_defaults(schema: dict, instance: dict) -> None:
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(sub, instance[key])


def _types(schema: dict) -> list[str]:
    kind = schema.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")


def _from_text(text: str, types: list[str]):
    """A string read as the schema's scalar type, or returned unchanged when it is not one.

    Snakemake hands the leaves of a nested ``--config 'sae={lambda_align: 2.0}'`` over as strings
    (it parses them with YAML's BaseLoader), and YAML 1.1 reads ``1e-3`` in a file as a string.
    """
    word = text.strip()
    if "boolean" in types and word.lower() in ("true", "false"):
        return word.lower() == "true"
    if "integer" in types and _INTEGER_TEXT.fullmatch(word):
        return int(word)
    if "number" in types or "integer" in types:
        try:
            return float(word)
        except ValueError:
            return text
    return text


def _matching_option(options: list[dict], value) -> dict:
    """The alternative of an anyOf/oneOf that ``value`` is meant for: by shape for a list or a
    mapping; a string that is one of the constants stays a string; else the first scalar type."""
    shape = "array" if isinstance(value, list) else "object" if isinstance(value, dict) else None
    if shape:
        return next((option for option in options if shape in _types(option)), {})
    if isinstance(value, str) and any(
        option.get("const") == value or value in option.get("enum", []) for option in options
    ):
        return {}
    return next((option for option in options if set(_types(option)) & {"integer", "number", "boolean"}), {})


def canonical(schema: dict, value, path: tuple = (), numbers: bool = True):
    """``value`` in one form per meaning: strings read as the schema's scalar types, numbers of
    an ``integer`` key as int and of a ``number`` key as float (as int where the schema's default
    is an int and the value integral), mappings as plain dicts in the schema's key order (unknown
    keys last, for validation to name). ``numbers=False`` leaves numbers as they are, so that a
    validation message quotes the value as the user wrote it.

    Why: rules receive config sections as params, and Snakemake's params rerun trigger compares
    their ``repr``, so ``{b: 1, a: 2}`` against ``{a: 2, b: 1}``, ``1`` against ``1.0`` or an
    OrderedDict (a JSON config file) against a dict would rerun a stage for nothing.
    """
    options = schema.get("anyOf") or schema.get("oneOf")
    if options and "type" not in schema:
        # e.g. sweep.layers: "all" or a list of integers; dataset.train_templates: a list or a mapping
        return canonical(_matching_option(options, value), value, path, numbers)
    types = _types(schema)
    if isinstance(value, dict) and "object" in types:
        properties = schema.get("properties", {})
        ordered = {
            key: canonical(properties[key], value[key], (*path, key), numbers) for key in properties if key in value
        }
        ordered.update((key, item) for key, item in value.items() if key not in properties)
        return ordered
    if isinstance(value, list) and "array" in types:
        items = schema.get("items", {})
        return [canonical(items, item, (*path, str(index)), numbers) for index, item in enumerate(value)]
    if isinstance(value, str) and "string" not in types:
        value = _from_text(value, types)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if not math.isfinite(value):
        raise BiosaeError(f"config key {'.'.join(path) or '(top level)'}: {value} is not a finite number")
    if not numbers:
        return value
    if "integer" in types and "number" not in types and float(value).is_integer():
        return int(value)
    if "number" in types and "integer" not in types:
        # An integral number is spelled as the schema's default is (training.epochs: 10, but
        # sae.lambda_align: 1.0), so runs made with the shipped config.yaml keep their params.
        default = schema.get("default")
        spelled_as_int = isinstance(default, int) and not isinstance(default, bool)
        return int(value) if spelled_as_int and float(value).is_integer() else float(value)
    return value


def check_schema(config: dict, schema_path=SCHEMA_PATH) -> dict:
    """Validate against the JSON schema and return a canonical copy with defaults filled in."""
    schema = read_yaml(schema_path)
    if not isinstance(config, dict):
        raise BiosaeError("config: expected a mapping at the top level")
    config = canonical(schema, config, numbers=False)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(e.absolute_path)))
    if errors:
        raise BiosaeError(_one_line(jsonschema.exceptions.best_match(errors)))
    filled = copy.deepcopy(config)
    _fill_defaults(schema, filled)
    return canonical(schema, filled)


def check_semantics(config: dict) -> None:
    """The impossible-value checks a JSON schema can't express."""
    sae, model, dataset = config["sae"], config["model"], config["dataset"]
    if sae["temp_end"] > sae["temp_start"]:
        raise BiosaeError(
            f"config key sae.temp_end: {sae['temp_end']} is above sae.temp_start {sae['temp_start']} (the anneal goes down)"
        )
    if model["init"] == "scratch" and model["n_embd"] % model["n_head"]:
        raise BiosaeError(
            f"config key model.n_embd: {model['n_embd']} is not divisible by model.n_head {model['n_head']}"
        )
    methods = config["methods"]
    method_entries(methods["names"])  # an unknown name: one line listing the registered ones
    if model["init"] == "scratch" and methods["das"]["rank"] > model["n_embd"]:
        raise BiosaeError(
            f"config key methods.das.rank: {methods['das']['rank']} is above the activations' width "
            f"model.n_embd {model['n_embd']}"
        )
    if methods["sae_unsupervised"]["k"] > methods["sae_unsupervised"]["n_latents"]:
        raise BiosaeError(
            f"config key methods.sae_unsupervised.k: {methods['sae_unsupervised']['k']} active latents "
            f"is more than n_latents {methods['sae_unsupervised']['n_latents']}"
        )

    check_training_keys(
        dataset.get("train_templates"), dataset.get("train_template_idx"), dataset.get("train_wordings_per_question")
    )
    for key in ("entities_dir", "templates_dir", "qa_templates_dir"):
        if not Path(dataset[key]).is_dir():
            raise BiosaeError(f"config key dataset.{key}: directory {dataset[key]!r} not found")
    capacity = load_entity_pools(dataset["entities_dir"]).max_unique_names
    if dataset["num_persons"] > capacity:
        raise BiosaeError(
            f"config key dataset.num_persons: {dataset['num_persons']} is more than the {capacity} unique full names "
            f"the pools in {dataset['entities_dir']} allow"
        )
    n_test = int(round(dataset["num_persons"] * dataset["test_fraction"]))
    if not 0 < n_test < dataset["num_persons"]:
        raise BiosaeError(
            f"config key dataset.test_fraction: {dataset['test_fraction']} of {dataset['num_persons']} persons "
            f"leaves no train or no test persons"
        )
    for index, path in enumerate(config["evaluate"]["extra_questions"]):
        if not Path(path).is_file():
            raise BiosaeError(f"config key evaluate.extra_questions: file {path!r} not found")
        # Checked now, not after hours of LM training: the file's errors name its line.
        load_question_files({f"extra_{index}": path})
    if model["init"] == "pretrained":
        check_pretrained_available(model["name"])
    check_layers(config)


def check_layers(config: dict) -> None:
    """Every layer named (activations.layer, sweep.layers) is a hook point of the model, and no
    hook point is named twice (-1 and n_layer are both the last block's output)."""
    # Validation never downloads: a hub model not yet cached is checked when the workflow plans
    # its jobs (rules/common.smk fetches its config.json to count the layers).
    n_layer = block_count(config["model"], download=False)
    if n_layer is None:
        return
    named = [("activations.layer", config["activations"]["layer"])]
    if config["sweep"]["layers"] != ALL_LAYERS:
        named += [("sweep.layers", layer) for layer in config["sweep"]["layers"]]
    limit = (
        f"model.n_layer {n_layer}"
        if config["model"]["init"] == "scratch"
        else f"the {n_layer} blocks of {config['model']['name']}"
    )
    for key, layer in named:
        if layer > n_layer:
            raise BiosaeError(f"config key {key}: {layer} is above {limit}")
    # -1 is the last block's output, the same hook point as n_layer: both would train and
    # evaluate the same activations twice under two names.
    first_named = {}  # hook point -> (key, layer) that named it first
    for key, layer in named:
        first_key, first = first_named.setdefault(n_layer if layer == -1 else layer, (key, layer))
        if first != layer:
            raise BiosaeError(
                f"config key {key}: {layer} and {first} ({first_key}) are the same hook point, the output of "
                f"the last block of a {n_layer}-layer model; list it once"
            )


def check_pretrained_available(name: str) -> None:
    """A local directory must hold a config.json; a hub id must be in the local cache when offline."""
    if Path(name).is_dir():
        if not (Path(name) / "config.json").is_file():
            raise BiosaeError(
                f"config key model.name: directory {name!r} has no config.json (not a Hugging Face model)"
            )
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or os.environ.get(
        "TRANSFORMERS_OFFLINE", "0"
    ) not in ("0", "", "false")
    if not offline:
        return  # from_pretrained will download it in the LM job
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers always brings huggingface_hub
        return
    cached = try_to_load_from_cache(name, "config.json")
    if not isinstance(cached, str):
        raise BiosaeError(
            f"config key model.name: {name!r} is neither a local directory nor in the Hugging Face cache, and the hub is offline"
        )


def layered(base: dict, overlay: dict) -> dict:
    """``overlay`` merged into a copy of ``base`` as Snakemake layers config files
    (``--configfile a.yaml b.yaml``): a mapping merges key by key, any other value (lists
    included) replaces."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = layered(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def validate_config(config: dict, schema_path=SCHEMA_PATH) -> dict:
    """The config checked, its defaults filled in and canonical (see ``canonical``); BiosaeError if bad."""
    filled = check_schema(config, schema_path)
    check_semantics(filled)
    return filled


def load_config(path) -> dict:
    """Read and validate a config file outside Snakemake (for library users and tests)."""
    return validate_config(read_yaml(path) or {})
