"""Per-layer costs inside the jobs that handle every profile layer of an LM at once, measured in
this process on a finished run's files with the rules' one thread: what the layer profile adds to
each such job, and what any SAE-only rerun must compute. Snakemake's benchmark files time a job
whole; these split it by layer."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from biosae import layout
from biosae.lm.layers import profile_layers

from .common import one_thread, run_config, run_evaluation_inputs, say, seconds_of

TOPK_MEASURED_EPOCHS = 20


@dataclass
class LayerTraining:
    """A training job's model of every profile layer at once against the seed's hook alone."""

    all_seconds: float
    one_seconds: float
    layers: list[int] | None = None
    seed_layer: int | None = None
    rows: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    measured_epochs: int | None = None  # timed over these epochs and scaled to ``epochs``


@dataclass
class LayerSeconds:
    """Each profile layer's own seconds in a job's work, and what every layer shares (timed apart)."""

    seconds: dict[int, float]
    shared_seconds: float
    seed_layer: int | None = None
    prompts_per_cell: int | None = None

    def other_layers(self) -> float:
        """The layers' seconds but the seed hook's: the profile's share of the job."""
        return sum(seconds for layer, seconds in self.seconds.items() if int(layer) != self.seed_layer)


def _profile(run_dir: Path):
    config = run_config(run_dir)
    return config, profile_layers(config, config["model"]["n_layer"]), config["activations"]["layer"]


def _activation_paths(run_dir: Path, layers):
    return [run_dir / layout.activation_file("", layer) for layer in layers], run_dir / layout.activation_index("")


def measure_sae_layers(run_dir: Path) -> LayerTraining:
    """The supervised SAE of every layer of the profile trained at once (what the LM's one
    train_sae job does), then of the seed's hook alone (what a run restricted to that layer
    trains). Their difference is what the profile's other layers add to each of the two SAE jobs
    (trained and untrained LM: same shapes)."""
    from biosae.sae.inputs import load_training_layers, sae_config
    from biosae.sae.training import train_sae_layers

    config, layers, seed_layer = _profile(run_dir)
    h, rule_idx, value_target, candidates, _ = load_training_layers(
        *_activation_paths(run_dir, layers), config["sae"]["max_train_rows"], config["seed"]
    )
    cfg = sae_config(config["sae"], h[0].shape[1], candidates, config["seed"])
    with one_thread():
        all_seconds, _ = seconds_of(train_sae_layers, h, rule_idx, value_target, cfg, progress=False)
        one_seconds, _ = seconds_of(
            train_sae_layers, [h[layers.index(seed_layer)]], rule_idx, value_target, cfg, progress=False
        )
    say(
        f"[pipeline] SAE training in process: {len(layers)} layers at once {all_seconds:.1f} s, "
        f"layer {seed_layer} alone {one_seconds:.1f} s"
    )
    return LayerTraining(
        all_seconds=all_seconds,
        one_seconds=one_seconds,
        layers=layers,
        seed_layer=seed_layer,
        rows=len(rule_idx),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
    )


def measure_topk_layers(run_dir: Path) -> LayerTraining:
    """Like :func:`measure_sae_layers`: the TopK SAE of every profile layer at once (the
    train_unsupervised_sae job), then of the seed's hook alone, each over at most
    ``TOPK_MEASURED_EPOCHS`` epochs, scaled to the config's (every epoch runs the same batches)."""
    from biosae.sae.inputs import load_training_layers
    from biosae.sae.topk import TopKSAEConfig, train_topk_sae_layers

    config, layers, seed_layer = _profile(run_dir)
    section = dict(config["methods"]["sae_unsupervised"])
    max_rows = section.pop("max_train_rows")
    h, *_ = load_training_layers(*_activation_paths(run_dir, layers), max_rows, config["seed"])
    cfg = TopKSAEConfig(d_model=h.shape[2], seed=config["seed"], **section)
    measured = replace(cfg, epochs=min(cfg.epochs, TOPK_MEASURED_EPOCHS))
    with one_thread():
        all_seconds, _ = seconds_of(train_topk_sae_layers, h, measured)
        one_seconds, _ = seconds_of(train_topk_sae_layers, h[layers.index(seed_layer)][None], measured)
    scale = cfg.epochs / measured.epochs
    say(
        f"[pipeline] TopK SAE training in process ({measured.epochs} epochs, scaled x{scale:g}): {len(layers)} layers "
        f"at once {all_seconds * scale:.1f} s, layer {seed_layer} alone {one_seconds * scale:.1f} s"
    )
    return LayerTraining(
        all_seconds=all_seconds * scale,
        one_seconds=one_seconds * scale,
        layers=layers,
        seed_layer=seed_layer,
        rows=h.shape[1],
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        measured_epochs=measured.epochs,
    )


