"""Where a run's files lie: every path under ``results/``, ``logs/`` and ``benchmarks/``, relative
to the run's working directory, written here once. The rules (rules/*.smk), the workflow scripts,
the bench and the question study take their paths from these functions.

A run is one training seed (its LM) at one hook layer. The default run (the config's ``seed`` at
``activations.layer``, the seed's hook) writes to the flat paths; the other runs nest under
``sweep/seed_<s>/`` (another seed's LM) and ``sweep/seed_<s>/layer_<l>/`` (another layer's
evaluation). A path function takes that prefix as a string:

- ``lmrun``: the LM's prefix, ``""`` for the default seed's LM or ``"sweep/seed_<s>/"``
  (:func:`lm_prefix`); everything trained or collected once per LM hangs below it;
- ``run``: a (seed, layer) run's prefix, ``""`` for the default run or
  ``"sweep/seed_<s>/layer_<l>/"`` (:func:`run_prefix`); its evaluation hangs below it.

A rule passes the Snakemake wildcard itself (``lm_final("{lmrun}")`` is the pattern
``results/{lmrun}lm/final``); anything else passes a concrete prefix (``lm_final("")`` is the
default LM's directory). Each profile layer's files of an LM lie in ``layer_<L>`` names, so that
the layer list is in the file names and nowhere in a job's parameters.

Within an LM's prefix, the untrained baseline (same architecture and tokenizer, random weights)
has the trained LM's activations and SAE layout again below ``baselines/untrained_lm/``: the
functions that take ``lm`` give the trained LM's files for :data:`TRAINED_LM` and the untrained
one's for :data:`UNTRAINED_LM`.

This module is plain Python (no Snakemake), so that the bench and the studies read a finished run
with the same paths the rules wrote it with.
"""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = "results"
LOGS = "logs"
BENCHMARKS = "benchmarks"

# Snakemake wildcard constraints of the two prefixes (rules/common.smk)
LM_PREFIX_PATTERN = r"(sweep/seed_\d+/)?"
RUN_PREFIX_PATTERN = r"(sweep/seed_\d+/layer_-?\d+/)?"

TRAINED_LM = ""
UNTRAINED_LM = "baselines/untrained_lm/"

_SEED = re.compile(r"seed_(\d+)")
_LAYER = re.compile(r"layer_(-?\d+)")


# ------------------------------------------------------------------------------------------------
# Prefixes


def sweep_lm_prefix(seed: int | str) -> str:
    """The prefix of seed ``seed``'s LM when it is not the default seed's."""
    return f"sweep/seed_{seed}/"


def sweep_run_prefix(seed: int | str, layer: int | str) -> str:
    """The prefix of the (seed, layer) run when it is not the default run."""
    return f"{sweep_lm_prefix(seed)}layer_{layer}/"


def lm_prefix(seed: int, default_seed: int) -> str:
    """Seed ``seed``'s LM prefix: ``""`` for the default seed."""
    return "" if seed == default_seed else sweep_lm_prefix(seed)


def run_prefix(seed: int, layer: int, default_seed: int, default_layer: int) -> str:
    """The (seed, layer) run's prefix: ``""`` for the default run (the default seed at its hook)."""
    return "" if (seed, layer) == (default_seed, default_layer) else sweep_run_prefix(seed, layer)


def seed_of(path: str | Path, default: int | None = None) -> int | None:
    """The seed a prefix or path names (``seed_<s>``), or ``default`` for the flat paths."""
    match = _SEED.search(str(path))
    return int(match.group(1)) if match else default


def layer_of(path: str | Path, default: int | None = None) -> int | None:
    """The layer a prefix or path names (the last ``layer_<L>`` in it), or ``default``."""
    matches = _LAYER.findall(str(path))
    return int(matches[-1]) if matches else default


def layer_name(layer: int | str) -> str:
    """A profile layer's name in file and directory names (``layer_<L>``)."""
    return f"layer_{layer}"


def log(prefix: str, rule: str) -> str:
    """A job's log: ``logs/<prefix><rule>.log``."""
    return f"{LOGS}/{prefix}{rule}.log"


def benchmark(prefix: str, rule: str) -> str:
    """A job's Snakemake benchmark (wall seconds ``s``, peak memory ``max_rss``, ...):
    ``benchmarks/<prefix><rule>.tsv``; the bench reads them."""
    return f"{BENCHMARKS}/{prefix}{rule}.tsv"


# ------------------------------------------------------------------------------------------------
# The dataset (one per working directory: every seed's LM trains on it)


