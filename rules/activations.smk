# One job per LM: every layer of the profile from one forward pass per batch, one file per layer
# (a train_sae or evaluate job reads only its layer's), plus the index table they share. The
# layer list is in the output names, not in params, so that dropping a layer from the profile
# reruns nothing; adding one reruns the job (a file is missing).


rule activations:
    input:
        unpack(question_inputs),
        model="results/{lmrun}lm/final",
    output:
        layers=expand("results/{{lmrun}}activations/layer_{layer}.safetensors", layer=PROFILE_LAYERS),
        index="results/{lmrun}activations/index.csv",
    params:
        batch_size=config["activations"]["batch_size"],
        dtype=config["activations"]["dtype"],
    threads: 2
    # the two-thread jobs after the LM go first: once a one-thread job runs beside nothing, a
    # two-thread one can't start, and one core idles (with the untrained LM's chain first, 2 min)
    priority: 30
    log:
        "logs/{lmrun}activations.log",
    benchmark:
        "benchmarks/{lmrun}activations.tsv"
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
        model="results/{lmrun}baselines/untrained_lm/model",
    output:
        layers=expand(
            "results/{{lmrun}}baselines/untrained_lm/activations/layer_{layer}.safetensors", layer=PROFILE_LAYERS
        ),
        index="results/{lmrun}baselines/untrained_lm/activations/index.csv",
    # one thread: on two cores a two-thread job waits until both are free, and the one-thread SAE
    # and method jobs left one idle (in the default run, 38 s while the TopK SAE trained); this
    # pass now runs beside them. The untrained LM's chain and evaluate_methods are the two paths
    # every evaluate waits for: each gets a priority over the trained SAE, which is short.
    threads: 1
    priority: 10
    log:
        "logs/{lmrun}untrained_activations.log",
    benchmark:
        "benchmarks/{lmrun}untrained_activations.tsv"
