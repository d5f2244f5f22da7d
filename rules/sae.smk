# One job per LM trains the supervised SAE of every layer of the profile at once, the layers
# stacked on a leading axis (biosae/sae/layer_axis.py): the SAE's step is overhead-bound, so the
# whole profile costs little more than one layer. Each layer's SAE is the one it would get alone.
# Like the activations, the layers are in the output names only (results/<lm>/sae/layer_<L>/),
# and the input is the activation index: its job writes every layer's file with it, and the
# script reads the file of each output's layer. A list of layer files as input would make
# dropping a layer from the profile a changed input set, and rerun every SAE and evaluate.


rule train_sae:
    input:
        index="results/{lmrun}activations/index.csv",
    output:
        cfg=expand("results/{{lmrun}}sae/layer_{layer}/cfg.json", layer=PROFILE_LAYERS),
        weights=expand("results/{{lmrun}}sae/layer_{layer}/sae.safetensors", layer=PROFILE_LAYERS),
        candidates=expand("results/{{lmrun}}sae/layer_{layer}/value_candidates.json", layer=PROFILE_LAYERS),
        log_csv=expand("results/{{lmrun}}sae/layer_{layer}/train_log.csv", layer=PROFILE_LAYERS),
    params:
        sae=config["sae"],
        seed=run_seed,
        checkpoint_dir="results/{lmrun}sae/checkpoint",
    threads: 1
    log:
        "logs/{lmrun}train_sae.log",
    benchmark:
        "benchmarks/{lmrun}train_sae.tsv"
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/biosae.yaml"
    script:
        "../workflow_scripts/train_sae.py"


use rule train_sae as untrained_sae with:
    input:
        index="results/{lmrun}baselines/untrained_lm/activations/index.csv",
    output:
        cfg=expand("results/{{lmrun}}baselines/untrained_lm/sae/layer_{layer}/cfg.json", layer=PROFILE_LAYERS),
        weights=expand(
            "results/{{lmrun}}baselines/untrained_lm/sae/layer_{layer}/sae.safetensors", layer=PROFILE_LAYERS
        ),
        candidates=expand(
            "results/{{lmrun}}baselines/untrained_lm/sae/layer_{layer}/value_candidates.json", layer=PROFILE_LAYERS
        ),
        log_csv=expand("results/{{lmrun}}baselines/untrained_lm/sae/layer_{layer}/train_log.csv", layer=PROFILE_LAYERS),
    params:
        sae=config["sae"],
        seed=run_seed,
        checkpoint_dir="results/{lmrun}baselines/untrained_lm/sae/checkpoint",
    priority: 10  # the untrained LM's chain is a critical path (rules/activations.smk says why)
    log:
        "logs/{lmrun}untrained_sae.log",
    benchmark:
        "benchmarks/{lmrun}untrained_sae.tsv"
