rule evaluate:
    input:
        unpack(extra_evaluation_inputs),
        unpack(causal_sae_inputs),
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
        evaluate=config["evaluate"],
        methods=run_methods,
        layer=run_layer,
        seed=run_seed,
    script:
        "../workflow_scripts/evaluate.py"
