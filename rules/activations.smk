# One job per LM: every layer of the profile from one forward pass per batch, one file per layer
# (a train_sae or evaluate job reads only its layer's), plus the index table they share. The
# layer list is in the output names, not in params, so that dropping a layer from the profile
# reruns nothing; adding one reruns the job (a file is missing).


rule activations:
    input:
        unpack(question_inputs),
        model=layout.lm_final("{lmrun}"),
    output:
        layers=per_layer(lambda layer: layout.activation_file("{lmrun}", layer)),
        index=layout.activation_index("{lmrun}"),
    log:
        layout.log("{lmrun}", "activations"),
    benchmark:
        layout.benchmark("{lmrun}", "activations")
    # the two-thread jobs after the LM go first: once a one-thread job runs beside nothing, a
    # two-thread one can't start, and one core idles
    priority: 30
    conda:
        "../envs/biosae.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        batch_size=config["activations"]["batch_size"],
        dtype=config["activations"]["dtype"],
    script:
        "../workflow_scripts/activations.py"


use rule activations as untrained_activations with:
    input:
        unpack(question_inputs),
        model=layout.untrained_lm("{lmrun}"),
    output:
        layers=per_layer(lambda layer: layout.activation_file("{lmrun}", layer, layout.UNTRAINED_LM)),
        index=layout.activation_index("{lmrun}", layout.UNTRAINED_LM),
    log:
        layout.log("{lmrun}", "untrained_activations"),
    benchmark:
        layout.benchmark("{lmrun}", "untrained_activations")
    priority: 10
    # one thread: on two cores a two-thread job waits until both are free, which leaves a core idle
    # while a one-thread SAE or method job runs; on one thread this pass runs beside them. The
    # untrained LM's chain and evaluate_methods are the two paths every evaluate waits for: each
    # gets a priority over the trained SAE, which is short.
    threads: 1


# The rows of evaluate.extra_questions, apart: the trainings read the index of the shipped rows
# only, so that a question file added to a finished run is scored by what is trained.
use rule activations as extra_activations with:
    input:
        unpack(extra_question_inputs),
        model=layout.lm_final("{lmrun}"),
    output:
        layers=per_layer(lambda layer: layout.extra_activation_file("{lmrun}", layer)),
        index=layout.extra_activation_index("{lmrun}"),
    log:
        layout.log("{lmrun}", "extra_activations"),
    benchmark:
        layout.benchmark("{lmrun}", "extra_activations")


use rule activations as untrained_extra_activations with:
    input:
        unpack(extra_question_inputs),
        model=layout.untrained_lm("{lmrun}"),
    output:
        layers=per_layer(lambda layer: layout.extra_activation_file("{lmrun}", layer, layout.UNTRAINED_LM)),
        index=layout.extra_activation_index("{lmrun}", layout.UNTRAINED_LM),
    log:
        layout.log("{lmrun}", "untrained_extra_activations"),
    benchmark:
        layout.benchmark("{lmrun}", "untrained_extra_activations")
    # one thread, as the shipped rows' untrained pass: it runs beside extra_lm_qa_accuracy, and
    # the new rows' two LM passes before scoring take the time of one
    threads: 1