def measure_das_layers(run_dir: Path) -> LayerSeconds:
    """The train_das job's work, layer by layer as the job does it (workflow_scripts/train_das.py):
    each layer's activations read, its causal sample drawn and its DAS trained, with the pairs and
    their prompt caches, which every layer shares, built once and timed apart (the LM's loading
    is in neither)."""
    from biosae.devices import pick_device
    from biosae.evaluation.method_tests import causal_sample
    from biosae.lm.activations import load_activation_table
    from biosae.lm.model import load_model_dir
    from biosae.methods.das import DASConfig, prepare_das_prompts, train_das

    config, layers, seed_layer = _profile(run_dir)
    index_path, seed = run_dir / layout.activation_index(""), config["seed"]
    max_prompts = config["evaluate"]["max_prompts_per_cell"]
    seconds, shared_seconds, prompts = {}, 0.0, None
    with one_thread():
        model, tokenizer = load_model_dir(run_dir / layout.lm_final(""), pick_device())
        for layer in layers:
            start = time.perf_counter()
            activations, index = load_activation_table(run_dir / layout.activation_file("", layer), index_path)
            cfg = DASConfig(d_model=activations.shape[1], layer=layer, seed=seed, **config["methods"]["das"])
            scored = causal_sample(index, "train", max_prompts, seed)
            if prompts is None:
                shared_seconds, prompts = seconds_of(prepare_das_prompts, model, tokenizer, index, scored, cfg)
                start += shared_seconds
            train_das(model, tokenizer, index, activations, cfg, scored, prompts=prompts)
            seconds[layer] = time.perf_counter() - start
    say(
        "[pipeline] DAS in process: "
        + ", ".join(f"layer {layer} {s:.1f} s" for layer, s in seconds.items())
        + f" (prompts and caches {shared_seconds:.1f} s apart)"
    )
    return LayerSeconds(seconds=seconds, shared_seconds=shared_seconds, seed_layer=seed_layer)


def measure_method_tests_layers(run_dir: Path) -> LayerSeconds:
    """The evaluate_methods job's work, layer by layer as the job does it
    (biosae.evaluation.method_layers): each layer's activations and trained methods read and
    every method but the SAE tested, with the LM, every cell's sample and prompt cache, which every
    layer shares, loaded and built once and timed apart."""
    from biosae.devices import pick_device
    from biosae.evaluation.method_layers import LayerMethodTests
    from biosae.lm.model import load_model_dir

    config, layers, seed_layer = _profile(run_dir)
    names, section = config["methods"]["names"], config["evaluate"]
    seconds = {}
    with one_thread():
        start = time.perf_counter()
        model, tokenizer = load_model_dir(run_dir / layout.lm_final(""), pick_device())
        tests_of = LayerMethodTests(
            model,
            tokenizer,
            run_dir / layout.activation_index(""),
            names,
            section["max_prompts_per_cell"],
            section["swap_alphas"],
            config["seed"],
            das_dir=(lambda layer: run_dir / layout.das_dir("", layer)) if "das" in names else None,
            topk_sae_dir=(lambda layer: run_dir / layout.topk_sae_dir("", layer))
            if "sae_unsupervised" in names
            else None,
        )
        shared_seconds = time.perf_counter() - start
        for layer in layers:
            start = time.perf_counter()
            activations, index = tests_of.load_layer(layer)
            if tests_of.samples is None:
                built = time.perf_counter()
                tests_of.build_shared(index)
                shared_seconds += time.perf_counter() - built
                start += time.perf_counter() - built
            tests_of.test_layer(layer, activations, index)
            seconds[layer] = time.perf_counter() - start
    say(
        "[pipeline] every method but the SAE tested in process: "
        + ", ".join(f"layer {layer} {s:.1f} s" for layer, s in seconds.items())
        + f" (LM, samples and prompt caches {shared_seconds:.1f} s apart)"
    )
    return LayerSeconds(
        seconds=seconds,
        shared_seconds=shared_seconds,
        seed_layer=seed_layer,
        prompts_per_cell=section["max_prompts_per_cell"],
    )


def measure_sae_causal_layers(run_dir: Path) -> LayerSeconds:
    """The SAE's causal tests (``sae_causal_metrics``: the LM's edited passes for the slot and
    decoder-direction ablations, interchange and swap) at every layer of the profile, the LM
    loaded and every cell's prompt cache built once and timed apart. Beside training the two
    SAEs, these passes are the part of the SAE-only rerun that no arrangement of its jobs removes
    (a job per layer or one per LM only moves start-up, loading, prompt caches and figures around)."""
    from biosae.evaluation.evaluate import ordered_cells, sae_causal_metrics
    from biosae.evaluation.method_tests import cell_samples
    from biosae.lm.activations import load_activation_table
    from biosae.sae.model import load_sae

    config, layers, seed_layer = _profile(run_dir)
    section = config["evaluate"]
    index_path = run_dir / layout.activation_index("")
    with one_thread():

        def shared():
            inputs = run_evaluation_inputs(run_dir, layers[0], config["methods"]["names"])
            samples = cell_samples(
                inputs.model,
                inputs.tokenizer,
                inputs.index,
                ordered_cells(inputs.index),
                section["max_prompts_per_cell"],
                config["seed"],
            )
            return inputs, samples

        shared_seconds, (inputs, samples) = seconds_of(shared)
        seconds = {}
        for layer in layers:
            layer_inputs = replace(
                inputs,
                layer=layer,
                sae=load_sae(run_dir / layout.sae_dir("", layer)),
                activations=load_activation_table(run_dir / layout.activation_file("", layer), index_path)[0],
            )
            seconds[layer], _ = seconds_of(sae_causal_metrics, layer_inputs, samples, section["swap_alphas"])
    say(
        f"[pipeline] the SAE's causal tests in process: {sum(seconds.values()):.1f} s over {len(layers)} layers "
        f"(LM and prompt caches {shared_seconds:.1f} s apart)"
    )
    return LayerSeconds(
        seconds=seconds,
        shared_seconds=shared_seconds,
        seed_layer=seed_layer,
        prompts_per_cell=section["max_prompts_per_cell"],
    )
