"""Sweep aggregate: every headline metric per (metric, cell, layer), mean / std / n across seeds.

Input: one ``metrics.json`` dict per (seed, layer) run of a sweep (``SweepRun``). Output:
``summary.csv`` (long format, one row per metric x cell x layer), ``summary.md`` (where the
separation appears, then every metric against layer) and figures of the headline metrics
against layer, error bars = standard deviation across seeds.

Conventions:
- ``layer`` is the configured layer (``activations.layer`` / ``sweep.layers``): ``-1`` stays
  ``-1`` in every table. ``blocks`` is the hook point it stands for, the residual stream after
  that many blocks (``-1`` -> ``n_layer``); sorting and plot positions use ``blocks``, labels
  show both (``2 (-1)``).
- ``std`` is the sample standard deviation (ddof = 1), the spread one expects between seeds;
  with fewer than two values it is ``None`` (an empty CSV field, "–" in markdown), never 0.
- A metric a run did not produce, or produced as ``None`` (a rate over zero rows), is left out
  of that group: ``n`` counts the values present, never the runs asked for.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from biosae.evaluation.metrics import ABLATION_MODES, MARGIN_OVER_UNTRAINED_LM, SEED_OOD_SLOT_ACCURACY
from biosae.evaluation.plots import save_figure
from biosae.evaluation.report import format_number, markdown_table
from biosae.io import write_text
from biosae.methods.causal_variants import RANKING_CONTROLS

SUMMARY_COLUMNS = ("metric", "cell", "layer", "mean", "std", "n", "blocks")

# Where the separation "appears": the first layer (fewest blocks) whose mean across seeds on the
# hardest standard cell passes the bar.
EMERGENCE_CELL = "ood_both"


@dataclass(frozen=True)
class EmergenceCriterion:
    metric: str
    description: str
    threshold: float
    comparison: str  # ">" or ">="
    source: str


# Slot accuracy: the seed's OOD bar; the margin: this project's bar; selectivity has no published
# bar, so half of perfect (diagonal drop 1, off-diagonal drop 0).
EMERGENCE_CRITERIA = (
    EmergenceCriterion("slot_accuracy", "SAE slot accuracy", SEED_OOD_SLOT_ACCURACY, ">", "seed's OOD bar"),
    EmergenceCriterion(
        "margin_over_untrained_lm",
        "Slot accuracy margin over the untrained LM",
        MARGIN_OVER_UNTRAINED_LM,
        ">=",
        "this project's bar",
    ),
    EmergenceCriterion(
        "direction_ablation_selectivity", "Direction-ablation selectivity", 0.5, ">", "half of perfect selectivity"
    ),
)

METRIC_DESCRIPTIONS = {
    "slot_accuracy": "SAE slot accuracy (argmax slot = asked rule)",
    "untrained_lm_slot_accuracy": "The same SAE pipeline on the untrained (random-init) LM",
    "margin_over_untrained_lm": "SAE slot accuracy − untrained-LM baseline",
    "margin_over_bag_of_words": "SAE slot accuracy − bag-of-words baseline",
    "lm_first_token_accuracy": "The LM's first-answer-token accuracy",
    "slot_ablation_selectivity": "Slot ablation: mean diagonal − mean off-diagonal accuracy drop",
    "direction_ablation_selectivity": "Direction ablation: mean diagonal − mean off-diagonal accuracy drop",
    "random_direction_ablation_selectivity": "Random-direction control of the direction ablation (selectivity)",
    "swap_success": "Slot swap: mean off-diagonal success rate",
    "iia": "Interchange intervention accuracy (MIB's IIA; RAVEL's Cause) of the method named after the metric",
    "isolate": "RAVEL's Isolate of the method named after the metric: on same-rule pairs, the share where the "
    "base's own answer stays",
    "disentanglement": "RAVEL's Disentanglement D of the method named after the metric: mean of Cause (IIA) and Isolate",
    "ablation_selectivity": "Ablation selectivity of the method named after the metric (its own rule edits)",
    "steering": "Steering success of the method named after the metric, at the alpha picked on the train cell",
    "faithfulness": "Share of other-attribute answers whose attribute the method's read-out names",
}
# Per-method metrics are named "<test>:<method>" (e.g. "iia:das"), described by their test.
METHOD_TESTS = (
    ("iia", ("interchange", "iia")),
    ("isolate", ("isolate", "isolate")),
    ("disentanglement", ("disentanglement", "d")),
    ("ablation_selectivity", ("ablation", "selectivity")),
    ("steering", ("steering", "mean_off_diagonal")),
    ("faithfulness", ("faithfulness", "rate")),
)


@dataclass(frozen=True)
class SweepRun:
    """One (seed, layer) combination's evaluation results."""

    seed: int
    layer: int
    metrics: dict


