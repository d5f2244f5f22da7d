"""The evaluation stage's figures, from a metrics dict and the training logs (PNG, one per view)."""

from __future__ import annotations

from pathlib import Path

from biosae import plots
from biosae.rules import RULES


def safe_name(cell: str) -> str:
    return cell.replace(":", "_").replace("/", "_")


def write_figures(metrics: dict, directory, lm_log_csv=None, sae_log_csv=None) -> dict[str, str]:
    """Write every figure into ``directory``; returns {caption: file name} for summary.md."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}

    def add(caption, name, draw):
        draw(directory / name)
        written[caption] = name

    cells = metrics["cells"]
    add("Slot accuracy per cell: SAE beside its baselines", "slot_accuracy_by_cell.png",
        lambda path: plots.plot_cells_bar(
            {"SAE": metrics["slot_accuracy"],
             "untrained LM + SAE": {c: b["untrained_lm_sae"] for c, b in metrics["baselines"].items()},
             "bag of words": {c: b["bag_of_words"] for c, b in metrics["baselines"].items()},
             "linear probe": {c: b["linear_probe"] for c, b in metrics["baselines"].items()}},
            path, "Slot / rule accuracy per evaluation cell", cells=cells,
            reference_lines={"chance": 1 / len(RULES), "seed OOD bar": 0.90}))
    for cell in cells:
        add(f"Confusion, {cell}", f"confusion_{safe_name(cell)}.png",
            lambda path, cell=cell: plots.plot_confusion(metrics["confusion"][cell], f"Asked rule x SAE slot: {cell}", path))
    for mode, by_cell in metrics.get("ablation", {}).items():
        for cell, result in by_cell.items():
            add(f"{mode} ablation, {cell}", f"ablation_{mode}_{safe_name(cell)}.png",
                lambda path, result=result, mode=mode, cell=cell: plots.plot_matrix_heatmap(
                    result["accuracy_drop"], f"{mode} ablation: normalized accuracy drop ({cell})", path,
                    row_label="ablated slot", col_label="rule", vmin=-0.2, vmax=1.0, cmap="magma"))
    for alpha, by_cell in metrics.get("swap", {}).items():
        for cell, result in by_cell.items():
            add(f"Swap {alpha}, {cell}", f"swap_{alpha.replace('=', '')}_{safe_name(cell)}.png",
                lambda path, result=result, alpha=alpha, cell=cell: plots.plot_matrix_heatmap(
                    result["success_rate"], f"Slot swap success, {alpha} ({cell})", path,
                    row_label="source rule", col_label="target slot", vmin=0.0, vmax=1.0))
    if lm_log_csv:
        add("LM training loss", "lm_training_loss.png",
            lambda path: plots.plot_training_curves(lm_log_csv, ["loss"], path, "LM training loss", x_column="step"))
    if sae_log_csv:
        add("SAE loss terms", "sae_losses.png",
            lambda path: plots.plot_training_curves(sae_log_csv, ["recon", "sparse", "align", "indep", "value", "total"],
                                                    path, "SAE loss terms per epoch", x_column="epoch"))
        add("SAE accuracies", "sae_accuracy.png",
            lambda path: plots.plot_training_curves(
                sae_log_csv, ["train_slot_accuracy", "validation_slot_accuracy", "validation_value_accuracy",
                              "validation_majority_value_accuracy"], path, "SAE accuracies per epoch", x_column="epoch"))
    return written
