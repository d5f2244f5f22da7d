rule evaluate:
    input:
        unpack(causal_sae_inputs),
        unpack(last_block_inputs),
        model=lm_dir,
        qa_accuracy=lm_qa_accuracy,
        lm_log=lm_train_log,
        activations=activation_file,
        index=activation_index,
        sae_cfg=sae_file("cfg.json"),
        sae_weights=sae_file("sae.safetensors"),
        candidates=sae_file("value_candidates.json"),
        sae_log=sae_file("train_log.csv"),
        untrained_activations=untrained_activation_file,
        untrained_index=untrained_activation_index,
        untrained_sae_cfg=sae_file("cfg.json", layout.UNTRAINED_LM),
        untrained_sae_weights=sae_file("sae.safetensors", layout.UNTRAINED_LM),
        method_tests=method_tests_file,
        profile=profile_metrics,
    output:
        metrics=report(layout.eval_metrics("{run}"), caption="../report/metrics.rst", category="Evaluation"),
        summary=report(layout.eval_summary("{run}"), caption="../report/summary.rst", category="Evaluation"),
        figures=report(
            directory(layout.eval_figures("{run}")),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
    log:
        layout.log("{run}", "evaluate"),
    benchmark:
        layout.benchmark("{run}", "evaluate")
    conda:
        "../envs/biosae.yaml"
    # one thread: much of an evaluation is single-threaded (tables, figures, small edited passes),
    # so the profile's evaluations run two at a time on two cores in less wall time than one at a
    # time on both; a run of the seed's hook alone, with one evaluation, pays a little for it.
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        evaluate=shipped_evaluation_settings(),
        methods=run_methods,
        layer=run_layer,
        seed=run_seed,
    script:
        "../workflow_scripts/evaluate.py"


# New questions on a finished run (evaluate.extra_questions), every profile layer of one LM in one
# job: scored by what the run trained, into files of their own, so that adding a question file
# reruns no training and no shipped cell's test (biosae/evaluation/extra_questions.py).
rule score_extra_questions:
    input:
        unpack(extra_question_inputs),
        model=layout.lm_final("{lmrun}"),
        qa_accuracy=layout.lm_qa_accuracy("{lmrun}"),
        extra_qa_accuracy=layout.extra_qa_accuracy("{lmrun}"),
        index=layout.activation_index("{lmrun}"),
        untrained_index=layout.activation_index("{lmrun}", layout.UNTRAINED_LM),
        extra_index=layout.extra_activation_index("{lmrun}"),
        untrained_extra_index=layout.extra_activation_index("{lmrun}", layout.UNTRAINED_LM),
        metrics=lm_profile_metrics,
    output:
        scores=layout.extra_questions_metrics("{lmrun}"),
        summary=report(layout.extra_questions_summary("{lmrun}"), category="Evaluation"),
    log:
        layout.log("{lmrun}", "score_extra_questions"),
    benchmark:
        layout.benchmark("{lmrun}", "score_extra_questions")
    conda:
        "../envs/biosae.yaml"
    # two threads: it runs alone at the end of the rerun. Its cells are not evaluate's, so its
    # numbers need not be the one-thread job's to the last bit (a shipped question scored here
    # again gives the same accuracies, and log-probabilities within 1e-6)
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        evaluate=shipped_evaluation_settings(),
        methods=config["methods"]["names"],
        layers=PROFILE_LAYERS,
        seed=run_seed,
    script:
        "../workflow_scripts/score_extra_questions.py"
