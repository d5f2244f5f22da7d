"""Methods as plug-ins: the docs' worked example (docs/examples/diffmedian.py), registered by one
line at runtime, runs through the real method tests on the tiny run; an unknown name fails in one
line, from the library and from a config."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
import yaml

from biosae.config import validate_config
from biosae.errors import BiosaeError
from biosae.methods import registry
from biosae.methods.registry import method_entries, method_names, register_method
from biosae.rules import RULES
from tests.conftest import REPO

EXAMPLE = REPO / "docs" / "examples" / "diffmedian.py"


def load_example():
    spec = importlib.util.spec_from_file_location("diffmedian_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def own_registry(monkeypatch):
    """A copy of the registry for the test to add to; the real one is left as it was."""
    monkeypatch.setattr(registry, "REGISTRY", dict(registry.REGISTRY))


def key_paths(result, prefix=()) -> set[tuple]:
    """The keys leading to every value that is not a mapping."""
    if not isinstance(result, dict):
        return {prefix}
    return set().union(*(key_paths(value, (*prefix, key)) for key, value in result.items())) or {prefix}


def numbers(result):
    """Every number in a JSON-able result, at any depth."""
    if isinstance(result, dict):
        result = list(result.values())
    if isinstance(result, list):
        for item in result:
            yield from numbers(item)
    elif isinstance(result, (int, float)) and not isinstance(result, bool):
        yield result


def test_the_config_resolves_methods_names_through_the_registry():
    """The schema lists no method names: the registry is the one list, so that a new method is one
    file and one registry line; a config naming an unknown method fails in one line, before any job."""
    schema = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    names = schema["properties"]["methods"]["properties"]["names"]
    assert "enum" not in names["items"]
    assert set(names["default"]) <= set(method_names())
    assert [entry.name for entry in method_entries(method_names()) if entry.trained] == [
        "das",
        "sae_unsupervised",
        "sae_slot_causal",
        "sae_slot_causal_random_targets",
        "sae_slot_causal_no_labels",
    ]
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["methods"]["names"] = ["diffmean", "diffmode"]
    with pytest.raises(BiosaeError) as error:
        validate_config(config)
    assert (
        str(error.value) == f"config key methods.names: unknown method 'diffmode' (known: {', '.join(method_names())})"
    )


def test_an_unknown_method_name_fails_in_one_line_that_lists_the_known_ones():
    with pytest.raises(BiosaeError) as error:
        method_entries(["diffmean", "diffmode"])
    message = str(error.value)
    assert "\n" not in message
    assert message == f"config key methods.names: unknown method 'diffmode' (known: {', '.join(method_names())})"


def test_a_name_is_registered_once(own_registry):
    example = load_example()
    register_method("diffmedian", example.fit_diffmedian)
    assert method_names()[-1] == "diffmedian"
    with pytest.raises(BiosaeError, match="method 'diffmedian' is registered already"):
        register_method("diffmedian", example.fit_diffmedian)


def test_the_docs_example_runs_through_the_method_tests_on_the_tiny_run(tiny_pipeline, own_registry):
    from biosae.evaluation.evaluate import answered_rules, ordered_cells
    from biosae.evaluation.method_tests import cell_samples, evaluate_methods
    from biosae.lm.activations import load_activation_table
    from biosae.lm.model import load_model_dir

    register_method("diffmedian", load_example().fit_diffmedian)  # the one registry line
    results = tiny_pipeline / "results"
    model, tokenizer = load_model_dir(results / "lm" / "final", torch.device("cpu"))
    activations, index = load_activation_table(
        results / "activations" / "layer_-1.safetensors", results / "activations" / "index.csv"
    )
    samples = cell_samples(model, tokenizer, index, ordered_cells(index), 24, 0)
    tests = evaluate_methods(
        samples,
        -1,
        activations,
        index,
        ["diffmean", "diffmedian"],
        alphas=[1.0, 2.0],
        seed=0,
        answered_rule=answered_rules(index),
    )
    example, reference = tests["methods"]["diffmedian"], tests["methods"]["diffmean"]
    assert key_paths(example) == key_paths(reference)
    values = list(numbers(example))
    assert len(values) > 100 and all(math.isfinite(value) for value in values)
    assert example["rank"] == 5 and example["steerable"] and example["alpha"] in (1.0, 2.0)
    for cell in samples:
        assert -1 <= example["ablation"][cell]["selectivity"] <= 1
        assert 0 <= example["interchange"][cell]["iia"] <= 1
        assert 0 <= example["steering"][cell]["mean_off_diagonal"] <= 1
        assert 0 <= example["detection"][cell] <= 1
    assert example["detection"]["train"] > 1 / len(RULES)  # its read-out beats chance where it was fitted
