rule train_lm:
    input:
        corpus=layout.dataset_file("corpus"),
        qa_train=layout.dataset_file("qa_train"),
        qa_test=layout.dataset_file("qa_test"),
    output:
        model=directory(layout.lm_final("{lmrun}")),
        log_csv=layout.lm_train_log("{lmrun}"),
        summary=layout.lm_train_summary("{lmrun}"),
    log:
        layout.log("{lmrun}", "train_lm"),
    benchmark:
        layout.benchmark("{lmrun}", "train_lm")
    conda:
        "../envs/biosae.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        model=config["model"],
        training=LM_TRAINING,
        seed=run_seed,
        checkpoint_dir=lm_checkpoint_dir,
    script:
        "../workflow_scripts/train_lm.py"


rule lm_qa_accuracy:
    input:
        unpack(question_inputs),
        model=layout.lm_final("{lmrun}"),
    output:
        layout.lm_qa_accuracy("{lmrun}"),
    log:
        layout.log("{lmrun}", "lm_qa_accuracy"),
    benchmark:
        layout.benchmark("{lmrun}", "lm_qa_accuracy")
    priority: 30  # before the one-thread jobs (rules/activations.smk says why)
    conda:
        "../envs/biosae.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        batch_size=config["activations"]["batch_size"],
    script:
        "../workflow_scripts/lm_qa_accuracy.py"


use rule lm_qa_accuracy as extra_lm_qa_accuracy with:
    input:
        unpack(extra_question_inputs),
        model=layout.lm_final("{lmrun}"),
    output:
        layout.extra_qa_accuracy("{lmrun}"),
    log:
        layout.log("{lmrun}", "extra_lm_qa_accuracy"),
    benchmark:
        layout.benchmark("{lmrun}", "extra_lm_qa_accuracy")
    # one thread: it runs beside untrained_extra_activations (rules/activations.smk)
    threads: 1


rule untrained_lm:
    input:
        model=layout.lm_final("{lmrun}"),
    output:
        model=directory(layout.untrained_lm("{lmrun}")),
    log:
        layout.log("{lmrun}", "untrained_lm"),
    benchmark:
        layout.benchmark("{lmrun}", "untrained_lm")
    priority: 10  # the untrained LM's chain is a critical path (rules/activations.smk says why)
    conda:
        "../envs/biosae.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        seed=run_seed,
    script:
        "../workflow_scripts/untrained_lm.py"
