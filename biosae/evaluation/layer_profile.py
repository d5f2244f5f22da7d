"""The layer profile that opens the default run's summary.md: every hook point of the default
seed, what the SAE reads there and how causal each method is there.

The hook point decides the causal numbers (3 seeds: slot-ablation selectivity 0.79 at layer 1,
0.13 at the last block), while slot accuracy is about equal everywhere; so a reader sees the whole
profile first, then the seed's reading at ``activations.layer``.
"""

from __future__ import annotations

from biosae.evaluation.markdown import markdown_table
from biosae.evaluation.method_summary import held_out_cells, method_scores
from biosae.evaluation.metrics import N_RULES
from biosae.evaluation.value_readout import READOUTS
from biosae.methods.causal_variants import RANKING_CONTROLS
from biosae.rules import HARD_CELLS


def mean_of_present(values):
    """Mean of the values that were measured (not None); None when none was."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _number(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def profile_row(metrics: dict) -> dict:
    """One layer's numbers, each a mean over the held-out cells (faithfulness: over the hard cells)."""
    cells = list(metrics.get("cells") or [])
    held_out = held_out_cells(cells)
    sae = (metrics.get("methods") or {}).get("sae_slot") or {}
    hard = [cell for cell in cells if cell in HARD_CELLS] or held_out
    return {
        "layer": metrics.get("layer"),
        "slot_accuracy": mean_of_present((metrics.get("slot_accuracy") or {}).get(c) for c in held_out),
        "margin_over_untrained_lm": mean_of_present(
            ((metrics.get("margins") or {}).get(c) or {}).get("over_untrained_lm") for c in held_out
        ),
        "faithfulness": mean_of_present(((sae.get("faithfulness") or {}).get(c) or {}).get("rate") for c in hard),
        "methods": method_scores(metrics, held_out),
        "value_readouts": metrics.get("value_readouts") or {},
    }


def layer_key(layer: int, n_layer: int | None) -> float:
    return float(n_layer if layer == -1 and n_layer is not None else (1e9 if layer == -1 else layer))


def profile_rows(metrics_by_layer: list[dict], n_layer: int | None) -> list[dict]:
    """profile_row of each layer's metrics, in the order of the layers (-1 last)."""
    return sorted((profile_row(m) for m in metrics_by_layer), key=lambda r: layer_key(r["layer"], n_layer))


def layer_label(layer: int, n_layer: int | None, default_layer: int) -> str:
    """A layer as the profile names it: -1 with its block count, and the seed's hook marked."""
    text = f"{n_layer} (-1)" if layer == -1 and n_layer is not None else str(layer)
    return text + (" ← seed's hook" if layer == default_layer else "")


def peak_sentence(rows: list[dict], n_layer: int | None, default_layer: int) -> str | None:
    """Where the SAE's causal effect (ablation selectivity) peaks among ``rows``, and the SAE against
    the best other method there by each score; None when no layer measured the SAE's selectivity."""
    sae_rows = [r for r in rows if (r["methods"].get("sae_slot") or {}).get("selectivity") is not None]
    if not sae_rows:
        return None
    peak = max(sae_rows, key=lambda r: r["methods"]["sae_slot"]["selectivity"])
    sae = peak["methods"]["sae_slot"]
    others = {m: s for m, s in peak["methods"].items() if m not in ("sae_slot", *RANKING_CONTROLS)}
    line = (
        f"The SAE's causal effect peaks at layer {layer_label(peak['layer'], n_layer, default_layer)}: "
        f"ablation selectivity {_number(sae['selectivity'])}, IIA {_number(sae['iia'])}."
    )
    for score, what in (("selectivity", "ablation selectivity"), ("iia", "IIA")):
        ranked = [(s[score], m) for m, s in others.items() if s[score] is not None]
        if ranked and sae[score] is not None:
            value, name = max(ranked)
            relation = "ahead of" if sae[score] >= value else "behind"
            line += (
                f" By {what} there the best other method is {name} ({_number(value)}): the SAE is "
                f"{abs(sae[score] - value):.3f} {relation} it."
            )
    return line


def profile_section(metrics_by_layer: list[dict], n_layer: int | None, default_layer: int) -> list[str]:
    """Markdown lines: a table with a row per layer, then where the SAE's causal effect peaks."""
    rows = profile_rows(metrics_by_layer, n_layer)
    if len(rows) < 2:
        return []
    methods = list(dict.fromkeys(name for row in rows for name in row["methods"]))

    table = []
    for row in rows:
        scores = row["methods"]
        table.append(
            [
                layer_label(row["layer"], n_layer, default_layer),
                _number(row["slot_accuracy"]),
                _number(row["margin_over_untrained_lm"]),
                _number(row["faithfulness"]),
                *[
                    " / ".join(_number((scores.get(m) or {}).get(score)) for score in ("selectivity", "iia", "d"))
                    for m in methods
                ],
            ]
        )
    lines = [
        "## Layer profile (every hook point, default seed)",
        "",
        "Layer L = the residual stream after L blocks (0 = embeddings; -1 = the last block's output, before "
        "`ln_f`). Each number is a mean over the held-out cells; faithfulness (the SAE's argmax slot names the "
        f"attribute the LM answered, where it answered another one; chance ≈ 1/{N_RULES}) over the hard cells. "
        "Method columns: ablation selectivity / interchange accuracy (IIA, RAVEL's Cause) / RAVEL's "
        "disentanglement D (mean of Cause and Isolate).",
        "",
        *markdown_table(
            [
                "layer",
                "slot accuracy",
                "margin over untrained LM",
                "faithfulness",
                *[f"{m}: sel. / IIA / D" for m in methods],
            ],
            table,
        ),
    ]
    peak = peak_sentence(rows, n_layer, default_layer)
    if peak:
        lines.append("\n" + peak)
    targets = causal_sae_targets(metrics_by_layer, n_layer, default_layer)
    return lines + ([""] + targets if targets else []) + value_readout_profile(rows, n_layer, default_layer)


