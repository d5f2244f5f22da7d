rule dataset:
    input:
        dataset_inputs(),
    output:
        **{key: layout.dataset_file(key) for key in layout.DATASET_FILES},
    log:
        layout.log("", "dataset"),
    benchmark:
        layout.benchmark("", "dataset")
    conda:
        "../envs/biosae.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        dataset=config["dataset"],
    script:
        "../workflow_scripts/dataset.py"