def resolve_layer(layer: int, n_layer: int | None) -> int | None:
    """Blocks before the hook point: ``-1`` -> ``n_layer`` (None when the block count is unknown)."""
    if layer == -1:
        return n_layer
    return layer


def layer_label(layer: int, n_layer: int | None) -> str:
    """``"2"``, or ``"4 (-1)"`` for the last block, so a reader sees both what ran and what it means."""
    if layer == -1:
        return f"{n_layer} (-1)" if n_layer is not None else "-1 (last block)"
    return str(layer)


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


_ABSENT = object()  # a section or key the run did not produce, unlike a measured null


def _lookup(mapping, *keys):
    """``mapping[k0][k1]...``, or ``_ABSENT`` where any level is missing."""
    for key in keys:
        if not isinstance(mapping, dict) or key not in mapping:
            return _ABSENT
        mapping = mapping[key]
    return mapping


def _cells(metrics: dict) -> list[str]:
    if metrics.get("cells"):
        return list(metrics["cells"])
    return list(metrics.get("slot_accuracy") or {})


def headline_values(metrics: dict) -> dict[tuple[str, str], float | None]:
    """{(metric, cell): value} of one run's headline numbers; swap metrics are named per alpha
    (``swap_success_alpha=1.0``). What the run did not produce gives no key; a null (or NaN)
    gives None, so that the group still shows the metric, with n = 0."""
    paths: list[tuple[str, Callable[[str], tuple]]] = [
        ("slot_accuracy", lambda cell: ("slot_accuracy", cell)),
        ("untrained_lm_slot_accuracy", lambda cell: ("baselines", cell, "untrained_lm_sae")),
        ("margin_over_untrained_lm", lambda cell: ("margins", cell, "over_untrained_lm")),
        ("margin_over_bag_of_words", lambda cell: ("margins", cell, "over_bag_of_words")),
        ("lm_first_token_accuracy", lambda cell: ("lm_qa_accuracy", cell, "first_token")),
    ]
    for mode in ABLATION_MODES:
        paths.append((f"{mode}_ablation_selectivity", lambda cell, mode=mode: ("ablation", mode, cell, "selectivity")))
    for alpha in metrics.get("swap") or {}:
        paths.append((f"swap_success_{alpha}", lambda cell, alpha=alpha: ("swap", alpha, cell, "mean_off_diagonal")))
    for method in metrics.get("methods") or {}:
        for test, (section, key) in METHOD_TESTS:
            paths.append(
                (
                    f"{test}:{method}",
                    lambda cell, method=method, section=section, key=key: ("methods", method, section, cell, key),
                )
            )
    values: dict[tuple[str, str], float | None] = {}
    for cell in _cells(metrics):
        for metric, path in paths:
            value = _lookup(metrics, *path(cell))
            if value is not _ABSENT:
                values[(metric, cell)] = float(value) if _present(value) else None
    return values


