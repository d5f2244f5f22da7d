"""The localization methods by name: one registry line each.

The config's ``methods.names`` resolves here (biosae.config checks it before any job runs). An
entry names the method's fit function as ``"module:function"``, imported only when the method is
fitted, so that checking a config needs no torch; the function takes one
:class:`~biosae.methods.base.FitInputs` and returns what the method is (biosae.methods.base), and
the evaluation derives its tests from that. :func:`register_method` adds one at runtime too
(docs/adding-a-method.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from biosae.errors import BiosaeError
from biosae.rules import RULES

if TYPE_CHECKING:
    from biosae.methods.base import FitInputs, LocalizationMethod

FitFunction = Callable[["FitInputs"], "LocalizationMethod"]


@dataclass(frozen=True)
class MethodEntry:
    name: str
    # the fit function, or where to import it from: "package.module:function"
    fit_function: FitFunction | str
    # Its artifact comes from a training job of its own (rules/methods.smk), not from evaluate.
    trained: bool = False
    # A control: fitted after the compared methods, at the largest rank among them
    # (FitInputs.rank), so that it is never smaller than what it controls for.
    control: bool = False

    @property
    def fit(self) -> FitFunction:
        if not isinstance(self.fit_function, str):
            return self.fit_function
        module, _, function = self.fit_function.partition(":")
        return getattr(importlib.import_module(module), function)


REGISTRY: dict[str, MethodEntry] = {}


def register_method(name: str, fit: FitFunction | str, *, trained: bool = False, control: bool = False) -> MethodEntry:
    """Make ``name`` a method that ``methods.names`` (and :func:`build_methods`) can name; ``fit`` is
    the fit function or ``"package.module:function"``."""
    if name in REGISTRY:
        raise BiosaeError(f"method {name!r} is registered already")
    REGISTRY[name] = MethodEntry(name, fit, trained, control)
    return REGISTRY[name]


register_method("sae_slot", "biosae.methods.sae_slot:fit_sae_slot")
register_method("diffmean", "biosae.methods.diffmean:fit_diffmean")
register_method("probe", "biosae.methods.probe:fit_probe")
register_method("das", "biosae.methods.das:fit_das", trained=True)
register_method("sae_unsupervised", "biosae.methods.unsupervised_sae:fit_unsupervised_method", trained=True)
register_method("random", "biosae.methods.random_control:fit_random", control=True)
register_method("sae_slot_causal", "biosae.methods.sae_slot_causal:fit_sae_slot_causal", trained=True)
register_method("sae_slot_causal_random_targets", "biosae.methods.sae_slot_causal:fit_random_targets", trained=True)
register_method("sae_slot_causal_no_labels", "biosae.methods.sae_slot_causal:fit_no_labels", trained=True)


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
