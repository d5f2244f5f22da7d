# One job per LM trains the supervised SAE of every layer of the profile at once, the layers
# stacked on a leading axis (biosae/sae/layer_axis.py): the SAE's step is overhead-bound, so the
# whole profile costs little more than one layer. Each layer's SAE is the one it would get alone.
# Like the activations, the layers are in the output names only (biosae/layout.py: sae_dir),
# and the input is the activation index: its job writes every layer's file with it, and the
# script reads the file of each output's layer. A list of layer files as input would make
# dropping a layer from the profile a changed input set, and rerun every SAE and evaluate.


rule train_sae:
    input:
        index=layout.activation_index("{lmrun}"),
    output:
        cfg=per_layer(lambda layer: layout.sae_file("{lmrun}", layer, "cfg.json")),
        weights=per_layer(lambda layer: layout.sae_file("{lmrun}", layer, "sae.safetensors")),
        candidates=per_layer(lambda layer: layout.sae_file("{lmrun}", layer, "value_candidates.json")),
        log_csv=per_layer(lambda layer: layout.sae_file("{lmrun}", layer, "train_log.csv")),
    log:
        layout.log("{lmrun}", "train_sae"),
    benchmark:
        layout.benchmark("{lmrun}", "train_sae")
    conda:
        "../envs/biosae.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        sae=config["sae"],
        seed=run_seed,
        checkpoint_dir=layout.sae_checkpoint("{lmrun}"),
    script:
        "../workflow_scripts/train_sae.py"


use rule train_sae as untrained_sae with:
    input:
        index=layout.activation_index("{lmrun}", layout.UNTRAINED_LM),
    output:
        cfg=per_layer(lambda layer: layout.sae_file("{lmrun}", layer, "cfg.json", layout.UNTRAINED_LM)),
        weights=per_layer(lambda layer: layout.sae_file("{lmrun}", layer, "sae.safetensors", layout.UNTRAINED_LM)),
        candidates=per_layer(
            lambda layer: layout.sae_file("{lmrun}", layer, "value_candidates.json", layout.UNTRAINED_LM)
        ),
        log_csv=per_layer(lambda layer: layout.sae_file("{lmrun}", layer, "train_log.csv", layout.UNTRAINED_LM)),
    log:
        layout.log("{lmrun}", "untrained_sae"),
    benchmark:
        layout.benchmark("{lmrun}", "untrained_sae")
    priority: 10  # the untrained LM's chain is a critical path (rules/activations.smk says why)
    params:
        sae=config["sae"],
        seed=run_seed,
        checkpoint_dir=layout.sae_checkpoint("{lmrun}", layout.UNTRAINED_LM),