DATASET_FILES = {
    "train_kg": "train_kg.json",  # the persons of the QA-training split and their six attributes
    "test_kg": "test_kg.json",  # the unseen persons
    "qa_train": "qa_train.jsonl",  # QA rows the LM trains on, and the train cell
    "qa_test": "qa_test.jsonl",  # the out-of-distribution cells' QA rows
    "qa_hard": "qa_hard.jsonl",  # the hard wordings' two cells
    "corpus": "lm_corpus.jsonl",  # biographies and QA text, the LM's training corpus
}


def dataset_dir() -> str:
    """The dataset: the files of :data:`DATASET_FILES`."""
    return f"{RESULTS}/dataset"


def dataset_file(key: str) -> str:
    """One file of the dataset, by its key in :data:`DATASET_FILES`."""
    return f"{dataset_dir()}/{DATASET_FILES[key]}"


# ------------------------------------------------------------------------------------------------
# Per LM (prefix ``lmrun``)


def lm_final(lmrun: str) -> str:
    """The trained LM: a directory with its weights, config and tokenizer."""
    return f"{RESULTS}/{lmrun}lm/final"


def lm_train_log(lmrun: str) -> str:
    """The LM's training log: loss, tokens/s and the QA monitor per logged step."""
    return f"{RESULTS}/{lmrun}lm/train_log.csv"


def lm_train_summary(lmrun: str) -> str:
    """The LM training's summary: steps, tokens/s, model FLOP/s, MFU."""
    return f"{RESULTS}/{lmrun}lm/train_summary.json"


def lm_checkpoint(lmrun: str) -> str:
    """A killed LM job's resume state: no output of the rule, so Snakemake never deletes it."""
    return f"{RESULTS}/{lmrun}lm/checkpoint"


def lm_qa_accuracy(lmrun: str) -> str:
    """The LM's greedy QA accuracy per cell, rule and wording."""
    return f"{RESULTS}/{lmrun}lm/qa_accuracy.json"


def extra_qa_accuracy(lmrun: str) -> str:
    """The LM's greedy QA accuracy on the ``evaluate.extra_questions`` cells, as :func:`lm_qa_accuracy`'s."""
    return f"{RESULTS}/{lmrun}lm/extra_qa_accuracy.json"


def untrained_lm(lmrun: str) -> str:
    """The untrained baseline LM: the trained LM's architecture and tokenizer, random weights."""
    return f"{RESULTS}/{lmrun}{UNTRAINED_LM}model"


def activation_file(lmrun: str, layer: int | str, lm: str = TRAINED_LM) -> str:
    """The answer-position activations of every QA row at one profile layer (safetensors)."""
    return f"{RESULTS}/{lmrun}{lm}activations/{layer_name(layer)}.safetensors"


def activation_index(lmrun: str, lm: str = TRAINED_LM) -> str:
    """The rows of every layer's activation file: cell, rule, person, wording, answer."""
    return f"{RESULTS}/{lmrun}{lm}activations/index.csv"


def extra_activation_file(lmrun: str, layer: int | str, lm: str = TRAINED_LM) -> str:
    """The answer-position activations of the ``evaluate.extra_questions`` rows at one profile layer:
    files of their own, so that adding a question file retrains nothing (the trainings read
    :func:`activation_file`)."""
    return f"{RESULTS}/{lmrun}{lm}activations/extra_questions/{layer_name(layer)}.safetensors"


def extra_activation_index(lmrun: str, lm: str = TRAINED_LM) -> str:
    """The rows of every layer's extra-questions activation file, as :func:`activation_index`'s."""
    return f"{RESULTS}/{lmrun}{lm}activations/extra_questions/index.csv"


def activation_file_beside(index: str | Path, layer: int | str) -> Path:
    """The activation file of ``layer`` that its activations job wrote beside ``index``: a job that
    trains every profile layer takes the index as its input (rules/sae.smk says why)."""
    return Path(index).parent / f"{layer_name(layer)}.safetensors"


# The files of one layer's supervised SAE (biosae/sae/): its config, weights, the value
# candidates of each slot and its training log.
SAE_FILES = ("cfg.json", "sae.safetensors", "value_candidates.json", "train_log.csv")


def sae_dir(lmrun: str, layer: int | str, lm: str = TRAINED_LM) -> str:
    """One layer's supervised 6-slot SAE: the files of :data:`SAE_FILES`."""
    return f"{RESULTS}/{lmrun}{lm}sae/{layer_name(layer)}"


def sae_file(lmrun: str, layer: int | str, name: str, lm: str = TRAINED_LM) -> str:
    return f"{sae_dir(lmrun, layer, lm)}/{name}"


def sae_checkpoint(lmrun: str, lm: str = TRAINED_LM) -> str:
    """A killed SAE job's resume state (every layer's), removed when the job ends."""
    return f"{RESULTS}/{lmrun}{lm}sae/checkpoint"


