rule dataset:
    input:
        dataset_inputs(),
    output:
        **{key: layout.dataset_file(key) for key in layout.DATASET_FILES},
    params:
        dataset=config["dataset"],
    log:
        layout.log("", "dataset"),
    benchmark:
        layout.benchmark("", "dataset")
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/biosae.yaml"
    script:
        "../workflow_scripts/dataset.py"
