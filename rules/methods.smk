# Localization methods that need a training job of their own (biosae/methods/): changing their
# settings reruns only them and evaluate. DiffMean, the probe and the random control are fitted
# inside evaluate (milliseconds).


rule train_das:
    input:
        model=lm_dir,
        activations=activation_file,
        index=activation_index,
    output:
        cfg="results/{run}methods/das/cfg.json",
        weights="results/{run}methods/das/das.safetensors",
        log_csv="results/{run}methods/das/train_log.csv",
        pairs="results/{run}methods/das/train_pairs.csv",
    params:
        das=config["methods"]["das"],
        seed=run_seed,
        layer=run_layer,
        max_prompts_per_cell=config["evaluate"]["max_prompts_per_cell"],
    # one thread: a multi-threaded BLAS may reduce in another order from one process to the next,
    # and DAS's gradient steps would carry that into its subspace (local and SLURM runs must agree)
    threads: 1
    log:
        "logs/{run}train_das.log",
    benchmark:
        "benchmarks/{run}train_das.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/biosae.yaml"
    script:
        "../workflow_scripts/train_das.py"


rule train_unsupervised_sae:
    input:
        activations=activation_file,
        index=activation_index,
    output:
        cfg="results/{run}methods/sae_unsupervised/cfg.json",
        weights="results/{run}methods/sae_unsupervised/sae.safetensors",
    params:
        sae_unsupervised=config["methods"]["sae_unsupervised"],
        seed=run_seed,
    threads: 1
    log:
        "logs/{run}train_unsupervised_sae.log",
    benchmark:
        "benchmarks/{run}train_unsupervised_sae.tsv"
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/biosae.yaml"
    script:
        "../workflow_scripts/train_unsupervised_sae.py"
