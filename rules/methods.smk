# Localization methods that need a training job of their own (biosae/methods/), and the job that
# tests every method but the supervised SAE: changing a method's settings reruns only its training,
# evaluate_methods and evaluate. DiffMean, the probe and the random control are fitted inside
# evaluate_methods (milliseconds).


# One job per LM trains DAS at every profile layer, one layer after another: the LM, the pairs
# and their prompt caches (which do not depend on the layer) are loaded and built once. Its
# input is the activation index, as for the SAEs (rules/sae.smk says why).
rule train_das:
    input:
        model=layout.lm_final("{lmrun}"),
        index=layout.activation_index("{lmrun}"),
    output:
        cfg=per_layer(lambda layer: layout.das_file("{lmrun}", layer, "cfg.json")),
        weights=per_layer(lambda layer: layout.das_file("{lmrun}", layer, "das.safetensors")),
        log_csv=per_layer(lambda layer: layout.das_file("{lmrun}", layer, "train_log.csv")),
        pairs=per_layer(lambda layer: layout.das_file("{lmrun}", layer, "train_pairs.csv")),
    log:
        layout.log("{lmrun}", "train_das"),
    benchmark:
        layout.benchmark("{lmrun}", "train_das")
    # the critical path of the default run: train_das and train_unsupervised_sae feed
    # evaluate_methods, the longest job after the LM, which every evaluate waits for
    priority: 20
    conda:
        "../envs/biosae.yaml"
    # one thread: a multi-threaded BLAS may reduce in another order from one process to the next,
    # and DAS's gradient steps would carry that into its subspace (local and SLURM runs must agree)
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        das=config["methods"]["das"],
        seed=run_seed,
        max_prompts_per_cell=config["evaluate"]["max_prompts_per_cell"],
    script:
        "../workflow_scripts/train_das.py"


# Like the supervised SAE (rules/sae.smk), one job per LM trains every profile layer's TopK SAE
# at once, and its input is the activation index, for the same reason.
rule train_unsupervised_sae:
    input:
        index=layout.activation_index("{lmrun}"),
    output:
        cfg=per_layer(lambda layer: layout.topk_sae_file("{lmrun}", layer, "cfg.json")),
        weights=per_layer(lambda layer: layout.topk_sae_file("{lmrun}", layer, "sae.safetensors")),
    log:
        layout.log("{lmrun}", "train_unsupervised_sae"),
    benchmark:
        layout.benchmark("{lmrun}", "train_unsupervised_sae")
    priority: 20  # critical path (train_das says why)
    conda:
        "../envs/biosae.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        sae_unsupervised=config["methods"]["sae_unsupervised"],
        seed=run_seed,
    script:
        "../workflow_scripts/train_unsupervised_sae.py"


# One job per LM fine-tunes the supervised SAE of every profile layer with the interchange loss
# (sae_slot_causal), and its controls at their one layer: the LM and the pairs' prompt caches are
# built once for every layer and variant, as for DAS. Its inputs are the activation index (as the
# SAE's) and the trained SAEs of the seed's hook; each other layer's lies beside it.
# (no variant listed in methods.names: no such job)
if CAUSAL_SAE_LAYERS:

    rule train_causal_sae:
        input:
            model=layout.lm_final("{lmrun}"),
            index=layout.activation_index("{lmrun}"),
            sae_weights=layout.sae_file("{lmrun}", DEFAULT_LAYER, "sae.safetensors"),
            sae_cfg=layout.sae_file("{lmrun}", DEFAULT_LAYER, "cfg.json"),
        output:
            weights=causal_sae_outputs("sae.safetensors"),
            cfg=causal_sae_outputs("cfg.json"),
            selection=causal_sae_outputs("selection.json"),
            log_csv=causal_sae_outputs("train_log.csv"),
            pairs=causal_sae_outputs("train_pairs.csv"),
        log:
            layout.log("{lmrun}", "train_causal_sae"),
        benchmark:
            layout.benchmark("{lmrun}", "train_causal_sae")
        priority: 20  # critical path (train_das says why)
        conda:
            "../envs/biosae.yaml"
        threads: 1  # as train_das: gradient steps through the LM agree across machines at one thread
        resources:
            mem_mb=4000,
            runtime=60,
        params:
            causal=config["methods"]["sae_slot_causal"],
            sae=config["sae"],
            seed=run_seed,
            max_prompts_per_cell=config["evaluate"]["max_prompts_per_cell"],
        script:
            "../workflow_scripts/train_causal_sae.py"


# Every method but the supervised SAE, tested at every layer of the profile in one job per LM
# (biosae/evaluation/method_tests.py), one file per layer that evaluate joins into metrics.json.
# None of these tests depends on the SAE, so changing the SAE's settings reruns the SAE jobs and
# evaluate, not this job. The LM and each cell's causal sample, prompt cache and interchange pairs
# don't depend on the layer either: they are loaded and built once for every layer and method.
# Like the trainings above, the inputs are the activation index and the trained methods' files of
# the seed's hook (in every profile); the job reads each other layer's beside them, so that
# dropping a layer from the profile reruns nothing.
rule evaluate_methods:
    input:
        unpack(trained_method_inputs),
        model=layout.lm_final("{lmrun}"),
        index=layout.activation_index("{lmrun}"),
    output:
        per_layer(lambda layer: layout.method_tests("{lmrun}", layer)),
    log:
        layout.log("{lmrun}", "evaluate_methods"),
    benchmark:
        layout.benchmark("{lmrun}", "evaluate_methods")
    priority: 20  # critical path (train_das says why)
    conda:
        "../envs/biosae.yaml"
    # one thread, as evaluate: the same edited passes give the same numbers in both jobs
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        evaluate=shipped_evaluation_settings(),
        methods=config["methods"]["names"],
        seed=run_seed,
    script:
        "../workflow_scripts/evaluate_methods.py"