def metric_base(metric: str) -> str:
    """The entry of METRIC_DESCRIPTIONS a metric name belongs to (per alpha, per method)."""
    return "swap_success" if metric.startswith("swap_success") else metric.split(":")[0]


def _metric_order(metric: str) -> tuple:
    names = list(METRIC_DESCRIPTIONS)
    base = metric_base(metric)
    return (names.index(base) if base in names else len(names), metric)


def per_run_values(runs: Sequence[SweepRun]) -> list[dict]:
    """Long table of every run's headline numbers: {metric, cell, seed, layer, value}."""
    rows = []
    for run in runs:
        for (metric, cell), value in headline_values(run.metrics).items():
            rows.append({"metric": metric, "cell": cell, "seed": run.seed, "layer": run.layer, "value": value})
    return rows


def summarize(runs: Sequence[SweepRun], n_layer: int | None = None) -> list[dict]:
    """One row per (metric, cell, layer): mean, sample std and n of the values present across
    seeds, plus ``blocks`` (the layer with -1 resolved). Sorted by metric, cell (first-seen
    order), then depth."""
    cell_order: dict[str, int] = {}
    groups: dict[tuple[str, str, int], list[float]] = {}
    for run in runs:
        for cell in _cells(run.metrics):
            cell_order.setdefault(cell, len(cell_order))
        for (metric, cell), value in headline_values(run.metrics).items():
            cell_order.setdefault(cell, len(cell_order))
            values = groups.setdefault((metric, cell, run.layer), [])
            if _present(value):
                values.append(float(value))
    rows = []
    for (metric, cell, layer), values in groups.items():
        n = len(values)
        rows.append(
            {
                "metric": metric,
                "cell": cell,
                "layer": layer,
                "mean": float(np.mean(values)) if n else None,
                "std": float(np.std(values, ddof=1)) if n >= 2 else None,
                "n": n,
                "blocks": resolve_layer(layer, n_layer),
            }
        )
    rows.sort(key=lambda row: (_metric_order(row["metric"]), cell_order[row["cell"]], _depth_key(row)))
    return rows


def _depth_key(row: dict) -> tuple:
    blocks = row["blocks"]
    # An unknown block count puts -1 after every explicit layer: it is the last block.
    return (math.inf if blocks is None else blocks, row["layer"])


def write_csv(path, rows: Iterable[dict], columns: Sequence[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row.get(key) is None else row[key] for key in columns})
    write_text(path, buffer.getvalue())


def _curve(rows: Sequence[dict], metric: str, cell: str) -> list[dict]:
    return [row for row in rows if row["metric"] == metric and row["cell"] == cell]


def _passes(value: float, criterion: EmergenceCriterion) -> bool:
    return value > criterion.threshold if criterion.comparison == ">" else value >= criterion.threshold - 1e-9


def emergence(rows: Sequence[dict], criterion: EmergenceCriterion, cell: str = EMERGENCE_CELL) -> dict | None:
    """Where ``criterion.metric`` on ``cell`` first passes its bar, from the summary rows:
    {"first": row or None, "lowest_swept": bool, "best": row, "curve": [rows by depth]};
    None when no layer has a value."""
    curve = [row for row in _curve(rows, criterion.metric, cell) if row["mean"] is not None]
    if not curve:
        return None
    curve.sort(key=_depth_key)
    first = next((row for row in curve if _passes(row["mean"], criterion)), None)
    return {
        "first": first,
        "lowest_swept": first is curve[0],
        "best": max(curve, key=lambda row: row["mean"]),
        "curve": curve,
    }


def _mean_std(row: dict | None) -> str:
    if row is None:
        return "–"
    if row["mean"] is None:
        return "– (n=0)"
    spread = "" if row["std"] is None else f" ± {row['std']:.3f}"
    return f"{row['mean']:.3f}{spread} (n={row['n']})"


