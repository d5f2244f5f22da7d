rule aggregate:
    input:
        metrics=sweep_metrics(),
        model="results/lm/final",
    output:
        summary_csv=report("results/aggregate/summary.csv", caption="../report/aggregate_csv.rst", category="Sweep"),
        per_run_csv="results/aggregate/per_run.csv",
        summary=report("results/aggregate/summary.md", caption="../report/aggregate_summary.rst", category="Sweep"),
        figures=report(
            directory("results/aggregate/figures"),
            patterns=["{name}.png"],
            caption="../report/aggregate_figures.rst",
            category="Sweep",
        ),
    params:
        sweep=config["sweep"],
        runs=sweep_runs(),
    log:
        "logs/aggregate.log",
    benchmark:
        "benchmarks/aggregate.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/biosae.yaml"
    script:
        "../workflow_scripts/aggregate.py"
