"""The causally trained SAE's variants by name, and the layers each is trained at: what the
workflow needs to plan its jobs, without torch (the training is biosae.methods.sae_slot_causal)."""

from __future__ import annotations

METHOD = "sae_slot_causal"
RANDOM_TARGETS = "sae_slot_causal_random_targets"  # control: every target from a random rule
NO_LABELS = "sae_slot_causal_no_labels"  # control: lambda_align = 0
CONTROLS = (RANDOM_TARGETS, NO_LABELS)
VARIANTS = (METHOD, *CONTROLS)
# the methods that are controls, never ranked as the best method: the random subspace and these two
RANKING_CONTROLS = ("random", *CONTROLS)


def variant_layers(names, layers, control_layer: int) -> dict[str, list[int]]:
    """Which layers each causal-SAE variant of ``names`` is trained and tested at: the method at
    every layer of the profile, a control at ``control_layer`` alone, and nowhere where the
    profile lacks it (so that narrowing the profile of a finished run trains nothing)."""
    layers = list(layers)
    plan = {name: (layers if name == METHOD else [control_layer]) for name in VARIANTS if name in names}
    return {name: planned for name, planned in plan.items() if set(planned) <= set(layers)}
