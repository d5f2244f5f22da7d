rule train_sae:
    input:
        activations=activation_file,
        index=activation_index,
    output:
        cfg="results/{run}sae/cfg.json",
        weights="results/{run}sae/sae.safetensors",
        candidates="results/{run}sae/value_candidates.json",
        log_csv="results/{run}sae/train_log.csv",
    params:
        sae=config["sae"],
        seed=run_seed,
        checkpoint_dir=sae_checkpoint_dir,
    threads: 1
    log:
        "logs/{run}train_sae.log",
    benchmark:
        "benchmarks/{run}train_sae.tsv"
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/biosae.yaml"
    script:
        "../workflow_scripts/train_sae.py"


use rule train_sae as untrained_sae with:
    input:
        activations=untrained_activation_file,
        index=untrained_activation_index,
    output:
        cfg="results/{run}baselines/untrained_lm/sae/cfg.json",
        weights="results/{run}baselines/untrained_lm/sae/sae.safetensors",
        candidates="results/{run}baselines/untrained_lm/sae/value_candidates.json",
        log_csv="results/{run}baselines/untrained_lm/sae/train_log.csv",
    params:
        sae=config["sae"],
        seed=run_seed,
        checkpoint_dir=untrained_sae_checkpoint_dir,
    log:
        "logs/{run}untrained_sae.log",
    benchmark:
        "benchmarks/{run}untrained_sae.tsv"