# The files of one layer's DAS subspace (biosae/methods/das.py): config, basis, training log and
# the interchange pairs it trained and validated on.
DAS_FILES = ("cfg.json", "das.safetensors", "train_log.csv", "train_pairs.csv")


def das_dir(lmrun: str, layer: int | str) -> str:
    """One layer's DAS subspace: the files of :data:`DAS_FILES`."""
    return f"{RESULTS}/{lmrun}methods/das/{layer_name(layer)}"


def das_file(lmrun: str, layer: int | str, name: str) -> str:
    return f"{das_dir(lmrun, layer)}/{name}"


# The files of one layer's unsupervised TopK SAE: config (with its training history) and weights.
TOPK_SAE_FILES = ("cfg.json", "sae.safetensors")


def topk_sae_dir(lmrun: str, layer: int | str) -> str:
    """One layer's unsupervised TopK SAE: the files of :data:`TOPK_SAE_FILES`."""
    return f"{RESULTS}/{lmrun}methods/sae_unsupervised/{layer_name(layer)}"


def topk_sae_file(lmrun: str, layer: int | str, name: str) -> str:
    return f"{topk_sae_dir(lmrun, layer)}/{name}"


def saelens_dir(lmrun: str, layer: int | str) -> str:
    """One layer's TopK SAE exported for SAELens (biosae.sae.saelens): ``cfg.json`` and
    ``sae_weights.safetensors``, written by ``python -m biosae.export``, not by the pipeline."""
    return f"{RESULTS}/{lmrun}saelens/sae_unsupervised/{layer_name(layer)}"


# The files of one layer's causally fine-tuned supervised SAE (biosae/methods/sae_slot_causal.py),
# one directory per variant (the method and its controls): the SAE, the lambda it was chosen at
# and every grid value's validation IIA, its training log and the pairs it trained on.
CAUSAL_SAE_FILES = ("cfg.json", "sae.safetensors", "selection.json", "train_log.csv", "train_pairs.csv")


def causal_sae_dir(lmrun: str, layer: int | str, method: str) -> str:
    """One layer's fine-tuned SAE of ``method`` (sae_slot_causal or one of its controls)."""
    return f"{RESULTS}/{lmrun}methods/{method}/{layer_name(layer)}"


def causal_sae_file(lmrun: str, layer: int | str, method: str, name: str) -> str:
    return f"{causal_sae_dir(lmrun, layer, method)}/{name}"


def method_tests(lmrun: str, layer: int | str) -> str:
    """Every localization method but the supervised SAE, tested at one layer: what evaluate joins
    into that layer's metrics.json."""
    return f"{RESULTS}/{lmrun}methods/tests/{layer_name(layer)}.json"


# ------------------------------------------------------------------------------------------------
# Per (seed, layer) run (prefix ``run``)


def eval_dir(run: str) -> str:
    """A run's evaluation: metrics.json, summary.md and figures/."""
    return f"{RESULTS}/{run}eval"


def eval_metrics(run: str) -> str:
    """Every number of a run's evaluation (biosae/evaluation/metrics.py documents its keys)."""
    return f"{eval_dir(run)}/metrics.json"


def eval_summary(run: str) -> str:
    """A run's evaluation in words and tables; the default run's opens with the layer profile."""
    return f"{eval_dir(run)}/summary.md"


def eval_figures(run: str) -> str:
    """A run's figures (PNG), linked from its summary.md."""
    return f"{eval_dir(run)}/figures"


def extra_questions_metrics(lmrun: str) -> str:
    """The ``evaluate.extra_questions`` cells scored at every profile layer of one LM
    (biosae/evaluation/extra_questions.py): files of their own, so that the finished run's stay."""
    return f"{RESULTS}/{lmrun}eval/extra_questions.json"


def extra_questions_summary(lmrun: str) -> str:
    """:func:`extra_questions_metrics` as a table."""
    return f"{RESULTS}/{lmrun}eval/extra_questions.md"


# ------------------------------------------------------------------------------------------------
# Across runs: the aggregate of every (seed, layer) run of a profile or sweep


def aggregate_file(name: str) -> str:
    """``results/aggregate/<name>``: summary.csv (mean and spread per metric and layer),
    per_run.csv (every run's value), summary.md and figures/."""
    return f"{RESULTS}/aggregate/{name}"


# ------------------------------------------------------------------------------------------------
# Question study: one working directory per setting


def study_dir(setting: str) -> str:
    """The working directory that config/questions_<setting>.yaml's run is meant to use."""
    return f"{RESULTS}/study/{setting}"
