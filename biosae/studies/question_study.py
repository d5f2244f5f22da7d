"""The question-diversity study: one finished run per training-question setting, read
into one table of what the held-out hard wordings show.

Each setting is a working directory of its own (``biosae.layout.study_dir(setting)``; every run
writes the same layout), run with one of ``config/questions_*.yaml``. For each setting and seed
this reads (paths from biosae.layout)

- ``lm/qa_accuracy.json``: the LM's first-token and exact accuracy on the hard cells, seen and
  unseen persons (every row of the cells, not the evaluate sample);
- every layer's ``eval/metrics.json`` of that seed (the default run's layer profile, or a sweep's):
  SAE slot accuracy with its margins over the untrained LM and bag-of-words, faithfulness, what
  the LM answers instead, and the SAE's ablation selectivity and steering (α-swap) success at the
  seed's hook and at the layer where selectivity peaks.

Every causal and read-out figure is a mean over the two hard cells, because the hard wordings are
what the study is about; the pass bars: LM ≥ 0.80 on unseen persons, bag-of-words
≤ 0.30 and SAE slot accuracy ≥ 0.80 in that setting.

    python -m biosae.studies.question_study seed=. NOUNS_DIR NOUNS_VERBS_DIR

(``name=directory`` names a setting; the default run in ``.`` is the seed's setting.)
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from biosae import layout
from biosae.errors import BiosaeError
from biosae.evaluation.layer_profile import mean_of_present
from biosae.evaluation.method_summary import lookup
from biosae.evaluation.metrics import ANSWERED_NONE
from biosae.evaluation.report import markdown_table
from biosae.io import read_json, read_yaml
from biosae.methods.causal_variants import RANKING_CONTROLS
from biosae.rules import HARD_CELLS

LM_TARGET = 0.80  # LM first-token accuracy on hard wordings, unseen persons
BAG_OF_WORDS_CEILING = 0.30  # the question text alone must not give the rule away
SLOT_TARGET = 0.80  # SAE slot accuracy on the hard cells where the LM gets there


@dataclass
class SettingRun:
    """One setting at one seed: its LM's QA accuracy and its metrics per layer."""

    setting: str
    seed: int | None  # None: the default run's seed, where no config.yaml names it
    train_templates: list
    qa_accuracy: dict
    metrics_by_layer: dict[int, dict] = field(default_factory=dict)
    hook_layer: int = -1


def trained_wordings(qa_accuracy: dict) -> list[int]:
    """The wordings (template_idx) the LM was asked in training, read from its train cell: what
    the run did, whatever config produced it."""
    keys = (qa_accuracy.get("train") or {}).get("by_template") or {}
    return sorted({int(key.rsplit("/", 1)[1]) for key in keys})


def read_setting(directory: Path, name: str | None = None) -> list[SettingRun]:
    """Every seed of a finished setting directory, read from its results alone: the default run's
    seed at the flat paths (its number from the directory's config.yaml where there is one), other
    seeds under their sweep prefix. The setting is called ``name``, or the directory's name."""
    directory = Path(directory).resolve()
    hook_metrics = directory / layout.eval_metrics("")
    if not hook_metrics.is_file():
        raise BiosaeError(f"{hook_metrics}: missing (run the setting to the end first)")
    hook = int(read_json(hook_metrics)["layer"])
    config = read_yaml(directory / "config.yaml") if (directory / "config.yaml").is_file() else {}
    base_seed = (config or {}).get("seed")
    seeds = [base_seed] + sorted(
        layout.seed_of(path.relative_to(directory))
        for path in directory.glob(layout.lm_qa_accuracy(layout.sweep_lm_prefix("*")))
    )
    runs = []
    for seed in seeds:
        base = seed == base_seed
        qa_path = directory / layout.lm_qa_accuracy("" if base else layout.sweep_lm_prefix(seed))
        if not qa_path.is_file():
            raise BiosaeError(f"{qa_path}: missing (run the setting to the end first)")
        qa_accuracy = read_json(qa_path)
        run = SettingRun(name or directory.name, seed, trained_wordings(qa_accuracy), qa_accuracy, hook_layer=hook)
        layer_metrics = {hook: hook_metrics} if base else {}
        sweep_pattern = layout.eval_metrics(layout.sweep_run_prefix(seed if seed is not None else 0, "*"))
        for path in sorted(directory.glob(sweep_pattern)):
            layer_metrics.setdefault(layout.layer_of(path.relative_to(directory)), path)
        for layer, path in layer_metrics.items():
            if path.is_file():
                run.metrics_by_layer[layer] = read_json(path)
        if hook not in run.metrics_by_layer:
            raise BiosaeError(f"{directory}: seed {seed} has no metrics at the hook layer {hook}")
        runs.append(run)
    return runs