def _emergence_line(criterion: EmergenceCriterion, found: dict | None, n_layer: int | None, cell: str) -> str:
    name = (
        f"{criterion.description} on {cell} (mean over seeds), bar {criterion.comparison} "
        f"{criterion.threshold:g} ({criterion.source})"
    )
    if found is None:
        return f"- {name}: no value at any layer (missing or null in every run)."
    curve = ", ".join(f"{layer_label(row['layer'], n_layer)}: {format_number(row['mean'])}" for row in found["curve"])
    first = found["first"]
    if first is None:
        best = found["best"]
        return (
            f"- {name}: not passed at any layer swept (highest {format_number(best['mean'])} at layer "
            f"{layer_label(best['layer'], n_layer)}). By layer: {curve}."
        )
    if len(found["curve"]) == 1:
        qualifier = " (the only layer swept: add layers to sweep.layers to see where it appears)"
    elif found["lowest_swept"]:
        qualifier = " (already at the lowest layer swept: sweep lower layers to see where it appears)"
    else:
        qualifier = ""
    return (
        f"- {name}: first passed at layer {layer_label(first['layer'], n_layer)}{qualifier}, "
        f"{_mean_std(first)}. By layer: {curve}."
    )


def render_summary(
    rows: Sequence[dict], runs: Sequence[SweepRun], n_layer: int | None, figures: dict[str, str] | None = None
) -> str:
    """summary.md: the runs, where the separation appears, every metric per cell against layer."""
    seeds = sorted({run.seed for run in runs})
    layers = sorted(
        {run.layer for run in runs} | {row["layer"] for row in rows},
        key=lambda layer: _depth_key({"blocks": resolve_layer(layer, n_layer), "layer": layer}),
    )
    labels = {layer: layer_label(layer, n_layer) for layer in layers}
    seeds_by_layer = {layer: sorted(run.seed for run in runs if run.layer == layer) for layer in layers}
    cells = list(dict.fromkeys(row["cell"] for row in rows))
    lines = [
        "# biosae sweep summary",
        "",
        f"{len(runs)} runs: seeds {', '.join(map(str, seeds))} × layers {', '.join(labels.values())}"
        + (f" of a {n_layer}-block model" if n_layer is not None else "")
        + ". "
        "Layer L = the residual stream after L blocks; -1 = after the last block, before the final layer norm. "
        "Each entry: mean ± sample standard deviation across seeds (n = seeds with a value).",
    ]
    uneven = {layer: s for layer, s in seeds_by_layer.items() if s != seeds}
    if uneven:
        lines += [
            "",
            "Seeds per layer differ: "
            + "; ".join(f"layer {labels[layer]}: seeds {', '.join(map(str, s))}" for layer, s in uneven.items())
            + " (the default run's (seed, layer) is always included).",
        ]
    lines += [
        "",
        "## Where the separation appears",
        "",
        "Published anchor: relation binding emerged in the middle layers of GPT-2 (100% at layer 6 against "
        "24% at layer 0). In this sweep:",
        "",
        *[
            _emergence_line(criterion, emergence(rows, criterion), n_layer, EMERGENCE_CELL)
            for criterion in EMERGENCE_CRITERIA
        ],
    ]
    metrics = list(dict.fromkeys(row["metric"] for row in rows))
    by_key = {(row["metric"], row["cell"], row["layer"]): row for row in rows}
    lines += method_winner_lines(rows, layers, labels, cells)
    for metric in metrics:
        base = metric_base(metric)
        table_rows = [
            [c, *[_mean_std(by_key.get((metric, c, layer))) for layer in layers]]
            for c in cells
            if any((metric, c, layer) in by_key for layer in layers)
        ]
        lines += [
            "",
            f"## {metric}",
            "",
            METRIC_DESCRIPTIONS.get(base, metric) + ".",
            "",
            *markdown_table(["cell", *(f"layer {labels[layer]}" for layer in layers)], table_rows),
        ]
    if figures:
        lines += ["", "## Figures", "", *[f"![{caption}]({path})" for caption, path in figures.items()]]
    return "\n".join(lines) + "\n"


