"""Figures of the evaluation stage, as PNG files: confusion, ablation/swap heatmaps, curves, bars.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no global state, no display) and
written atomically: a killed job leaves no half-written PNG under a final name. Missing values
(None / NaN, e.g. a swap matrix's diagonal) are drawn grey and annotated "–".
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from biosae.errors import BiosaeError
from biosae.io import atomic_path
from biosae.rules import RULES

_MISSING_COLOUR = "#d9d9d9"


def save_figure(figure: Figure, path, layout: bool = True) -> None:
    """Lay ``figure`` out (unless its layout is fixed already) and write it as a PNG at ``path``
    atomically."""
    FigureCanvasAgg(figure)
    if layout:
        # Leave the top strip to a figure title (tight_layout lays out the axes only).
        figure.tight_layout(rect=(0, 0, 1, 0.97) if figure.get_suptitle() else None)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)


def _as_float_matrix(matrix) -> np.ndarray:
    return np.array([[np.nan if v is None else float(v) for v in row] for row in matrix], dtype=np.float64)


def _heatmap(axes, values: np.ndarray, labels: np.ndarray | None, row_names, col_names, vmin, vmax, cmap, fmt):
    """Colour by ``values``, write ``labels`` (same shape) in the cells unless None; returns the image."""
    palette = matplotlib.colormaps[cmap].with_extremes(bad=_MISSING_COLOUR)
    image = axes.imshow(np.ma.masked_invalid(values), cmap=palette, vmin=vmin, vmax=vmax, aspect="auto")
    axes.set_xticks(range(values.shape[1]), labels=col_names, rotation=35, ha="right")
    axes.set_yticks(range(values.shape[0]), labels=row_names)
    if labels is not None:
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                text = format(labels[i, j], fmt) if np.isfinite(labels[i, j]) else "–"
                colour = "black"
                if np.isfinite(values[i, j]):  # white text on dark cells, whatever the colour map
                    red, green, blue, _ = image.cmap(image.norm(values[i, j]))
                    colour = "white" if 0.299 * red + 0.587 * green + 0.114 * blue < 0.5 else "black"
                axes.text(j, i, text, ha="center", va="center", fontsize=8, color=colour)
    return image


def _rule_names(count: int) -> list[str]:
    """The rule names, then indices past the sixth (e.g. "6")."""
    return [RULES[i] if i < len(RULES) else str(i) for i in range(count)]


# Margins of a panel grid, in inches: tick labels (rule names, x ones rotated), axis labels and
# titles fit in them. A grid is laid out by these fixed margins rather than tight_layout, which
# draws the figure once more to measure its text (~2.6 s more for a 6-panel grid).
_GRID_LEFT, _GRID_RIGHT, _GRID_BOTTOM, _GRID_TOP = 1.25, 0.9, 1.15, 0.75
_GRID_WGAP, _GRID_HGAP = 1.45, 1.55


def _panel_grid(count: int, columns: int, panel_width: float, panel_height: float):
    """A Figure with ``count`` axes in rows of ``columns`` (unused trailing axes removed), laid out
    by fixed margins with room for one shared colour bar on the right."""
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    width = _GRID_LEFT + _GRID_RIGHT + columns * panel_width + (columns - 1) * _GRID_WGAP
    height = _GRID_BOTTOM + _GRID_TOP + rows * panel_height + (rows - 1) * _GRID_HGAP
    figure = Figure(figsize=(width, height))
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    figure.subplots_adjust(
        left=_GRID_LEFT / width,
        right=1 - _GRID_RIGHT / width,
        bottom=_GRID_BOTTOM / height,
        top=1 - _GRID_TOP / height,
        wspace=_GRID_WGAP / panel_width,
        hspace=_GRID_HGAP / panel_height,
    )
    for extra in axes[count:]:
        extra.remove()
    return figure, axes[:count]


def _shared_colorbar(figure: Figure, image) -> None:
    """One colour bar for every panel of a grid (they share one colour scale), in the right margin."""
    top, bottom = figure.subplotpars.top, figure.subplotpars.bottom
    width = figure.get_figwidth()
    bar = figure.add_axes((1 - (_GRID_RIGHT - 0.2) / width, bottom, 0.15 / width, top - bottom))
    figure.colorbar(image, cax=bar)


def plot_matrix_grid(
    matrices: dict[str, list],
    title: str,
    path,
    row_label: str,
    col_label: str,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "viridis",
    fmt: str = ".2f",
    columns: int = 3,
) -> None:
    """One annotated heatmap per entry of ``matrices`` (e.g. {evaluation cell: 6x6 ablation drop}),
    side by side on one colour scale, so that cells compare at a glance (and one file is drawn,
    not one per cell)."""
    if not matrices:
        raise ValueError("plot_matrix_grid: no matrix to plot")
    values = {name: _as_float_matrix(matrix) for name, matrix in matrices.items()}
    for name, matrix in values.items():
        if matrix.ndim != 2 or matrix.size == 0:
            raise ValueError(f"plot_matrix_grid: {name}: expected a non-empty 2-D matrix, got shape {matrix.shape}")
    first = next(iter(values.values()))
    if vmin is None or vmax is None:  # one colour scale for all panels, so that one bar reads them all
        finite = np.concatenate([m[np.isfinite(m)] for m in values.values()])
        vmin = (float(finite.min()) if finite.size else 0.0) if vmin is None else vmin
        vmax = (float(finite.max()) if finite.size else 1.0) if vmax is None else vmax
    figure, panels = _panel_grid(len(values), columns, 0.75 * first.shape[1], 0.6 * first.shape[0])
    for axes, (name, matrix) in zip(panels, values.items()):
        image = _heatmap(
            axes, matrix, matrix, _rule_names(matrix.shape[0]), _rule_names(matrix.shape[1]), vmin, vmax, cmap, fmt
        )
        axes.set_xlabel(col_label)
        axes.set_ylabel(row_label)
        axes.set_title(name)
    _shared_colorbar(figure, image)
    figure.suptitle(title)
    save_figure(figure, path, layout=False)


def plot_confusion_grid(matrices: dict[str, list], title: str, path, columns: int = 3) -> None:
    """One confusion matrix per entry of ``matrices`` ({evaluation cell: 6x6 counts}, row = asked
    rule, col = argmax slot), coloured by the fraction of each row, annotated with the counts."""
    if not matrices:
        raise ValueError("plot_confusion_grid: no matrix to plot")
    figure, panels = _panel_grid(len(matrices), columns, 4.8, 3.6)
    for axes, (name, matrix) in zip(panels, matrices.items()):
        counts = _as_float_matrix(matrix)
        totals = counts.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            rates = np.where(totals > 0, counts / totals, np.nan)
        image = _heatmap(
            axes,
            rates,
            counts,
            _rule_names(counts.shape[0]),
            [f"slot {i}\n{rule}" for i, rule in enumerate(_rule_names(counts.shape[1]))],
            0.0,
            1.0,
            "Blues",
            ".0f",
        )
        axes.set_xlabel("argmax SAE slot")
        axes.set_ylabel("asked rule")
        axes.set_title(name)
    _shared_colorbar(figure, image)
    figure.suptitle(title)
    save_figure(figure, path, layout=False)


def plot_training_curves(csv_path, columns: Sequence[str], path, title: str, x_column: str | None = "step") -> None:
    """Curves of the given columns of a CSV training log against ``x_column`` (or the row number
    when the log has no such column). Columns the log lacks are skipped; none present is an error."""
    import pandas as pd

    try:
        log = pd.read_csv(csv_path)
    except FileNotFoundError:
        raise BiosaeError(f"{csv_path}: file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise BiosaeError(f"{csv_path}: not a readable CSV log ({str(error).splitlines()[0]})") from None
    present = [column for column in columns if column in log.columns]
    if not present:
        raise BiosaeError(f"{csv_path}: none of the columns {list(columns)} is in the log (it has {list(log.columns)})")
    x = log[x_column] if x_column in log.columns else log.index
    figure = Figure(figsize=(7.0, 4.2))
    axes = figure.add_subplot()
    for column in present:
        series = pd.to_numeric(log[column], errors="coerce")
        keep = series.notna().to_numpy()
        axes.plot(np.asarray(x)[keep], series.to_numpy()[keep], label=column, marker="." if keep.sum() < 30 else None)
    axes.set_xlabel(x_column if x_column in log.columns else "row")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    save_figure(figure, path)


def plot_cells_bar(
    values_by_series: dict[str, dict],
    path,
    title: str,
    cells: Sequence[str] | None = None,
    ylabel: str = "slot accuracy",
    reference_lines: dict[str, float] | None = None,
) -> None:
    """Grouped bars: one group per cell, one bar per series (e.g. {"SAE": {cell: acc},
    "untrained LM": {...}, "bag of words": {...}}). A missing value leaves its bar out.
    ``reference_lines`` draws labelled horizontal lines (e.g. {"seed OOD bar": 0.90})."""
    if cells is None:
        cells = list(dict.fromkeys(cell for series in values_by_series.values() for cell in series))
    if not cells or not values_by_series:
        raise ValueError("plot_cells_bar: nothing to plot")
    figure = Figure(figsize=(max(6.0, 1.3 * len(cells) + 2), 4.5))
    axes = figure.add_subplot()
    width = 0.8 / len(values_by_series)
    positions = np.arange(len(cells))
    for i, (name, series) in enumerate(values_by_series.items()):
        heights = [np.nan if series.get(cell) is None else float(series[cell]) for cell in cells]
        axes.bar(positions + (i - (len(values_by_series) - 1) / 2) * width, heights, width, label=name)
    for label, value in (reference_lines or {}).items():
        axes.axhline(value, color="black", linestyle="--", linewidth=0.8)
        axes.annotate(label, (positions[-1] + 0.45, value), ha="right", va="bottom", fontsize=8)
    axes.set_xticks(positions, labels=list(cells), rotation=25, ha="right")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend(fontsize=8)
    save_figure(figure, path)
