rule train_lm:
    input:
        corpus="results/dataset/lm_corpus.jsonl",
        qa_train="results/dataset/qa_train.jsonl",
        qa_test="results/dataset/qa_test.jsonl",
    output:
        model=directory("results/{lmrun}lm/final"),
        log_csv="results/{lmrun}lm/train_log.csv",
        summary="results/{lmrun}lm/train_summary.json",
    params:
        model=config["model"],
        training=config["training"],
        seed=run_seed,
        checkpoint_dir=lm_checkpoint_dir,
    threads: 2
    log:
        "logs/{lmrun}train_lm.log",
    benchmark:
        "benchmarks/{lmrun}train_lm.tsv"
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "../envs/biosae.yaml"
    script:
        "../workflow_scripts/train_lm.py"


rule lm_qa_accuracy:
    input:
        unpack(question_inputs),
        model="results/{lmrun}lm/final",
    output:
        "results/{lmrun}lm/qa_accuracy.json",
    params:
        batch_size=config["activations"]["batch_size"],
    threads: 2
    priority: 30  # before the one-thread jobs (rules/activations.smk says why)
    log:
        "logs/{lmrun}lm_qa_accuracy.log",
    benchmark:
        "benchmarks/{lmrun}lm_qa_accuracy.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/biosae.yaml"
    script:
        "../workflow_scripts/lm_qa_accuracy.py"


rule untrained_lm:
    input:
        model="results/{lmrun}lm/final",
    output:
        model=directory("results/{lmrun}baselines/untrained_lm/model"),
    params:
        seed=run_seed,
    priority: 10  # the untrained LM's chain is a critical path (rules/activations.smk says why)
    log:
        "logs/{lmrun}untrained_lm.log",
    benchmark:
        "benchmarks/{lmrun}untrained_lm.tsv"
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../envs/biosae.yaml"
    script:
        "../workflow_scripts/untrained_lm.py"
