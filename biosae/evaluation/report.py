"""summary.md: the page a researcher reads first, rendered from metrics.json.

The metrics.json structure is documented in ``biosae.evaluation.metrics``. Sections, in order: the headline
table per cell (SAE slot accuracy beside its baselines, the margins, the LM's answer accuracy),
the expected results with PASS / FAIL / NOT MEASURED and the measured values, ablation
selectivity, slot swap, the value read-outs (heads and lens) against the majority baseline, the LM's accuracy per question
template, and, for cells where the LM answers badly, which attribute it answers instead. A section
whose metrics a run did not produce is left out; a missing number is shown as "–".
"""

from __future__ import annotations

from biosae.evaluation.layer_profile import profile_section
from biosae.evaluation.markdown import format_number, markdown_table
from biosae.evaluation.method_summary import methods_section
from biosae.evaluation.metrics import ABLATION_MODES, answered_instead, expected_results, headline_margins
from biosae.io import write_text
from biosae.rules import RULES

__all__ = ["expected_result", "format_number", "markdown_table", "render_summary", "write_summary"]

# Below this LM answer accuracy a cell gets an asked-vs-answered finding.
LOW_LM_ACCURACY = 0.9
# Wrong-attribute answers reported when they take at least this share of a rule's questions.
FINDING_MIN_RATE = 0.1
# The lens read-out's bar at the seed's hook: unseen persons read, as well as seen ones.
LENS_UNSEEN_TARGET = 0.8
LENS_GAP_TARGET = 0.1


def _signed(value) -> str:
    return "–" if value is None else f"{value:+.3f}"


def _cells(metrics: dict) -> list[str]:
    if metrics.get("cells"):
        return list(metrics["cells"])
    keys = list(metrics.get("slot_accuracy") or {}) + list(metrics.get("lm_qa_accuracy") or {})
    return list(dict.fromkeys(keys))


def _lm_accuracy(metrics: dict, cell: str):
    return ((metrics.get("lm_qa_accuracy") or {}).get(cell) or {}).get("first_token")


def _headline(metrics: dict, cells: list[str]) -> list[str]:
    slot = metrics.get("slot_accuracy") or {}
    baselines = metrics.get("baselines") or {}
    margin = metrics.get("margins") or headline_margins(slot, baselines)
    rows = []
    for cell in cells:
        base = baselines.get(cell) or {}
        cell_margin = margin.get(cell) or {}
        rows.append(
            [
                cell,
                str((metrics.get("n_prompts") or {}).get(cell, "–")),
                format_number(slot.get(cell)),
                format_number(base.get("untrained_lm_sae")),
                format_number(base.get("bag_of_words")),
                format_number(base.get("linear_probe")),
                format_number(base.get("chance")),
                _signed(cell_margin.get("over_untrained_lm")),
                _signed(cell_margin.get("over_bag_of_words")),
                format_number(_lm_accuracy(metrics, cell)),
            ]
        )
    return [
        "## Headline: which attribute is asked, per cell",
        "",
        "Slot accuracy = fraction of prompts whose argmax SAE slot is the asked rule. Baselines on the "
        "same rows: the same pipeline on an untrained (random-init) LM, a bag-of-words classifier on "
        "the question text without the name, a linear probe on the same activations, chance. "
        "Margins = SAE − baseline. LM answer accuracy = greedy first answer token right.",
        "",
        *markdown_table(
            [
                "cell",
                "n",
                "SAE slot acc.",
                "untrained LM",
                "bag of words",
                "linear probe",
                "chance",
                "SAE − untrained LM",
                "SAE − BoW",
                "LM answer acc.",
            ],
            rows,
        ),
    ]


def expected_result(entry: dict) -> tuple[str, str]:
    """One expected result of metrics.json as (PASS / FAIL / NOT MEASURED, what was required and
    measured, per cell where it spans several)."""
    verdict = {True: "PASS", False: "FAIL", None: "NOT MEASURED"}[entry.get("passed")]
    by_cell = entry.get("by_cell") or {}
    several = len(by_cell) > 1
    text = (
        f"[{entry.get('source', '')}] {entry.get('description', entry['name'])}: "
        f"{'minimum ' if several else ''}{format_number(entry.get('value'))}, "
        f"required {entry['comparison']} {entry['threshold']}"
    )
    if several:
        text += " (" + ", ".join(f"{cell} {format_number(value)}" for cell, value in by_cell.items()) + ")"
    return verdict, text