def answered_instead(metrics: dict, cell: str) -> dict | None:
    """Shares of the cell's evaluated prompts by what the LM's first answer token names: the asked
    attribute, another attribute of the same person, or none of the person's six."""
    matrix = lookup(metrics, "asked_vs_answered", cell)
    if matrix is None:
        return None
    counts = np.asarray(matrix, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return None
    asked = np.trace(counts[:, :ANSWERED_NONE])
    none = counts[:, ANSWERED_NONE].sum()
    return {"asked": asked / total, "other_attribute": (total - asked - none) / total, "none": none / total}


def causal_at(metrics: dict) -> dict:
    """The SAE slot's ablation selectivity and steering success (at its picked α), IIA, and the
    best other method's IIA, each a mean over the hard cells."""
    sae = lookup(metrics, "methods", "sae_slot") or {}
    others = {
        name: mean_of_present(lookup(result, "interchange", cell, "iia") for cell in HARD_CELLS)
        for name, result in (metrics.get("methods") or {}).items()
        if name not in ("sae_slot", *RANKING_CONTROLS)
    }
    others = {name: value for name, value in others.items() if value is not None}
    best = max(others.items(), key=lambda item: item[1]) if others else (None, None)
    return {
        "selectivity": mean_of_present(lookup(sae, "ablation", cell, "selectivity") for cell in HARD_CELLS),
        "steering": mean_of_present(lookup(sae, "steering", cell, "mean_off_diagonal") for cell in HARD_CELLS),
        "alpha": sae.get("alpha"),
        "iia": mean_of_present(lookup(sae, "interchange", cell, "iia") for cell in HARD_CELLS),
        "best_other": best[0],
        "best_other_iia": best[1],
    }


def study_row(run: SettingRun) -> dict:
    """The numbers of one setting at one seed (see the module docstring)."""
    hook = run.metrics_by_layer[run.hook_layer]
    row = {
        "setting": run.setting,
        "seed": run.seed,
        "train_templates": run.train_templates,
        "layers": sorted(run.metrics_by_layer),
    }
    for cell in HARD_CELLS:
        row[f"lm_first_token:{cell}"] = lookup(run.qa_accuracy, cell, "first_token")
        row[f"lm_exact:{cell}"] = lookup(run.qa_accuracy, cell, "exact")
        row[f"slot_accuracy:{cell}"] = lookup(hook, "slot_accuracy", cell)
        row[f"bag_of_words:{cell}"] = lookup(hook, "baselines", cell, "bag_of_words")
        row[f"margin_over_untrained_lm:{cell}"] = lookup(hook, "margins", cell, "over_untrained_lm")
        row[f"margin_over_bag_of_words:{cell}"] = lookup(hook, "margins", cell, "over_bag_of_words")
        row[f"faithfulness:{cell}"] = lookup(hook, "methods", "sae_slot", "faithfulness", cell, "rate")
        row[f"answered:{cell}"] = answered_instead(hook, cell)
    row["hook"] = causal_at(hook)
    by_layer = {layer: causal_at(metrics) for layer, metrics in run.metrics_by_layer.items()}
    row["by_layer"] = by_layer
    measured = {layer: c for layer, c in by_layer.items() if c["selectivity"] is not None}
    row["peak_layer"] = max(measured, key=lambda layer: measured[layer]["selectivity"]) if measured else None
    row["peak"] = measured.get(row["peak_layer"]) if measured else None
    unseen = HARD_CELLS[-1]
    row["meets_target"] = bool(
        (row[f"lm_first_token:{unseen}"] or 0) >= LM_TARGET
        and row[f"bag_of_words:{unseen}"] is not None
        and row[f"bag_of_words:{unseen}"] <= BAG_OF_WORDS_CEILING
        and (row[f"slot_accuracy:{unseen}"] or 0) >= SLOT_TARGET
    )
    return row


SEED_FIGURES = (  # (label, how to read it from a study row), for the across-seeds table
    ("LM first token, unseen", lambda r: r[f"lm_first_token:{HARD_CELLS[-1]}"]),
    ("LM exact, unseen", lambda r: r[f"lm_exact:{HARD_CELLS[-1]}"]),
    ("SAE slot acc., unseen", lambda r: r[f"slot_accuracy:{HARD_CELLS[-1]}"]),
    ("margin over untrained LM", lambda r: r[f"margin_over_untrained_lm:{HARD_CELLS[-1]}"]),
    ("bag of words, unseen", lambda r: r[f"bag_of_words:{HARD_CELLS[-1]}"]),
    ("faithfulness", lambda r: mean_of_present(r[f"faithfulness:{cell}"] for cell in HARD_CELLS)),
    ("seed's hook: selectivity", lambda r: r["hook"]["selectivity"]),
    ("seed's hook: steering", lambda r: r["hook"]["steering"]),
    ("seed's hook: IIA", lambda r: r["hook"]["iia"]),
)


def across_seeds(rows: list[dict]) -> dict:
    """Mean and sample standard deviation over the seeds of one setting (``rows``: its study rows).

    The layer profile is averaged first and its peak taken after, so that the peak is the layer
    where the setting's mean selectivity is highest, not a different layer per seed.
    """

    def stats(values):
        values = [v for v in values if v is not None]
        if not values:
            return None
        return (float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else None, len(values))

    summary = {
        "setting": rows[0]["setting"],
        "seeds": [r["seed"] for r in rows],
        "figures": {label: stats(read(r) for r in rows) for label, read in SEED_FIGURES},
    }
    common = set.intersection(*(set(r["by_layer"]) for r in rows))
    by_layer = {
        layer: {
            key: stats(r["by_layer"][layer][key] for r in rows)
            for key in ("selectivity", "steering", "iia", "best_other_iia")
        }
        for layer in common
    }
    measured = {layer: c for layer, c in by_layer.items() if c["selectivity"] is not None}
    summary["peak_layer"] = max(measured, key=lambda layer: measured[layer]["selectivity"][0]) if measured else None
    summary["peak"] = measured.get(summary["peak_layer"], {})
    summary["peak_best_other"] = sorted(
        {r["by_layer"][summary["peak_layer"]]["best_other"] for r in rows if summary["peak_layer"] in r["by_layer"]}
        - {None}
    )
    lm, bag, slot = (
        summary["figures"][label]
        for label in ("LM first token, unseen", "bag of words, unseen", "SAE slot acc., unseen")
    )
    summary["meets_target"] = bool(
        lm and bag and slot and lm[0] >= LM_TARGET and bag[0] <= BAG_OF_WORDS_CEILING and slot[0] >= SLOT_TARGET
    )
    return summary


def _pm(stat) -> str:
    """``mean ± sd`` of a :func:`across_seeds` figure (– where nothing was measured)."""
    if stat is None:
        return "–"
    mean, sd, _ = stat
    return f"{mean:.3f}" if sd is None else f"{mean:.3f} ± {sd:.3f}"


def _n(value, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def _layer(layer) -> str:
    return "–" if layer is None else ("last (-1)" if layer == -1 else str(layer))


def study_markdown(rows: list[dict]) -> list[str]:
    """Three tables (the LM, the SAE's read-out, the causal tests), then the target's verdict."""
    seen, unseen = HARD_CELLS

    def name(row):
        seed = "default seed" if row["seed"] is None else f"seed {row['seed']}"
        return f"{row['setting']} ({seed}, train wordings {row['train_templates']})"

    lm = [
        [
            name(r),
            f"{_n(r[f'lm_first_token:{seen}'])} / {_n(r[f'lm_exact:{seen}'])}",
            f"{_n(r[f'lm_first_token:{unseen}'])} / {_n(r[f'lm_exact:{unseen}'])}",
            " · ".join(
                f"{key.replace('_', ' ')} {_n(value, '.2f')}" for key, value in (r[f"answered:{unseen}"] or {}).items()
            )
            or "–",
        ]
        for r in rows
    ]
    readout = [
        [name(r)]
        + [
            f"{_n(r[f'slot_accuracy:{cell}'])} ({_n(r[f'margin_over_untrained_lm:{cell}'], '+.3f')}"
            f" / {_n(r[f'margin_over_bag_of_words:{cell}'], '+.3f')})"
            for cell in HARD_CELLS
        ]
        + [_n(r[f"bag_of_words:{unseen}"]), _n(mean_of_present(r[f"faithfulness:{cell}"] for cell in HARD_CELLS))]
        for r in rows
    ]
    causal = []
    for r in rows:
        hook, peak = r["hook"], r["peak"] or {}
        causal.append(
            [
                name(r),
                f"{_n(hook['selectivity'])} / {_n(hook['steering'])} / {_n(hook['iia'])}",
                _layer(r["peak_layer"]),
                f"{_n(peak.get('selectivity'))} / {_n(peak.get('steering'))} / {_n(peak.get('iia'))}",
                f"{peak.get('best_other') or '–'} {_n(peak.get('best_other_iia'))}",
            ]
        )
    lines = [
        "LM accuracy on the held-out hard wordings (first token / exact; every row of the cell), and what "
        "its first answer token names on unseen persons:",
        "",
        *markdown_table(["setting", f"{seen}", f"{unseen}", f"{unseen}: the LM answers"], lm),
        "",
        "SAE slot accuracy at the seed's hook (margin over the untrained-LM SAE / over bag-of-words), "
        "bag-of-words itself, and faithfulness (the argmax slot names the attribute the LM answered, where "
        "it answered another one; mean of the hard cells):",
        "",
        *markdown_table(
            ["setting", f"slot acc. {seen}", f"slot acc. {unseen}", f"bag of words {unseen}", "faithfulness"], readout
        ),
        "",
        "Causal tests of the SAE slots (mean of the hard cells): ablation selectivity / steering success at "
        "the α picked on the train cell / interchange accuracy, at the seed's hook and at the layer where "
        "selectivity peaks, with the best other method's IIA there:",
        "",
        *markdown_table(
            [
                "setting",
                "seed's hook: sel. / steer / IIA",
                "peak layer",
                "peak: sel. / steer / IIA",
                "best other method's IIA at the peak",
            ],
            causal,
        ),
        "",
    ]
    by_setting: dict[str, list[dict]] = {}
    for r in rows:
        by_setting.setdefault(r["setting"], []).append(r)
    repeated = [across_seeds(group) for group in by_setting.values() if len(group) > 1]
    if repeated:
        header = ["figure (mean of the hard cells where not said)"] + [
            f"{s['setting']}: mean ± sd of seeds {', '.join('default' if x is None else str(x) for x in s['seeds'])}"
            for s in repeated
        ]
        table = [[label] + [_pm(s["figures"][label]) for s in repeated] for label, _ in SEED_FIGURES]
        table.append(["layer where mean selectivity peaks"] + [_layer(s["peak_layer"]) for s in repeated])
        for key, label in (
            ("selectivity", "selectivity"),
            ("steering", "steering"),
            ("iia", "IIA"),
            ("best_other_iia", "best other method's IIA"),
        ):
            table.append([f"at the peak: {label}"] + [_pm(s["peak"].get(key)) for s in repeated])
        table.append(["best other method (per seed)"] + [", ".join(s["peak_best_other"]) or "–" for s in repeated])
        lines += [
            "Settings run with several seeds (each seed its own LM and SAEs; unseen = unseen persons' hard wordings):",
            "",
            *markdown_table(header, table),
            "",
        ]
        met_on_average = [s["setting"] for s in repeated if s["meets_target"]]
        lines += [
            f"On the mean over seeds the target is {'met by ' + ', '.join(met_on_average) if met_on_average else 'met by none of them'}.",
            "",
        ]
    met = [r for r in rows if r["meets_target"]]
    if met:
        lines.append(
            "Target met (LM ≥ 0.80 on unseen persons' hard wordings, bag-of-words ≤ 0.30, SAE slot "
            "accuracy ≥ 0.80) by: " + ", ".join(name(r) for r in met) + "."
        )
    else:
        best = max(rows, key=lambda r: r[f"lm_first_token:{unseen}"] or 0)
        lines.append(
            f"No setting meets the target (LM ≥ {LM_TARGET:.2f} on unseen persons' hard wordings, "
            f"bag-of-words ≤ {BAG_OF_WORDS_CEILING:.2f}, SAE slot accuracy ≥ {SLOT_TARGET:.2f}). The "
            f"closest is {name(best)}: LM {_n(best[f'lm_first_token:{unseen}'])}, SAE slot accuracy "
            f"{_n(best[f'slot_accuracy:{unseen}'])}, bag-of-words {_n(best[f'bag_of_words:{unseen}'])}."
        )
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("settings", nargs="+", help="finished setting directories, each DIR or NAME=DIR")
    parser.add_argument("--out", type=Path, help="write the markdown here (default: print it)")
    args = parser.parse_args(argv)
    try:
        settings = [setting.split("=", 1) if "=" in setting else (None, setting) for setting in args.settings]
        rows = [study_row(run) for name, directory in settings for run in read_setting(Path(directory), name)]
    except BiosaeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    text = "\n".join(study_markdown(rows)) + "\n"
    if args.out:
        from biosae.io import write_text

        write_text(args.out, text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
