"""The localization methods by name: one registry line each.

The config's ``methods.names`` resolves here (schemas/config.schema.yaml lists the same names, so
that a config is checked before any job runs; tests/test_method_plugin.py keeps the two equal).
An entry names the method's fit function, which takes one :class:`~biosae.methods.base.FitInputs`
and returns what the method is (biosae.methods.base); the evaluation derives its tests from that.
:func:`register_method` adds one at runtime too (docs/adding-a-method.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from biosae.errors import BiosaeError
from biosae.methods.base import FitInputs, LocalizationMethod
from biosae.methods.das import fit_das
from biosae.methods.diffmean import fit_diffmean
from biosae.methods.probe import fit_probe
from biosae.methods.random_control import fit_random
from biosae.methods.sae_slot import fit_sae_slot
from biosae.methods.unsupervised_sae import fit_unsupervised_method
from biosae.rules import RULES


@dataclass(frozen=True)
class MethodEntry:
    name: str
    fit: Callable[[FitInputs], LocalizationMethod]
    # Its artifact comes from a training job of its own (rules/methods.smk), not from evaluate.
    trained: bool = False
    # A control: fitted after the compared methods, at the largest rank among them
    # (FitInputs.rank), so that it is never smaller than what it controls for.
    control: bool = False


REGISTRY: dict[str, MethodEntry] = {}


def register_method(name: str, fit: Callable[[FitInputs], LocalizationMethod], *, trained: bool = False,
                    control: bool = False) -> MethodEntry:
    """Make ``name`` a method that ``methods.names`` (and :func:`build_methods`) can name."""
    if name in REGISTRY:
        raise BiosaeError(f"method {name!r} is registered already")
    REGISTRY[name] = MethodEntry(name, fit, trained, control)
    return REGISTRY[name]


register_method("sae_slot", fit_sae_slot)
register_method("diffmean", fit_diffmean)
register_method("probe", fit_probe)
register_method("das", fit_das, trained=True)
register_method("sae_unsupervised", fit_unsupervised_method, trained=True)
register_method("random", fit_random, control=True)


def method_names() -> tuple[str, ...]:
    """Every registered method, in registry order (the report's order)."""
    return tuple(REGISTRY)


def method_entries(names) -> list[MethodEntry]:
    """The entries of ``names``, in that order; an unknown name is a one-line BiosaeError."""
    unknown = [name for name in names if name not in REGISTRY]
    if unknown:
        raise BiosaeError(f"config key methods.names: unknown method {unknown[0]!r} (known: {', '.join(REGISTRY)})")
    return [REGISTRY[name] for name in names]


def build_methods(names, inputs: FitInputs) -> dict[str, LocalizationMethod]:
    """Fit (or wrap the trained) methods of ``names``, in that order; controls after the others."""
    entries = method_entries(names)
    methods = {entry.name: entry.fit(inputs) for entry in entries if not entry.control}
    controls = [entry for entry in entries if entry.control]
    if controls:
        rank = max([getattr(method, "rank", 0) for method in methods.values()] + [len(RULES)])
        for entry in controls:
            methods[entry.name] = entry.fit(replace(inputs, rank=rank))
        methods = {name: methods[name] for name in names}
    return methods