def _expected(metrics: dict) -> list[str]:
    entries = metrics.get("expected_results") or expected_results(metrics)
    lines = ["## Expected results", ""]
    for entry in entries:
        verdict, text = expected_result(entry)
        lines.append(f"- **{verdict}** {text}")
    return lines


def _ablation(metrics: dict, cells: list[str]) -> list[str]:
    ablation = metrics.get("ablation") or {}
    modes = [m for m in ABLATION_MODES if m in ablation] + [m for m in ablation if m not in ABLATION_MODES]
    rows = [
        [
            mode,
            cell,
            format_number(result.get("diagonal_mean")),
            format_number(result.get("off_diagonal_mean")),
            _signed(result.get("selectivity")),
            _signed(result.get("logprob_selectivity")),
        ]
        for mode in modes
        for cell in cells + [c for c in ablation[mode] if c not in cells]
        if (result := ablation[mode].get(cell))
    ]
    if not rows:
        return []
    return [
        "## Ablation (error term kept)",
        "",
        "Normalized drop of the LM's answer accuracy, row = ablated slot, column = rule; selectivity = "
        "mean diagonal − mean off-diagonal (also for the drop of the correct token's log-probability). "
        "`random_direction` is the control of equal norm.",
        "",
        *markdown_table(
            ["mode", "cell", "diagonal drop", "off-diagonal drop", "selectivity", "log-prob selectivity"], rows
        ),
    ]


def _error_term(metrics: dict, cells: list[str]) -> list[str]:
    error_term, baselines = metrics.get("error_term") or {}, metrics.get("baselines") or {}
    rows = [
        [
            cell,
            format_number(result.get("rule_probe_accuracy")),
            format_number((baselines.get(cell) or {}).get("linear_probe")),
            format_number(result.get("reconstruction_r2")),
        ]
        for cell in cells + [c for c in error_term if c not in cells]
        if (result := error_term.get(cell))
    ]
    if not rows:
        return []
    return [
        "## What the error term keeps",
        "",
        "Ablation and swap edit decode(z) and keep the error term h − decode(z). A linear probe fitted on the "
        "train rows' error terms says how well the asked rule can still be read after the edit: as well as from h "
        "means the slots are not where the LM's rule information sits, which bounds what zeroing a slot can do. "
        "Reconstruction R² = share of the activations' variance (around the train mean) that decode(z) explains.",
        "",
        *markdown_table(["cell", "rule probe on the error term", "rule probe on h", "reconstruction R²"], rows),
    ]


def _swap(metrics: dict, cells: list[str]) -> list[str]:
    swap = metrics.get("swap") or {}
    rows = [
        [
            alpha,
            cell,
            format_number(result.get("mean_off_diagonal")),
            format_number(result.get("clean_mean_off_diagonal")),
        ]
        for alpha, by_cell in swap.items()
        for cell in cells + [c for c in by_cell if c not in cells]
        if (result := by_cell.get(cell))
    ]
    if not rows:
        return []
    return [
        "## Slot swap",
        "",
        "Success = after moving the prompt from slot A to slot B, the LM's first answer token is the "
        "person's rule-B answer. Without intervention = how often that answer comes out anyway.",
        "",
        *markdown_table(["alpha", "cell", "swap success (mean off-diagonal)", "without intervention"], rows),
    ]


def _value_readouts(metrics: dict, cells: list[str]) -> list[str]:
    value = metrics.get("value_accuracy") or {}
    rows = []
    for cell in cells + [c for c in value if c not in cells]:
        result = value.get(cell)
        if not result:
            continue
        rows.append(
            [
                cell,
                *(format_number(result.get(key)) for key in ("sae", "lens_by_slot", "lens_by_rule")),
                format_number(result.get("majority_baseline")),
            ]
        )
    if not rows:
        return []
    lines = [
        "## Value read-outs (first answer token)",
        "",
        "Value heads: the seed's per-slot linear heads, trained on the train cell. Lens: an affine map "
        "into the last block's space fitted on the train cell, then the LM's own final norm and "
        "unembedding, read among the candidates of the SAE's slot (or of the asked rule); at the last "
        "block it is the LM's own read-out. `ood_template` holds seen persons, `ood_person` unseen ones.",
        "",
        *markdown_table(
            ["cell", "value heads", "lens, gated by the slot", "lens, gated by the asked rule", "per-rule majority"],
            rows,
        ),
    ]
    readouts = metrics.get("value_readouts") or {}
    lens = readouts.get("lens_by_slot") or {}
    if lens.get("unseen") is not None and lens.get("gap") is not None:
        met = lens["unseen"] >= LENS_UNSEEN_TARGET and lens["gap"] <= LENS_GAP_TARGET
        lines += [
            "",
            f"Lens gated by the slot: {lens['unseen']:.3f} on unseen persons, {lens['gap']:+.3f} seen − unseen "
            f"(target ≥ {LENS_UNSEEN_TARGET} and ≤ {LENS_GAP_TARGET}: {'met' if met else 'missed'}).",
        ]
    return lines