# The causal SAE's bars (docs/methods.md): interchange accuracy on ood_both at layer 1, and at
# least DAS's mean IIA and ablation selectivity at every layer.
CAUSAL_SAE = "sae_slot_causal"
CAUSAL_IIA_LAYER, CAUSAL_IIA_CELL, CAUSAL_IIA_TARGET = 1, "ood_both", 0.95
SEED_ABLATION_BAR = 0.8


def _verdict(value: float, bar: float, above: bool = False) -> str:
    met = value > bar if above else value >= bar
    return "met" if met else f"missed by {bar - value:.3f}"


def causal_sae_targets(metrics_by_layer: list[dict], n_layer: int | None, default_layer: int) -> list[str]:
    """Markdown lines: the causal SAE against its targets over the profile, each met or missed by
    how much; [] when the profile has no causal SAE."""
    by_layer = {m.get("layer"): m for m in metrics_by_layer}
    rows = [r for r in profile_rows(metrics_by_layer, n_layer) if CAUSAL_SAE in r["methods"]]
    if not rows:
        return []
    lines = ["Causal SAE (`sae_slot_causal`) against its targets:", ""]
    at = by_layer.get(CAUSAL_IIA_LAYER)
    iia = None
    if at is not None:
        interchange = ((at.get("methods") or {}).get(CAUSAL_SAE) or {}).get("interchange") or {}
        iia = (interchange.get(CAUSAL_IIA_CELL) or {}).get("iia")
    if iia is not None:
        lines.append(
            f"- IIA on `{CAUSAL_IIA_CELL}` at layer {CAUSAL_IIA_LAYER} ≥ {CAUSAL_IIA_TARGET}: {iia:.3f}, "
            f"{_verdict(iia, CAUSAL_IIA_TARGET)}."
        )
    for score, what in (("iia", "IIA"), ("selectivity", "ablation selectivity")):
        compared, short = 0, []
        for row in rows:
            ours, das = (row["methods"].get(CAUSAL_SAE) or {}).get(score), (row["methods"].get("das") or {}).get(score)
            if ours is None or das is None:
                continue
            compared += 1
            if ours < das:
                short.append(f"layer {layer_label(row['layer'], n_layer, default_layer)} by {das - ours:.3f}")
        if compared:
            verdict = "met at every layer" if not short else "missed at " + ", ".join(short)
            lines.append(f"- {what}, mean over the held-out cells, ≥ DAS's at every layer: {verdict}.")
    diagonals = []
    for layer, metrics in by_layer.items():
        ablation = ((metrics.get("methods") or {}).get(CAUSAL_SAE) or {}).get("ablation") or {}
        diagonal = (ablation.get("train") or {}).get("diagonal_mean")
        if diagonal is not None:
            diagonals.append((diagonal, layer))
    if diagonals:
        best, layer = max(diagonals)
        lines.append(
            f"- the seed's ablation bar (train diagonal > {SEED_ABLATION_BAR}) at its best layer "
            f"({layer_label(layer, n_layer, default_layer)}): {best:.3f}, {_verdict(best, SEED_ABLATION_BAR, above=True)}."
        )
    return lines if len(lines) > 2 else []


def value_readout_profile(rows: list[dict], n_layer: int | None, default_layer: int) -> list[str]:
    """Markdown lines: each value read-out on seen and unseen persons at every layer."""
    if not any(row["value_readouts"] for row in rows):
        return []

    def seen_unseen(row, readout):
        numbers = row["value_readouts"].get(readout) or {}
        return f"{_number(numbers.get('seen'))} / {_number(numbers.get('unseen'))}"

    table = [
        [layer_label(row["layer"], n_layer, default_layer), *(seen_unseen(row, r) for r in READOUTS)] for row in rows
    ]
    return [
        "",
        "Value read-outs per layer, first answer token on seen persons (`ood_template`) / unseen persons "
        "(`ood_person`): the seed's value heads, and the lens (an affine map into the last block's space, "
        "then the LM's final norm and unembedding) gated by the SAE's slot or by the asked rule.",
        "",
        *markdown_table(["layer", "value heads", "lens, gated by the slot", "lens, gated by the asked rule"], table),
    ]
