"""Section 7, the evaluate stage: the seed hook's evaluation with every localization method
against the SAE and the random control only, in this process, as its two jobs run it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from biosae import layout

from .common import run_config, run_evaluation_inputs, say, seconds_of

BASELINE_METHODS = ("sae_slot", "random")  # the evaluate stage without the other methods


@dataclass
class EvaluationTiming:
    """One evaluation's tests (every method's and the join) and figures."""

    methods: list[str]  # the methods its metrics hold
    tests: float
    figures: float

    @property
    def seconds(self) -> float:
        return self.tests + self.figures


@dataclass
class Evaluate:
    layer: int
    prompts_per_cell: int
    load_seconds: float  # reading the run's files, once for both
    baseline: EvaluationTiming  # the SAE and the random control only
    every_method: EvaluationTiming  # the config's methods
    source: str

    @property
    def ratio(self) -> float:
        return self.every_method.seconds / self.baseline.seconds


def measure_evaluate(run_dir: Path, workdir: Path) -> Evaluate:
    """Time the seed hook's evaluation on a finished run's files, in this process, as its two jobs
    run it: the other methods' tests (evaluate_methods at that layer alone, prompt caches built)
    then evaluate (the SAE's tests, the join) and its figures. Twice: with the config's methods and
    with the SAE and the random control only. Loading the files (the same for both) is timed
    apart; Snakemake's job start-ups are not in either."""
    from biosae.evaluation.evaluate import answered_rules, evaluate, ordered_cells
    from biosae.evaluation.figures import write_figures
    from biosae.evaluation.method_tests import cell_samples, evaluate_methods, load_trained_methods
    from biosae.methods.causal_variants import VARIANTS

    config = run_config(run_dir)
    layer, section, methods = config["activations"]["layer"], config["evaluate"], config["methods"]["names"]

    def load():
        inputs = run_evaluation_inputs(run_dir, layer, methods)
        trained = load_trained_methods(
            run_dir / layout.das_dir("", layer) if "das" in methods else None,
            run_dir / layout.topk_sae_dir("", layer) if "sae_unsupervised" in methods else None,
        )
        return inputs, trained

    load_seconds, (inputs, (trained, fit)) = seconds_of(load)

    def run(names, name) -> EvaluationTiming:
        started = time.perf_counter()
        samples = cell_samples(
            inputs.model,
            inputs.tokenizer,
            inputs.index,
            ordered_cells(inputs.index),
            section["max_prompts_per_cell"],
            config["seed"],
        )
        inputs.method_tests = evaluate_methods(
            samples,
            layer,
            inputs.activations,
            inputs.index,
            names,
            alphas=section["swap_alphas"],
            seed=config["seed"],
            answered_rule=answered_rules(inputs.index),
            fit=fit,
            **trained,
        )  # a method not in names is not built
        # a causal SAE is tested where the run trained it at this layer
        inputs.method_names = tuple(n for n in names if n not in VARIANTS or n in inputs.causal_saes)
        metrics = evaluate(inputs, section["max_prompts_per_cell"], section["swap_alphas"], config["seed"])
        tests = time.perf_counter() - started
        write_figures(
            metrics,
            workdir / name,
            run_dir / layout.lm_train_log(""),
            run_dir / layout.sae_file("", layer, "train_log.csv"),
        )
        # The methods named in the table are those the metrics hold, not those asked for.
        return EvaluationTiming(list(metrics["methods"]), tests, time.perf_counter() - started - tests)

    workdir.mkdir(parents=True, exist_ok=True)
    baseline = run(BASELINE_METHODS, "baseline")
    every_method = run(methods, "all")
    result = Evaluate(
        layer=layer,
        prompts_per_cell=section["max_prompts_per_cell"],
        load_seconds=load_seconds,
        baseline=baseline,
        every_method=every_method,
        source=str(run_dir),
    )
    say(
        f"[evaluate] layer {layer}: {'+'.join(BASELINE_METHODS)} {baseline.seconds:.1f} s, all methods "
        f"{every_method.seconds:.1f} s ({result.ratio:.2f}x; loading {load_seconds:.1f} s apart)"
    )
    return result
