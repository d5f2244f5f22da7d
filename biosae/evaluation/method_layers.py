"""Every localization method but the supervised SAE, tested at each layer of one LM, as the
``evaluate_methods`` job runs it.

What the tests need beside a layer's activations doesn't depend on the layer: the LM is loaded
once, and each cell's causal sample, prompt-prefix cache and interchange pairs are built once for
every layer (:meth:`LayerMethodTests.build_shared`); each layer's activations and trained methods
are then read in turn. The bench times the same object, layer by layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from biosae import layout
from biosae.evaluation.evaluate import answered_rules, ordered_cells
from biosae.evaluation.method_tests import cell_samples, evaluate_methods, load_trained_methods
from biosae.lm.activations import load_activation_tables


@dataclass
class LayerMethodTests:
    model: object
    tokenizer: object
    index_path: Path  # the LM's activation index; each layer's activations lie beside it
    names: list[str]  # methods.names
    max_prompts_per_cell: int
    swap_alphas: list[float]
    seed: int
    # layer -> that layer's trained DAS / TopK SAE directory; None: the method is not compared
    das_dir: Callable[[int], Path] | None = None
    topk_sae_dir: Callable[[int], Path] | None = None
    samples: dict | None = None
    answered: np.ndarray | None = None

    def load_layer(self, layer: int):
        """(activations, index) of ``layer``."""
        return load_activation_tables((layout.activation_file_beside(self.index_path, layer), self.index_path))

    def build_shared(self, index) -> None:
        """Each cell's causal sample, prompt cache and pairs, and the LM's answered rule per row (once)."""
        if self.samples is None:
            cells = ordered_cells(index)
            self.samples = cell_samples(self.model, self.tokenizer, index, cells, self.max_prompts_per_cell, self.seed)
            self.answered = answered_rules(index)

    def test_layer(self, layer: int, activations, index, progress=None) -> dict:
        """The tests of every method at ``layer`` (the JSON file that evaluate joins into metrics.json)."""
        self.build_shared(index)
        trained, fit = load_trained_methods(
            self.das_dir(layer) if self.das_dir else None,
            self.topk_sae_dir(layer) if self.topk_sae_dir else None,
        )
        return evaluate_methods(
            self.samples,
            layer,
            activations,
            index,
            self.names,
            alphas=self.swap_alphas,
            seed=self.seed,
            answered_rule=self.answered,
            fit=fit,
            progress=progress,
            **trained,
        )
