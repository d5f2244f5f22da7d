# Input functions shared by the stage files. Every path comes from biosae/layout.py: the default
# run (config seed, activations.layer) at the flat paths, the other runs of the layer profile and
# of other seeds under a prefix, which is a wildcard ({lmrun} per LM, {run} per seed and layer).

from pathlib import Path

from biosae import layout
from biosae.lm.layers import block_count, profile_layers
from biosae.methods.causal_variants import VARIANTS as CAUSAL_VARIANTS
from biosae.methods.causal_variants import variant_layers

DEFAULT_SEED = config["seed"]
DEFAULT_LAYER = config["activations"]["layer"]
N_BLOCKS = block_count(config["model"])
PROFILE_LAYERS = profile_layers(config, N_BLOCKS)
# LM training's settings without training.device: the device says where jobs run, like their
# threads, and each job reads it from its config (workflow_scripts/_common.py), so that switching
# it on a finished run reruns nothing.
LM_TRAINING = {key: value for key, value in config["training"].items() if key != "device"}
# method -> the layers the causal SAE's variants listed in methods.names are trained at (its
# controls at one layer only, and not at all where the profile lacks it: biosae/methods/causal_variants.py)
CAUSAL_SAE_LAYERS = variant_layers(
    config["methods"]["names"],
    PROFILE_LAYERS,
    config["methods"]["sae_slot_causal"]["control_layer"],
)


wildcard_constraints:
    lmrun=layout.LM_PREFIX_PATTERN,
    run=layout.RUN_PREFIX_PATTERN,


def lm_prefix(seed):
    return layout.lm_prefix(seed, DEFAULT_SEED)


def run_prefix(seed, layer):
    return layout.run_prefix(seed, layer, DEFAULT_SEED, DEFAULT_LAYER)


def per_layer(path_of_layer):
    """A job's output for every layer of the profile: ``path_of_layer(layer)`` of each."""
    return [path_of_layer(layer) for layer in PROFILE_LAYERS]


def run_seed(wildcards):
    """The training seed a {run} or {lmrun} prefix stands for."""
    prefix = getattr(wildcards, "run", None) or getattr(wildcards, "lmrun", None) or ""
    return layout.seed_of(prefix, DEFAULT_SEED)


def run_layer(wildcards):
    return layout.layer_of(wildcards.run, DEFAULT_LAYER)


def run_lm(wildcards):
    """The LM prefix of a (seed, layer) run."""
    return lm_prefix(run_seed(wildcards))


def lm_checkpoint_dir(wildcards):
    return layout.lm_checkpoint(wildcards.lmrun)


def sae_file(name, lm=layout.TRAINED_LM):
    """Input function: file ``name`` of a (seed, layer) run's SAE, trained with its LM's other
    layers in one job (rules/sae.smk); ``lm`` layout.UNTRAINED_LM for the untrained LM's."""

    def path(wildcards):
        return layout.sae_file(run_lm(wildcards), run_layer(wildcards), name, lm)

    return path


def question_inputs(wildcards):
    return question_files()


def sweep_combinations():
    """Every (seed, layer) run: the top-level seed and each sweep seed, at every layer of the profile."""
    seeds = sorted({DEFAULT_SEED, *config["sweep"]["seeds"]})
    return [(seed, layer) for seed in seeds for layer in PROFILE_LAYERS]


def is_sweep():
    return len(sweep_combinations()) > 1


def sweep_runs():
    """Every (seed, layer) run, the default's included, in the order of sweep_metrics()."""
    return [{"seed": seed, "layer": layer} for seed, layer in sweep_combinations()]


def sweep_metrics():
    return [layout.eval_metrics(run_prefix(seed, layer)) for seed, layer in sweep_combinations()]


def activation_file(wildcards):
    """A (seed, layer) run's activations: its layer's file of its LM's activations job."""
    return layout.activation_file(run_lm(wildcards), run_layer(wildcards))


def activation_index(wildcards):
    return layout.activation_index(run_lm(wildcards))


def last_block_inputs(wildcards):
    """The last block's activations for a lower layer's lens read-out, where the profile has them."""
    if run_layer(wildcards) == -1 or -1 not in PROFILE_LAYERS:
        return {}
    return {"last_block_activations": layout.activation_file(run_lm(wildcards), -1)}


def untrained_activation_file(wildcards):
    return layout.activation_file(run_lm(wildcards), run_layer(wildcards), layout.UNTRAINED_LM)


def untrained_activation_index(wildcards):
    return layout.activation_index(run_lm(wildcards), layout.UNTRAINED_LM)


def lm_dir(wildcards):
    return layout.lm_final(run_lm(wildcards))


def lm_qa_accuracy(wildcards):
    return layout.lm_qa_accuracy(run_lm(wildcards))


def lm_train_log(wildcards):
    return layout.lm_train_log(run_lm(wildcards))


def data_files(directory, pattern):
    """Files of a data directory, so that editing a pool or template reruns the dataset."""
    return sorted(str(path) for path in Path(directory).glob(pattern))


def dataset_inputs():
    section = config["dataset"]
    return (
        data_files(section["entities_dir"], "*.t[xs][tv]")
        + data_files(section["templates_dir"], "*.txt")
        + data_files(section["qa_templates_dir"], "*.txt")
        + data_files(section["qa_templates_dir"], "hard/*.txt")
    )


