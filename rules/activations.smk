rule activations:
    input:
        unpack(question_inputs),
        model=lm_dir,
    output:
        activations="results/{run}activations/activations.safetensors",
        index="results/{run}activations/index.csv",
    params:
        layer=run_layer,
        batch_size=config["activations"]["batch_size"],
    threads: 2
    log:
        "logs/{run}activations.log",
    benchmark:
        "benchmarks/{run}activations.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/biosae.yaml"
    script:
        "../workflow_scripts/activations.py"


use rule activations as untrained_activations with:
    input:
        unpack(question_inputs),
        model=untrained_lm_dir,
    output:
        activations="results/{run}baselines/untrained_lm/activations/activations.safetensors",
        index="results/{run}baselines/untrained_lm/activations/index.csv",
    log:
        "logs/{run}untrained_activations.log",
    benchmark:
        "benchmarks/{run}untrained_activations.tsv"