def method_rows(rows: Sequence[dict], test: str, cells: Sequence[str]) -> list[dict]:
    """Per (method, layer): the mean over ``cells`` of the seed-mean of ``<test>:<method>``, as
    summary rows whose "cell" is the method (so they plot like cells)."""
    grouped: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        if row["metric"].startswith(f"{test}:") and row["cell"] in cells and row["mean"] is not None:
            grouped.setdefault((row["metric"].split(":", 1)[1], row["layer"]), []).append(row)
    return [
        {
            "metric": f"{test}_held_out",
            "cell": method,
            "layer": layer,
            "blocks": group[0]["blocks"],
            "mean": float(np.mean([r["mean"] for r in group])),
            "std": None,
            "n": min(r["n"] for r in group),
        }
        for (method, layer), group in grouped.items()
    ]


def method_winner_lines(rows: Sequence[dict], layers: Sequence[int], labels: dict, cells: Sequence[str]) -> list[str]:
    """Per layer, which method localizes the rule best (mean over the held-out cells, the controls excluded)."""
    held_out = [cell for cell in cells if cell != "train"]
    lines = []
    for test, label in (
        ("iia", "interchange accuracy (IIA)"),
        ("disentanglement", "RAVEL disentanglement D"),
        ("ablation_selectivity", "ablation selectivity"),
    ):
        by_method = method_rows(rows, test, held_out)
        methods = list(dict.fromkeys(row["cell"] for row in by_method))
        if not methods:
            continue
        value = {(row["cell"], row["layer"]): row["mean"] for row in by_method}
        table = []
        for layer in layers:
            ranked = sorted(
                ((value[(m, layer)], m) for m in methods if m not in RANKING_CONTROLS and (m, layer) in value),
                reverse=True,
            )
            if not ranked:
                continue
            best, name = ranked[0]
            sae = value.get(("sae_slot", layer))
            # against the best OTHER method: positive when the SAE leads, by how much
            others = [score for score, method in ranked if method != "sae_slot"]
            gap = "–" if sae is None or not others else f"{sae - others[0]:+.3f}"
            table.append(
                [f"layer {labels[layer]}", *[format_number(value.get((m, layer))) for m in methods], f"**{name}**", gap]
            )
        lines += [
            "",
            f"## Which method localizes the rule, per layer: {label}",
            "",
            f"Mean over the held-out cells ({', '.join(held_out)}) of each method's {label} (seed means). "
            "The winner excludes the controls (random and the causal SAE's two); the last column is the "
            "supervised SAE's lead over the best other method (negative: it trails).",
            "",
            *markdown_table(["layer", *methods, "best", "sae_slot − best other"], table),
        ]
    return lines


# ---------------------------------------------------------------------------------------------
# figures