def question_files():
    """The shipped QA files, whose rows get activations that the trainings read and are evaluated,
    each row's cell in its 'split'."""
    files = {"qa_train": layout.dataset_file("qa_train"), "qa_test": layout.dataset_file("qa_test")}
    if config["evaluate"]["hard_questions"]:
        files["qa_hard"] = layout.dataset_file("qa_hard")
    return files


def extra_question_files():
    """The user's question files (evaluate.extra_questions), a cell each: activations of their own,
    scored by the trained SAEs and methods, so that adding one retrains nothing."""
    return {f"extra_{index}": path for index, path in enumerate(config["evaluate"]["extra_questions"])}


def shipped_evaluation_settings():
    """The evaluate section without its extra_questions: the shipped cells' tests don't depend on
    that list, so adding a question file to a finished run reruns none of them."""
    return {key: value for key, value in config["evaluate"].items() if key != "extra_questions"}


def extra_question_inputs(wildcards):
    return extra_question_files()


def lm_profile_metrics(wildcards):
    """metrics.json of every profile layer of an LM's seed (the alphas each train cell picked)."""
    seed = run_seed(wildcards)
    return [layout.eval_metrics(run_prefix(seed, layer)) for layer in PROFILE_LAYERS]


def run_targets():
    """The files this invocation is asked to make: rule all's inputs, or the files named on the
    command line (Snakemake's DAG knows them; an empty list where it does not)."""
    return getattr(getattr(workflow, "dag", None), "derived_targetfiles", None) or []


def all_targets():
    targets = [layout.lm_qa_accuracy(""), *sweep_metrics()]
    if is_sweep():
        targets.append(layout.aggregate_file("summary.csv"))
    if extra_question_files():
        seeds = sorted({DEFAULT_SEED, *config["sweep"]["seeds"]})
        targets += [layout.extra_questions_summary(lm_prefix(seed)) for seed in seeds]
    return targets


def trained_method_inputs(wildcards):
    """The trained localization methods (only those listed in methods.names) of an LM, as the
    evaluate_methods job takes them: the files of the seed's hook, which every profile has; the job
    reads each other layer's beside them (rules/methods.smk)."""
    names = config["methods"]["names"]
    files = {}
    lmrun = wildcards.lmrun
    if "das" in names:
        files["das_cfg"] = layout.das_file(lmrun, DEFAULT_LAYER, "cfg.json")
        files["das_weights"] = layout.das_file(lmrun, DEFAULT_LAYER, "das.safetensors")
        files["das_pairs"] = layout.das_file(lmrun, DEFAULT_LAYER, "train_pairs.csv")
        files["das_log"] = layout.das_file(lmrun, DEFAULT_LAYER, "train_log.csv")
    if "sae_unsupervised" in names:
        files["unsupervised_sae_cfg"] = layout.topk_sae_file(lmrun, DEFAULT_LAYER, "cfg.json")
        files["unsupervised_sae_weights"] = layout.topk_sae_file(lmrun, DEFAULT_LAYER, "sae.safetensors")
    return files


def causal_sae_outputs(filename):
    """The train_causal_sae job's ``filename`` of every variant and layer it trains."""
    return [
        layout.causal_sae_file("{lmrun}", layer, method, filename)
        for method, layers in CAUSAL_SAE_LAYERS.items()
        for layer in layers
    ]


def causal_sae_inputs(wildcards):
    """A (seed, layer) run's SAEs fine-tuned from its SAE (biosae/methods/sae_slot_causal.py), those
    trained at its layer: evaluate tests them beside the SAE."""
    lmrun, layer = run_lm(wildcards), run_layer(wildcards)
    files = {}
    for method, layers in CAUSAL_SAE_LAYERS.items():
        if layer in layers:
            for key, name in (("causal_weights", "sae.safetensors"), ("causal_selection", "selection.json")):
                files[f"{method}_{key}"] = layout.causal_sae_file(lmrun, layer, method, name)
            files[f"{method}_causal_pairs"] = layout.causal_sae_file(lmrun, layer, method, "train_pairs.csv")
    return files


def methods_at_layer(layer):
    """methods.names less the causal SAE's controls where they are not trained (evaluate's and
    evaluate_methods' list at ``layer``)."""
    return [
        name
        for name in config["methods"]["names"]
        if name not in CAUSAL_VARIANTS or layer in CAUSAL_SAE_LAYERS.get(name, [])
    ]


def run_methods(wildcards):
    return methods_at_layer(run_layer(wildcards))


def method_tests_file(wildcards):
    """A (seed, layer) run's tests of every method but the SAE: its layer's file of its LM's evaluate_methods job."""
    return layout.method_tests(run_lm(wildcards), run_layer(wildcards))


def profile_metrics(wildcards):
    """The default run's summary opens with the layer profile: every other layer of the default seed."""
    if wildcards.run != "":
        return []
    return [
        layout.eval_metrics(run_prefix(seed, layer))
        for seed, layer in sweep_combinations()
        if seed == DEFAULT_SEED and layer != DEFAULT_LAYER
    ]