def _template_sort_key(key: str):
    rule, _, template = key.partition("/")
    return (RULES.index(rule) if rule in RULES else len(RULES), rule, int(template) if template.isdigit() else 0)


def _per_template(metrics: dict, cells: list[str]) -> list[str]:
    by_cell = {cell: ((metrics.get("lm_qa_accuracy") or {}).get(cell) or {}).get("by_template") or {} for cell in cells}
    by_cell = {cell: templates for cell, templates in by_cell.items() if templates}
    if not by_cell:
        return []
    keys = sorted({key for templates in by_cell.values() for key in templates}, key=_template_sort_key)
    rows = []
    for key in keys:
        row = [key]
        for templates in by_cell.values():
            result = templates.get(key)
            row.append("" if result is None else f"{format_number(result.get('accuracy'))} ({result.get('n', '?')})")
        rows.append(row)
    return [
        "## LM answer accuracy per question template",
        "",
        "Entries: accuracy (number of prompts); template indices as in `data/qa_templates/`.",
        "",
        *markdown_table(["rule/template", *by_cell], rows),
    ]


def _answered_instead(metrics: dict, cells: list[str]) -> list[str]:
    matrices = metrics.get("asked_vs_answered") or {}
    lines = []
    for cell in cells:
        accuracy = _lm_accuracy(metrics, cell)
        if accuracy is None or accuracy >= LOW_LM_ACCURACY or cell not in matrices:
            continue
        findings = answered_instead(matrices[cell], FINDING_MIN_RATE)
        if not findings:
            lines.append(
                f"- {cell} (LM answer accuracy {accuracy:.3f}): no single wrong attribute takes "
                f"{FINDING_MIN_RATE:.0%} of any rule's questions."
            )
        for finding in findings:
            answered = (
                "none of the person's attributes" if finding["answered"] == "none" else f"the {finding['answered']}"
            )
            lines.append(
                f"- for {cell} (LM answer accuracy {accuracy:.3f}), {finding['asked']} questions were "
                f"answered with {answered} {finding['rate']:.0%} of the time "
                f"({finding['count']}/{finding['n']})."
            )
    if not lines:
        return []
    return [
        "## Which attribute the LM answers instead",
        "",
        f"Cells with LM answer accuracy below {LOW_LM_ACCURACY}: the asked attribute against the attribute "
        "whose answer's first token the LM gave (full matrix: `asked_vs_answered` in metrics.json).",
        "",
        *lines,
    ]


def render_summary(
    metrics: dict, figures: dict[str, str] | None = None, profile: list[dict] | None = None, n_layer: int | None = None
) -> str:
    """The summary as markdown text. ``figures``: optional {caption: path relative to the summary};
    ``profile``: the metrics of every layer of the default seed (this run's included), which then
    open the page (biosae.evaluation.layer_profile)."""
    cells = _cells(metrics)
    sections = [
        ["# biosae evaluation summary"],
        profile_section(profile, n_layer, metrics.get("layer")) if profile else [],
        methods_section(metrics, cells),
        _headline(metrics, cells) if cells else [],
        _expected(metrics),
        _ablation(metrics, cells),
        _error_term(metrics, cells),
        _swap(metrics, cells),
        _value_readouts(metrics, cells),
        _per_template(metrics, cells),
        _answered_instead(metrics, cells),
        ["## Notes", "", *[f"- {note}" for note in metrics["notes"]]] if metrics.get("notes") else [],
        ["## Figures", "", *[f"![{caption}]({path})" for caption, path in figures.items()]] if figures else [],
    ]
    return "\n\n".join("\n".join(section) for section in sections if section) + "\n"


def write_summary(
    metrics: dict,
    path,
    figures: dict[str, str] | None = None,
    profile: list[dict] | None = None,
    n_layer: int | None = None,
) -> None:
    """Write render_summary(...) to ``path`` atomically."""
    write_text(path, render_summary(metrics, figures, profile, n_layer))
