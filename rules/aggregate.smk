rule aggregate:
    input:
        metrics=sweep_metrics(),
        model=layout.lm_final(""),
    output:
        summary_csv=report(
            layout.aggregate_file("summary.csv"), caption="../report/aggregate_csv.rst", category="Sweep"
        ),
        per_run_csv=layout.aggregate_file("per_run.csv"),
        summary=report(layout.aggregate_file("summary.md"), caption="../report/aggregate_summary.rst", category="Sweep"),
        figures=report(
            directory(layout.aggregate_file("figures")),
            patterns=["{name}.png"],
            caption="../report/aggregate_figures.rst",
            category="Sweep",
        ),
    log:
        layout.log("", "aggregate"),
    benchmark:
        layout.benchmark("", "aggregate")
    conda:
        "../envs/biosae.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        sweep=config["sweep"],
        runs=sweep_runs(),
    script:
        "../workflow_scripts/aggregate.py"
