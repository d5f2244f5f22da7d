"""The evaluation stage's figures, from a metrics dict and the training logs (PNG, one per test,
with a panel per evaluation cell)."""

from __future__ import annotations

from pathlib import Path

from biosae.evaluation import plots
from biosae.rules import RULES


def write_figures(metrics: dict, directory, lm_log_csv=None, sae_log_csv=None) -> dict[str, str]:
    """Write every figure into ``directory``; returns {caption: file name} for summary.md."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}

    def add(caption, name, draw):
        draw(directory / name)
        written[caption] = name

    cells = metrics["cells"]
    add(
        "Slot accuracy per cell: SAE beside its baselines",
        "slot_accuracy_by_cell.png",
        lambda path: plots.plot_cells_bar(
            {
                "SAE": metrics["slot_accuracy"],
                "untrained LM + SAE": {c: b["untrained_lm_sae"] for c, b in metrics["baselines"].items()},
                "bag of words": {c: b["bag_of_words"] for c, b in metrics["baselines"].items()},
                "linear probe": {c: b["linear_probe"] for c, b in metrics["baselines"].items()},
            },
            path,
            "Slot / rule accuracy per evaluation cell",
            cells=cells,
            reference_lines={"chance": 1 / len(RULES), "seed OOD bar": 0.90},
        ),
    )
    methods = metrics.get("methods") or {}
    for test, label, key in (
        ("interchange", "interchange accuracy (IIA)", "iia"),
        ("ablation", "ablation selectivity", "selectivity"),
    ):
        if methods:
            add(
                f"{label[0].upper() + label[1:]} per method and cell",
                f"methods_{test}.png",
                lambda path, test=test, label=label, key=key: plots.plot_cells_bar(
                    {
                        name: {cell: (result.get(test, {}).get(cell) or {}).get(key) for cell in cells}
                        for name, result in methods.items()
                    },
                    path,
                    f"{label[0].upper() + label[1:]} per method, layer {metrics.get('layer')}",
                    cells=cells,
                    ylabel=label,
                ),
            )
    # One file per test, one panel per evaluation cell.
    add(
        "Confusion of asked rule and argmax slot, per cell",
        "confusion.png",
        lambda path: plots.plot_confusion_grid(
            {cell: metrics["confusion"][cell] for cell in cells}, "Asked rule x SAE slot", path
        ),
    )
    for mode, by_cell in metrics.get("ablation", {}).items():
        add(
            f"{mode} ablation: normalized accuracy drop, per cell",
            f"ablation_{mode}.png",
            lambda path, by_cell=by_cell, mode=mode: plots.plot_matrix_grid(
                {cell: result["accuracy_drop"] for cell, result in by_cell.items()},
                f"{mode} ablation: normalized accuracy drop",
                path,
                row_label="ablated slot",
                col_label="rule",
                vmin=-0.2,
                vmax=1.0,
                cmap="magma",
            ),
        )
    for alpha, by_cell in metrics.get("swap", {}).items():
        add(
            f"Swap {alpha}: success, per cell",
            f"swap_{alpha.replace('=', '')}.png",
            lambda path, by_cell=by_cell, alpha=alpha: plots.plot_matrix_grid(
                {cell: result["success_rate"] for cell, result in by_cell.items()},
                f"Slot swap success, {alpha}",
                path,
                row_label="source rule",
                col_label="target slot",
                vmin=0.0,
                vmax=1.0,
            ),
        )
    if lm_log_csv:
        add(
            "LM training loss",
            "lm_training_loss.png",
            lambda path: plots.plot_training_curves(lm_log_csv, ["loss"], path, "LM training loss", x_column="step"),
        )
    if sae_log_csv:
        add(
            "SAE loss terms",
            "sae_losses.png",
            lambda path: plots.plot_training_curves(
                sae_log_csv,
                ["recon", "sparse", "align", "indep", "value", "total"],
                path,
                "SAE loss terms per epoch",
                x_column="epoch",
            ),
        )
        add(
            "SAE accuracies",
            "sae_accuracy.png",
            lambda path: plots.plot_training_curves(
                sae_log_csv,
                [
                    "train_slot_accuracy",
                    "validation_slot_accuracy",
                    "validation_value_accuracy",
                    "validation_majority_value_accuracy",
                ],
                path,
                "SAE accuracies per epoch",
                x_column="epoch",
            ),
        )
    return written