def plot_metric_by_layer(
    rows: Sequence[dict],
    metric: str,
    path,
    title: str,
    ylabel: str,
    n_layer: int | None,
    reference_lines: dict[str, float] | None = None,
) -> None:
    """One line per cell of ``metric``'s mean against depth (``row["blocks"]``, resolved), error
    bars = std across seeds (none where n < 2); cells are nudged sideways a little so their bars
    stay apart. The x axis shows every layer of ``rows``; a metric without any value still gets
    its figure, saying so, so that the set of figures is the same for every sweep."""
    ticks = {float(row["blocks"]): layer_label(row["layer"], n_layer) for row in rows}
    selected = [row for row in rows if row["metric"] == metric and row["mean"] is not None]
    cells = list(dict.fromkeys(row["cell"] for row in selected))
    figure = Figure(figsize=(7.5, 4.6))
    axes = figure.add_subplot()
    low, high = min(ticks, default=0.0), max(ticks, default=0.0)
    step = 0.015 * max(high - low, 1.0)
    for i, cell in enumerate(cells):
        curve = sorted((row for row in selected if row["cell"] == cell), key=_depth_key)
        nudge = (i - (len(cells) - 1) / 2) * step
        x = np.array([float(row["blocks"]) for row in curve], dtype=np.float64) + nudge
        mean = np.array([row["mean"] for row in curve], dtype=np.float64)
        spread = np.array([0.0 if row["std"] is None else row["std"] for row in curve], dtype=np.float64)
        axes.errorbar(x, mean, yerr=spread, marker="o", capsize=3, label=cell)
    if not cells:
        axes.text(
            0.5,
            0.5,
            f"no values: {metric} is missing or null in every run\n"
            "(null: a rate over zero prompts, e.g. an LM that never answers right)",
            transform=axes.transAxes,
            ha="center",
            va="center",
            fontsize=10,
            color="grey",
        )
    for label, value in (reference_lines or {}).items():
        axes.axhline(value, color="black", linestyle="--", linewidth=0.8)
        axes.annotate(label, (high + 0.25, value), ha="right", va="bottom", fontsize=8)
    axes.set_xlim(low - 0.3, high + 0.3)
    axes.set_xticks(sorted(ticks), labels=[ticks[x] for x in sorted(ticks)])
    axes.set_xlabel("layer (residual stream after this many blocks)")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if cells:
        axes.legend(fontsize=8)
    save_figure(figure, path)


def write_figures(rows: Sequence[dict], directory, n_layer: int | None) -> dict[str, str]:
    """The headline metrics against layer as PNGs in ``directory``: slot accuracy, its margin over
    the untrained LM, direction-ablation selectivity and swap success per alpha (each always
    written). Returns {caption: file name}."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if any(row["blocks"] is None for row in rows):  # unknown block count: draw -1 one past the deepest
        deepest = max((row["layer"] for row in rows if row["layer"] >= 0), default=0)
        rows = [{**row, "blocks": deepest + 1 if row["blocks"] is None else row["blocks"]} for row in rows]
    views = [
        (
            "slot_accuracy",
            "SAE slot accuracy per cell against layer",
            "slot accuracy",
            {"chance": 1 / 6, "seed OOD bar": SEED_OOD_SLOT_ACCURACY},
        ),
        (
            "margin_over_untrained_lm",
            "Slot accuracy margin over the untrained LM against layer",
            "SAE − untrained LM",
            {"margin bar": MARGIN_OVER_UNTRAINED_LM, "no margin": 0.0},
        ),
        (
            "direction_ablation_selectivity",
            "Direction-ablation selectivity against layer",
            "selectivity",
            {"none": 0.0},
        ),
    ]
    swaps = dict.fromkeys(row["metric"] for row in rows if row["metric"].startswith("swap_success"))
    views += [
        (
            metric,
            f"Slot swap success ({metric.removeprefix('swap_success_')}) against layer",
            "swap success (mean off-diagonal)",
            None,
        )
        for metric in swaps
    ]
    cells = list(dict.fromkeys(row["cell"] for row in rows))
    held_out = [cell for cell in cells if cell != "train"]
    for test, label in (
        ("iia", "interchange accuracy (IIA)"),
        ("disentanglement", "RAVEL disentanglement D"),
        ("ablation_selectivity", "ablation selectivity"),
    ):
        extra = method_rows(rows, test, held_out)
        if extra:
            rows = [*rows, *extra]
            views.append(
                (
                    f"{test}_held_out",
                    f"Each method's {label}, mean over held-out cells, against layer",
                    label,
                    {"none": 0.0},
                )
            )
    written = {}
    for metric, title, ylabel, references in views:
        name = f"{metric.replace('=', '')}_by_layer.png"
        plot_metric_by_layer(
            rows,
            metric,
            directory / name,
            title + " (error bars: std across seeds)",
            ylabel,
            n_layer,
            reference_lines=references,
        )
        written[title] = name
    return written
