"""The edits and the read-out of every localization method, derived once from what the method is.

A method (biosae.methods.base) is a featurizer or a subspace; the tests' edits follow from it.
An edit is a function ``h [N, d] -> h' [N, d]`` on raw activations (float32), applied inside the
LM's forward pass at the hook layer, answer position (biosae.lm.prompt_cache).

Featurizer (``features``, ``inverse``, ``rule_features``), error term kept: an edit replaces the
features ``f = features(h)`` with ``f'`` and returns ``h + (inverse(f') - inverse(f))``, i.e.
``inverse(f') + (h - inverse(f))``. With a nearly one-hot f (the supervised SAE) the
reconstruction is one of ~6 vectors, so all person-specific information lives in the error term
and splicing in the bare reconstruction would destroy every answer (Marks et al. 2024; SAELens
``use_error_term``). The form ``h + (...)`` returns ``h`` itself for an identity edit.

- ablation of rule r: ``f'_{j_r} = 0``, ``j_r`` the feature that carries rule r;
- interchange: ``f' = features(h_src)``, the source's features;
- steering A -> B: ``f'_{j_A} = 0, f'_{j_B} = alpha`` (the AlignSAE-style swap);
- read-out: ``argmax`` of the method's ``rule_scores``.

Subspace (``basis`` B, ``ablation_directions``, ``rule_means``, read-out weights):

- ablation of rule r: ``h - a_r(h) u_r``, ``u_r`` the rule's ablation direction and ``a_r`` the
  method's ``ablation_amount`` (the projection ``h . u_r`` on a unit direction);
- interchange: ``h + ((h_src - h) B^T) B``, the base's component in the subspace replaced with
  the source's;
- steering A -> B: ``h + alpha ((mu_B - mu_A) B^T) B``, the move from the rule-A mean to the
  rule-B mean within the subspace (for DiffMean that is exactly ``alpha (mu_B - mu_A)``);
- read-out: ``argmax`` of ``rule_scores`` (``h W^T + b`` from the read-out weights).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from biosae.methods.base import FeaturizerMethod, LocalizationMethod, SubspaceMethod

Edit = Callable[[torch.Tensor], torch.Tensor]


def project_out(direction: torch.Tensor) -> Edit:
    """Remove the component of h along a unit ``direction``."""

    def edit(h: torch.Tensor) -> torch.Tensor:
        return h - (h @ direction)[:, None] * direction

    return edit


def slot_direction(sae, slot: int) -> torch.Tensor:
    """Unit vector along which the supervised SAE's slot ``slot`` moves h in activation space
    (decode is affine: mean + std * (W z + b), so the raw-space direction is std * W[:, slot]).
    Projecting it out is metrics.json's ``ablation.direction``."""
    direction = sae.slot_directions()[slot]
    return (direction / direction.norm()).detach().float()


def with_features(method: FeaturizerMethod, h: torch.Tensor, features_edit) -> torch.Tensor:
    """``h`` with its features replaced, error term kept. ``features_edit``: the new features, or a
    function from the features to the new ones."""
    features = method.features(h)
    edited = features_edit(features) if callable(features_edit) else features_edit
    return h + (method.inverse(edited) - method.inverse(features))


def ablation_edit(method: LocalizationMethod, rule: int) -> Edit:
    """Remove what ``method`` says carries rule ``rule``."""
    if isinstance(method, FeaturizerMethod):
        feature = method.rule_features[rule]

        def zero_feature(features):
            features = features.clone()
            features[:, feature] = 0.0
            return features

        return lambda h: with_features(method, h, zero_feature)
    direction = method.ablation_directions[rule]

    def edit(h: torch.Tensor) -> torch.Tensor:
        return h - method.ablation_amount(h, rule)[:, None] * direction

    return edit


def interchange_edit(method: LocalizationMethod, source_h: torch.Tensor) -> Edit:
    """Give each base row the value of the variable that row i of ``source_h`` (its source's
    activation at the hook layer) holds."""
    if isinstance(method, FeaturizerMethod):
        with torch.no_grad():
            source_features = method.features(source_h.float())
        return lambda h: with_features(method, h, source_features)
    source = source_h.float()
    basis = method.basis

    def edit(h: torch.Tensor) -> torch.Tensor:
        return h + ((source - h) @ basis.T) @ basis

    return edit


def steering_edit(
    method: LocalizationMethod, source_rules: torch.Tensor, target_rule: int, alpha: float
) -> Edit | None:
    """Move each row from its own rule (``source_rules``) to ``target_rule`` with strength
    ``alpha``; None for a method that is not steerable."""
    if not method.steerable:
        return None
    if isinstance(method, FeaturizerMethod):
        rows = torch.arange(len(source_rules))
        source_features = torch.as_tensor(method.rule_features)[source_rules]
        target_feature = method.rule_features[target_rule]

        def swap(features):
            features = features.clone()
            features[rows, source_features] = 0.0
            features[:, target_feature] = alpha
            return features

        return lambda h: with_features(method, h, swap)
    assert isinstance(method, SubspaceMethod)
    means, basis = method.rule_means, method.basis
    shift = ((means[target_rule][None, :] - means[source_rules]) @ basis.T) @ basis

    def edit(h: torch.Tensor) -> torch.Tensor:
        return h + alpha * shift

    return edit


def read_out(method: LocalizationMethod, h: torch.Tensor) -> np.ndarray | None:
    """The rule the method reads from each activation (None: the method has no read-out)."""
    with torch.no_grad():
        scores = method.rule_scores(h)
    return None if scores is None else scores.argmax(dim=1).numpy()
