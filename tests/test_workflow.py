"""End to end through the real Snakemake engine on a tiny config: outputs, reruns, report, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import copy_run, planned_jobs, run_snakemake, tiny_config, write_config

pytestmark = pytest.mark.slow

DOWNSTREAM_OF_DATASET = {
    "dataset",
    "train_lm",
    "lm_qa_accuracy",
    "untrained_lm",
    "activations",
    "untrained_activations",
    "train_sae",
    "untrained_sae",
    "train_das",
    "train_unsupervised_sae",
    "train_causal_sae",
    "evaluate_methods",
    "evaluate",
    "aggregate",
    "all",
}
PROFILE = [0, 1, -1]  # every hook point of tiny_config's 2-block model: the default layer profile


def edit_config(directory: Path, section: str, key: str, value) -> None:
    path = directory / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config[section][key] = value
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def test_default_outputs_where_the_readme_says(tiny_pipeline):
    results = tiny_pipeline / "results"
    for relative in (
        "dataset/train_kg.json",
        "dataset/test_kg.json",
        "dataset/qa_train.jsonl",
        "dataset/qa_test.jsonl",
        "dataset/qa_hard.jsonl",
        "dataset/lm_corpus.jsonl",
        "lm/final/config.json",
        "lm/final/model.safetensors",
        "lm/final/tokenizer.json",
        "lm/qa_accuracy.json",
        "lm/train_log.csv",
        "activations/index.csv",
        *(f"activations/layer_{layer}.safetensors" for layer in PROFILE),
        "baselines/untrained_lm/activations/index.csv",
        *(f"baselines/untrained_lm/activations/layer_{layer}.safetensors" for layer in PROFILE),
        *(
            f"sae/layer_{layer}/{name}"
            for layer in PROFILE
            for name in ("cfg.json", "sae.safetensors", "train_log.csv", "value_candidates.json")
        ),
        *(f"baselines/untrained_lm/sae/layer_{layer}/cfg.json" for layer in PROFILE),
        "eval/metrics.json",
        "eval/summary.md",
        "eval/figures/confusion.png",
        "aggregate/summary.csv",
        "aggregate/summary.md",
        "eval/figures/methods_interchange.png",
        *(
            f"methods/das/layer_{layer}/{name}"
            for layer in PROFILE
            for name in ("cfg.json", "das.safetensors", "train_log.csv", "train_pairs.csv")
        ),
        *(
            f"methods/sae_unsupervised/layer_{layer}/{name}"
            for layer in PROFILE
            for name in ("cfg.json", "sae.safetensors")
        ),
        *(f"methods/tests/layer_{layer}.json" for layer in PROFILE),
    ):
        assert (results / relative).is_file(), relative
    assert sorted(p.name for p in (results / "activations").iterdir()) == sorted(
        ["index.csv", *(f"layer_{layer}.safetensors" for layer in PROFILE)]
    )
    assert not list(tiny_pipeline.rglob("*.pkl")) and not list(tiny_pipeline.rglob("*.pt"))
    for rule in (
        "dataset",
        "train_lm",
        "activations",
        "train_sae",
        "train_das",
        "train_unsupervised_sae",
        "evaluate_methods",
        "evaluate",
    ):
        assert (tiny_pipeline / "logs" / f"{rule}.log").is_file()
        assert (tiny_pipeline / "benchmarks" / f"{rule}.tsv").is_file()


def test_model_directory_loads_with_auto_classes(tiny_pipeline):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = tiny_pipeline / "results" / "lm" / "final"
    model = AutoModelForCausalLM.from_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    assert model.config.n_layer == 2 and model.config.eos_token_id == tokenizer.eos_token_id < len(tokenizer)


def test_metrics_cover_every_cell_and_test(tiny_pipeline):
    metrics = json.loads((tiny_pipeline / "results" / "eval" / "metrics.json").read_text())
    cells = ["train", "ood_template", "ood_person", "ood_both", "hard_seen_person", "hard_unseen_person"]
    assert metrics["cells"] == cells
    for key in ("slot_accuracy", "confusion", "baselines", "value_accuracy", "lm_qa_accuracy", "margins"):
        assert set(metrics[key]) == set(cells), key
    assert set(metrics["ablation"]) == {"slot", "direction", "random_direction"}
    assert set(metrics["swap"]) == {"alpha=1.0", "alpha=2.0"}
    for cell in cells:
        assert sum(map(sum, metrics["confusion"][cell])) == metrics["n_prompts"][cell]
        base = metrics["baselines"][cell]
        assert metrics["margins"][cell]["over_untrained_lm"] == pytest.approx(
            metrics["slot_accuracy"][cell] - base["untrained_lm_sae"]
        )
    # every method, every test, every cell (steering for the additive methods only)
    assert list(metrics["methods"]) == [
        "sae_slot",
        "diffmean",
        "probe",
        "das",
        "sae_unsupervised",
        "random",
        "sae_slot_causal",
    ]
    for name, result in metrics["methods"].items():
        for test in ("ablation", "interchange", "detection", "faithfulness"):
            assert set(result[test]) == set(cells), (name, test)
        assert set(result["steering"]) == (set(cells) if result["steerable"] else set()), name
        assert result["steerable"] == (name in ("sae_slot", "diffmean", "probe", "sae_unsupervised", "sae_slot_causal"))
        for cell in cells:
            interchange = result["interchange"][cell]
            assert interchange["n"] == metrics["interchange_pairs"][cell]["n"] > 0
            assert 0 <= interchange["iia"] <= 1 and 0 <= interchange["unchanged"] <= 1
    # the SAE's slot ablation and swap are the same numbers in both sections
    assert metrics["methods"]["sae_slot"]["ablation"]["train"] == metrics["ablation"]["slot"]["train"]
    chosen = metrics["methods"]["sae_slot"]["alpha"]
    assert metrics["methods"]["sae_slot"]["steering"]["ood_both"] == metrics["swap"][f"alpha={chosen}"]["ood_both"]
    assert metrics["methods"]["das"]["fit"]["rank"] == 8
    names = {entry["name"] for entry in metrics["expected_results"]}
    assert {
        "slot_diagonal_accuracy_train",
        "ood_slot_accuracy_min",
        "slot_ablation_diagonal_train",
        "margin_over_untrained_lm_min",
    } <= names
    qa = json.loads((tiny_pipeline / "results" / "lm" / "qa_accuracy.json").read_text())
    assert set(qa) == set(cells)
    assert set(qa["train"]["by_rule"]) == {"birth_date", "birth_city", "university", "major", "employer", "work_city"}
    summary = (tiny_pipeline / "results" / "eval" / "summary.md").read_text()
    assert (
        summary.index("Which method localizes the rule") < summary.index("Headline") < summary.index("Expected results")
    )


def test_nothing_to_do_after_a_complete_run(tiny_pipeline, tmp_path):
    run = copy_run(tiny_pipeline, tmp_path / "run")
    assert planned_jobs(run) == {}


def test_dataset_change_reruns_dataset_and_all_descendants(tiny_pipeline, tmp_path):
    run = copy_run(tiny_pipeline, tmp_path / "run")
    edit_config(run, "dataset", "biographies_per_person", 2)
    assert set(planned_jobs(run)) == DOWNSTREAM_OF_DATASET


def test_default_run_evaluates_every_layer_without_a_sweep_config(tiny_pipeline):
    """The seed's layer (-1) at the flat paths, the other hook points under results/sweep/, and the
    per-layer aggregate, from config.yaml's defaults alone."""
    import csv

    config = yaml.safe_load((tiny_pipeline / "config.yaml").read_text())
    assert config["sweep"] == {"seeds": [], "layers": "all"} and config["activations"]["layer"] == -1
    results = tiny_pipeline / "results"
    assert json.loads((results / "eval/metrics.json").read_text())["layer"] == -1
    for layer in (0, 1):
        run = results / f"sweep/seed_0/layer_{layer}"
        assert json.loads((run / "eval/metrics.json").read_text())["layer"] == layer
        assert not (run / "activations").exists()  # read from the LM's one activations job
        assert not (run / "sae").exists()  # trained with the LM's other layers (results/sae/layer_<L>/)
    assert not (results / "sweep/seed_0/layer_-1").exists() and not (results / "sweep/seed_0/lm").exists()
    with open(results / "aggregate/summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {int(row["layer"]) for row in rows} == set(PROFILE)
    assert {(row["layer"], row["blocks"]) for row in rows} == {("0", "0"), ("1", "1"), ("-1", "2")}
    assert {row["n"] for row in rows if row["metric"] == "slot_accuracy"} == {"1"}  # one seed
    for name in ("slot_accuracy_by_layer.png", "direction_ablation_selectivity_by_layer.png"):
        assert (results / "aggregate/figures" / name).read_bytes()[:4] == b"\x89PNG", name


def test_sae_change_reruns_only_the_sae_jobs_of_every_layer_and_what_follows(tiny_pipeline, tmp_path):
    """One SAE job per LM trains every layer's SAE; every layer's evaluate follows, and the SAEs
    fine-tuned from it. The other methods' tests (evaluate_methods) don't depend on the SAE: they
    don't rerun."""
    run = copy_run(tiny_pipeline, tmp_path / "run")
    edit_config(run, "sae", "lambda_align", 2.0)
    layers = len(PROFILE)
    assert planned_jobs(run) == {
        "train_sae": 1,
        "untrained_sae": 1,
        "train_causal_sae": 1,
        "evaluate": layers,
        "aggregate": 1,
        "all": 1,
    }


def test_storage_dtype_change_recollects_activations_but_keeps_the_lms(tiny_pipeline, tmp_path):
    run = copy_run(tiny_pipeline, tmp_path / "run")
    edit_config(run, "activations", "dtype", "bfloat16")
    layers = len(PROFILE)
    # one job per LM trains every layer's SAE, DAS and TopK SAE
    assert planned_jobs(run) == {
        "activations": 1,
        "untrained_activations": 1,
        "train_sae": 1,
        "untrained_sae": 1,
        "train_das": 1,
        "train_unsupervised_sae": 1,
        "train_causal_sae": 1,
        "evaluate_methods": 1,
        "evaluate": layers,
        "aggregate": 1,
        "all": 1,
    }


def test_one_layer_in_one_config_line(tiny_pipeline, tmp_path):
    """`sweep: {layers: [-1]}` plans the seed's layer only, from scratch; on a finished run only its
    evaluate reruns, because its summary's layer profile shrinks to that layer (the other layers'
    files stay, unused)."""
    write_config(tmp_path, tiny_config(sweep={"layers": [-1]}))
    assert planned_jobs(tmp_path) == {
        "dataset": 1,
        "train_lm": 1,
        "lm_qa_accuracy": 1,
        "untrained_lm": 1,
        "activations": 1,
        "untrained_activations": 1,
        "train_sae": 1,
        "untrained_sae": 1,
        "train_das": 1,
        "train_unsupervised_sae": 1,
        "train_causal_sae": 1,
        "evaluate_methods": 1,
        "evaluate": 1,
        "all": 1,
    }
    result = run_snakemake(tmp_path, "-n")
    assert "layer_-1.safetensors" in result.stdout and "layer_0.safetensors" not in result.stdout
    assert "results/sweep/" not in result.stdout
    assert planned_jobs(copy_run(tiny_pipeline, tmp_path / "run", layers=[-1])) == {"evaluate": 1, "all": 1}


def test_das_change_reruns_only_das_and_evaluation(tiny_pipeline, tmp_path):
    run = copy_run(tiny_pipeline, tmp_path / "run")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["methods"]["das"]["rank"] = 6
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    layers = len(PROFILE)
    assert planned_jobs(run) == {"train_das": 1, "evaluate_methods": 1, "evaluate": layers, "aggregate": 1, "all": 1}


def test_report_builds_with_figures_and_summary(tiny_pipeline, tmp_path):
    run = copy_run(tiny_pipeline, tmp_path / "run")
    run_snakemake(run, "--report", str(run / "report.html"))
    html = (run / "report.html").read_text(errors="replace")
    assert len(html) > 10_000 and "summary.md" in html and "confusion.png" in html


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("sae", "temp_end", 2.0, "config key sae.temp_end: 2.0 is above sae.temp_start"),
        ("dataset", "num_persons", "many", "config key dataset.num_persons: 'many' is not of type 'integer'"),
        ("training", "lr_typo", 0.1, "config key training.lr_typo: unknown key"),
        ("dataset", "num_persons", 10**9, "config key dataset.num_persons: 1000000000 is more than"),
        ("model", "n_layer", 0, "config key model.n_layer: 0 is less than the minimum of 1"),
        (
            "dataset",
            "train_wordings_per_question",
            2,
            "config key dataset.train_wordings_per_question: 2 is more than the 1 training wordings of a rule",
        ),
        (
            "methods",
            "names",
            ["sae_slot", "pca"],
            "config key methods.names: unknown method 'pca' (known: sae_slot, diffmean",
        ),
        (
            "methods",
            "das",
            {"rank": 65},
            "config key methods.das.rank: 65 is above the activations' width model.n_embd 64",
        ),
    ],
)
def test_bad_config_stops_before_any_job_with_one_line(tmp_path, section, key, value, message):
    config = tiny_config()
    config[section][key] = value
    write_config(tmp_path, config)
    result = run_snakemake(tmp_path, "--cores", "1", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert message in output
    assert "Traceback" not in output
    assert not (tmp_path / "results").exists()


def test_unknown_pretrained_model_offline_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = tiny_config(model={"init": "pretrained", "name": "no-such-org/no-such-model"})
    write_config(tmp_path, config)
    result = run_snakemake(tmp_path, "-n", check=False)
    assert result.returncode != 0
    assert (
        "config key model.name: 'no-such-org/no-such-model' is neither a local directory"
        in result.stderr + result.stdout
    )
