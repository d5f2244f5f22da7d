"""The method comparison as summary.md reads it: a method x test table per cell, and which
method localizes the rule best at this layer (biosae.evaluation.report puts it near the top)."""

from __future__ import annotations

import numpy as np

from biosae.evaluation.markdown import markdown_table
from biosae.methods.causal_variants import RANKING_CONTROLS
from biosae.methods.registry import method_names


def _number(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def lookup(result: dict | None, *keys):
    """``result[k1][k2]...``, or None where a key is missing or a level is not a mapping."""
    for key in keys:
        if not isinstance(result, dict):
            return None
        result = result.get(key)
    return result


def method_scores(metrics: dict, cells: list[str]) -> dict[str, dict]:
    """Per method: mean IIA (RAVEL's Cause), Isolate, disentanglement D and ablation selectivity
    over ``cells`` (None where unmeasured)."""
    paths = {
        "iia": ("interchange", "iia"),
        "isolate": ("isolate", "isolate"),
        "d": ("disentanglement", "d"),
        "selectivity": ("ablation", "selectivity"),
    }
    scores = {}
    for name, result in (metrics.get("methods") or {}).items():
        scores[name] = {}
        for score, (section, key) in paths.items():
            values = [v for cell in cells if (v := lookup(result, section, cell, key)) is not None]
            scores[name][score] = float(np.mean(values)) if values else None
    return scores


def best_method(metrics: dict, cells: list[str], score: str = "iia") -> tuple[str | None, float | None]:
    """The method with the highest mean ``score`` over ``cells`` (the controls excluded)."""
    scores = method_scores(metrics, cells)
    ranked = [
        (value[score], name)
        for name, value in scores.items()
        if name not in RANKING_CONTROLS and value[score] is not None
    ]
    if not ranked:
        return None, None
    value, name = max(ranked)
    return name, value


def held_out_cells(cells: list[str]) -> list[str]:
    return [cell for cell in cells if cell != "train"] or list(cells)


def verdict_lines(metrics: dict, cells: list[str]) -> list[str]:
    """Plain sentences: which method localizes the rule best here, and how the SAE compares."""
    held_out = held_out_cells(cells)
    scores = method_scores(metrics, held_out)
    if not scores:
        return []
    layer = metrics.get("layer")
    layer = "-1 (the last block's output)" if layer == -1 else layer
    lines = []
    for score, label in (
        ("iia", "interchange accuracy (IIA)"),
        ("d", "RAVEL's disentanglement D"),
        ("selectivity", "ablation selectivity"),
    ):
        name, value = best_method(metrics, held_out, score)
        if name is None:
            continue
        sae = (scores.get("sae_slot") or {}).get(score)
        control = (scores.get("random") or {}).get(score)
        line = (
            f"- By {label}, mean over the held-out cells, the best method at layer {layer} is **{name}** "
            f"({_number(value)})"
        )
        if name != "sae_slot" and sae is not None:
            line += f"; the supervised SAE's slots reach {_number(sae)} ({value - sae:.3f} behind)"
        elif name == "sae_slot":
            others = [
                v[score] for n, v in scores.items() if n not in ("sae_slot", *RANKING_CONTROLS) and v[score] is not None
            ]
            if others:
                line += f", {value - max(others):+.3f} ahead of the next method"
        if control is not None:
            line += f"; the random control gets {_number(control)}"
        lines.append(line + ".")
    return lines


def methods_section(metrics: dict, cells: list[str]) -> list[str]:
    methods = metrics.get("methods") or {}
    if not methods:
        return []
    known = method_names()
    order = [n for n in known if n in methods] + [n for n in methods if n not in known]
    reference = metrics.get("faithfulness_reference") or {}
    rows = []
    for cell in cells:
        for name in order:
            result = methods[name]
            interchange = lookup(result, "interchange", cell) or {}
            ravel = lookup(result, "disentanglement", cell) or {}
            steering = lookup(result, "steering", cell, "mean_off_diagonal")
            faithful = lookup(result, "faithfulness", cell) or {}
            rows.append(
                [
                    cell,
                    name,
                    _number(lookup(result, "ablation", cell, "selectivity")),
                    _number(interchange.get("iia")),
                    _number(interchange.get("leaked")),
                    _number(interchange.get("unchanged")),
                    _number(ravel.get("isolate")),
                    _number(ravel.get("d")),
                    "–" if steering is None else f"{steering:.3f} (α={result.get('alpha'):g})",
                    _number(lookup(result, "detection", cell)),
                    "–" if faithful.get("rate") is None else f"{faithful['rate']:.3f} (n={faithful.get('n')})",
                ]
            )
    reference_rows = [
        [
            cell,
            str(ref.get("n")),
            _number(ref.get("chance")),
            _number(ref.get("uniform_chance")),
            _number(ref.get("untrained_lm_sae")),
        ]
        for cell in cells
        if (ref := reference.get(cell)) and ref.get("n")
    ]
    fits = [
        f"- {name}: "
        + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result["fit"].items())
        for name in order
        if (result := methods[name]).get("fit")
    ]
    lines = [
        "## Which method localizes the rule? (same prompts, same tests)",
        "",
        *verdict_lines(metrics, cells),
        "",
        "Every method is fitted on the train cell only, at this hook layer, and edits the LM's forward pass at the "
        "answer position. **Ablation selectivity**: mean diagonal − mean off-diagonal of the normalized accuracy drop "
        "when the method removes one rule. **IIA** (MIB): on one seeded set of base/source pairs per cell (another "
        "person, another rule), the share where the LM answers the *base* person's source-rule attribute; "
        "**leaked**: it answers the *source* person's; **unchanged**: the base's own answer stays. RAVEL's "
        "**Cause** is the IIA; **Isolate**: on a second set of pairs whose source asks the *same* rule about another "
        "person, the share (of bases the LM answers) where the base's own answer stays; **D** (disentanglement) = "
        "mean(Cause, Isolate). **Steering**: a "
        "rule-A prompt pushed to rule B (α picked on the train cell from `evaluate.swap_alphas`); success = the "
        "person's rule-B answer. **Detection**: the method's read-out names the asked rule. **Faithfulness**: where "
        "the LM answered another attribute of the same person, the share where the read-out names the attribute "
        "it answered.",
        "",
        *markdown_table(
            [
                "cell",
                "method",
                "ablation selectivity",
                "IIA",
                "leaked",
                "unchanged",
                "Isolate",
                "D",
                "steering",
                "detection",
                "faithfulness",
            ],
            rows,
        ),
    ]
    if reference_rows:
        lines += [
            "",
            "Faithfulness references (same rows): chance = the agreement of a read-out independent of the "
            "answer (from the SAE read-out's and the answers' frequencies); the untrained-LM SAE's slot.",
            "",
            *markdown_table(["cell", "n", "chance", "1/6", "untrained-LM SAE"], reference_rows),
        ]
    if fits:
        lines += [
            "",
            "Training of the fitted methods (DAS: IIA on train-cell pairs and on held-out train-cell "
            "persons; the causal SAEs: the interchange weight chosen by validation IIA on held-out train-cell "
            "persons, beside the seed SAE's on the same pairs; unsupervised SAE: explained variance on the train "
            "cell):",
            "",
            *fits,
        ]
    lines += [
        "",
        "AlignSAE's α-swap (0.85 at α = 2 on GPT-2) is a reference, not a like-for-like anchor: its "
        "committed script writes the edited vector into the last token's input embedding, not into layer L, "
        "and decodes without the error term.",
    ]
    return lines
