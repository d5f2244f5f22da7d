# Path helpers and input functions shared by the stage files. The default run (config seed,
# activations.layer) writes to the flat paths of the README; the other runs of the layer profile
# and of other seeds nest under results/sweep/seed_<s>/[layer_<l>/]. The empty-or-nested prefix
# is a wildcard. Activations are per LM ({lmrun}), one file per layer of the profile.

from pathlib import Path

from biosae.lm.layers import block_count, profile_layers

DEFAULT_SEED = config["seed"]
DEFAULT_LAYER = config["activations"]["layer"]
PROFILE_LAYERS = profile_layers(config, block_count(config["model"]))


wildcard_constraints:
    lmrun=r"(sweep/seed_\d+/)?",
    run=r"(sweep/seed_\d+/layer_-?\d+/)?",


def lm_prefix(seed):
    return "" if seed == DEFAULT_SEED else f"sweep/seed_{seed}/"


def run_prefix(seed, layer):
    if (seed, layer) == (DEFAULT_SEED, DEFAULT_LAYER):
        return ""
    return f"sweep/seed_{seed}/layer_{layer}/"


import re

SEED_PATTERN = re.compile(r"seed_(\d+)")
LAYER_PATTERN = re.compile(r"layer_(-?\d+)")


def run_seed(wildcards):
    """The training seed a {run} or {lmrun} prefix stands for."""
    prefix = getattr(wildcards, "run", None) or getattr(wildcards, "lmrun", None) or ""
    match = SEED_PATTERN.search(prefix)
    return int(match.group(1)) if match else DEFAULT_SEED


def run_layer(wildcards):
    match = LAYER_PATTERN.search(wildcards.run)
    return int(match.group(1)) if match else DEFAULT_LAYER


def lm_checkpoint_dir(wildcards):
    """Resume state of a killed LM job: not an output, so Snakemake never deletes it."""
    return f"results/{wildcards.lmrun}lm/checkpoint"


def sae_file(name, lm_part=""):
    """Input function: file ``name`` of a (seed, layer) run's SAE, trained with its LM's other
    layers in one job (rules/sae.smk); ``lm_part`` "baselines/untrained_lm/" for the untrained LM's."""

    def path(wildcards):
        return f"results/{lm_prefix(run_seed(wildcards))}{lm_part}sae/layer_{run_layer(wildcards)}/{name}"

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
    return [f"results/{run_prefix(seed, layer)}eval/metrics.json" for seed, layer in sweep_combinations()]


def activation_file(wildcards):
    """A (seed, layer) run's activations: its layer's file of its LM's activations job."""
    return f"results/{lm_prefix(run_seed(wildcards))}activations/layer_{run_layer(wildcards)}.safetensors"


def activation_index(wildcards):
    return f"results/{lm_prefix(run_seed(wildcards))}activations/index.csv"


def untrained_activation_file(wildcards):
    prefix = lm_prefix(run_seed(wildcards))
    return f"results/{prefix}baselines/untrained_lm/activations/layer_{run_layer(wildcards)}.safetensors"


def untrained_activation_index(wildcards):
    return f"results/{lm_prefix(run_seed(wildcards))}baselines/untrained_lm/activations/index.csv"


def lm_dir(wildcards):
    return f"results/{lm_prefix(run_seed(wildcards))}lm/final"


def lm_qa_accuracy(wildcards):
    return f"results/{lm_prefix(run_seed(wildcards))}lm/qa_accuracy.json"


def lm_train_log(wildcards):
    return f"results/{lm_prefix(run_seed(wildcards))}lm/train_log.csv"


def untrained_lm_dir(wildcards):
    return f"results/{lm_prefix(run_seed(wildcards))}baselines/untrained_lm/model"


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
    """Every QA file whose rows get activations and are evaluated, each row's cell in its 'split'."""
    files = {
        "qa_train": "results/dataset/qa_train.jsonl",
        "qa_test": "results/dataset/qa_test.jsonl",
    }
    if config["evaluate"]["hard_questions"]:
        files["qa_hard"] = "results/dataset/qa_hard.jsonl"
    for index, path in enumerate(config["evaluate"]["extra_questions"]):
        files[f"extra_{index}"] = path
    return files


def all_targets():
    targets = ["results/lm/qa_accuracy.json", *sweep_metrics()]
    if is_sweep():
        targets.append("results/aggregate/summary.csv")
    return targets


def trained_method_inputs(wildcards):
    """The trained localization methods (only those listed in methods.names) of an LM, as the
    evaluate_methods job takes them: the files of the seed's hook, which every profile has; the job
    reads each other layer's beside them (rules/methods.smk)."""
    names = config["methods"]["names"]
    files = {}
    methods = f"results/{wildcards.lmrun}methods"
    layer = f"layer_{DEFAULT_LAYER}"
    if "das" in names:
        files["das_cfg"] = f"{methods}/das/{layer}/cfg.json"
        files["das_weights"] = f"{methods}/das/{layer}/das.safetensors"
        files["das_pairs"] = f"{methods}/das/{layer}/train_pairs.csv"
        files["das_log"] = f"{methods}/das/{layer}/train_log.csv"
    if "sae_unsupervised" in names:
        files["unsupervised_sae_cfg"] = f"{methods}/sae_unsupervised/{layer}/cfg.json"
        files["unsupervised_sae_weights"] = f"{methods}/sae_unsupervised/{layer}/sae.safetensors"
    return files


def method_tests_file(wildcards):
    """A (seed, layer) run's tests of every method but the SAE: its layer's file of its LM's evaluate_methods job."""
    return f"results/{lm_prefix(run_seed(wildcards))}methods/tests/layer_{run_layer(wildcards)}.json"


def profile_metrics(wildcards):
    """The default run's summary opens with the layer profile: every other layer of the default seed."""
    if wildcards.run != "":
        return []
    return [f"results/{run_prefix(seed, layer)}eval/metrics.json" for seed, layer in sweep_combinations()
            if seed == DEFAULT_SEED and layer != DEFAULT_LAYER]
