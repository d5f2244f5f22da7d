"""Localization methods: where does the LM keep "which attribute is asked"?

One room per method, all behind the interface of biosae.methods.base (ablation, interchange,
steering, read-out), so that biosae.methods.comparison runs the same tests on the same prompts for
every method, and adding a method is adding one class and one line below.

- ``sae_slot``          the supervised 6-slot SAE (biosae.sae.model), error term kept
- ``diffmean``          AxBench's difference of class means
- ``probe``             the linear probe's class directions
- ``das``               distributed alignment search: a trained rank-k orthonormal subspace
- ``sae_unsupervised``  a TopK SAE trained without labels, the best latent per rule (AxBench SAE-A)
- ``random``            the control: random directions and a random subspace
"""

from __future__ import annotations

import torch

from biosae.errors import BiosaeError
from biosae.methods.base import LocalizationMethod

METHOD_NAMES = ("sae_slot", "diffmean", "probe", "das", "sae_unsupervised", "random")
# Methods whose fit is a training job of its own (a Snakemake rule), not done inside evaluate.
TRAINED_METHODS = ("das", "sae_unsupervised")


def check_method_names(names) -> list[str]:
    unknown = [name for name in names if name not in METHOD_NAMES]
    if unknown:
        raise BiosaeError(f"config key methods.names: unknown method {unknown[0]!r} (known: {', '.join(METHOD_NAMES)})")
    return list(names)


def build_methods(names, *, sae, train_activations: torch.Tensor, train_rule_idx, seed: int, probe=None,
                  das_basis: torch.Tensor | None = None, unsupervised_sae=None) -> dict[str, LocalizationMethod]:
    """Fit (or wrap the trained) methods, in ``names`` order; ``random`` gets the largest rank of the others."""
    from biosae.methods.das import das_method
    from biosae.methods.diffmean import fit_diffmean
    from biosae.methods.probe import fit_probe
    from biosae.methods.random_control import fit_random
    from biosae.methods.sae_slot import SaeSlotMethod
    from biosae.methods.unsupervised_sae import fit_unsupervised_method

    methods: dict[str, LocalizationMethod] = {}
    for name in check_method_names(names):
        if name == "sae_slot":
            methods[name] = SaeSlotMethod(sae)
        elif name == "diffmean":
            methods[name] = fit_diffmean(train_activations, train_rule_idx)
        elif name == "probe":
            methods[name] = fit_probe(train_activations, train_rule_idx, probe)
        elif name == "das":
            if das_basis is None:
                raise BiosaeError("method das: no trained DAS subspace given")
            methods[name] = das_method(das_basis, train_activations, train_rule_idx)
        elif name == "sae_unsupervised":
            if unsupervised_sae is None:
                raise BiosaeError("method sae_unsupervised: no trained unsupervised SAE given")
            methods[name] = fit_unsupervised_method(unsupervised_sae, train_activations, train_rule_idx)
    if "random" in names:
        rank = max([getattr(method, "rank", 0) for method in methods.values()] + [6])
        methods["random"] = fit_random(train_activations.shape[1], rank, seed)
        methods = {name: methods[name] for name in names}
    return methods
