"""A finished run as a tool for notebooks: ask its LM, read its SAE's slots, edit its answers.

::

    import biosae
    run = biosae.open_run("results")          # a finished run's results directory; loads nothing yet
    run.layers                                # the layer profile, e.g. [0, 1, 2, 3, -1]
    run.answer(questions)                     # the LM's greedy answers
    run.read_slots(questions, layer=1)        # the supervised SAE's slot per question (rule names)
    run.swap_answer(questions, "employer", layer=1, alpha=2.0)
    run.method("das", layer=1).interchange(questions, sources)

A question is what the LM is asked, as in the dataset's QA rows' ``question`` ("What is the
employer of Ralph Jay Bishop?"); it is formatted as in LM training (biosae.dataset.text), so that
its answer position and activations are the pipeline's. Everything follows the pipeline's code:
activations at the answer position (biosae.lm.activations), slot reads as the evaluation's argmax
slot logit, methods fitted as the evaluate_methods job fits them (biosae.methods.registry, from
the train cell's rows of the run's activation table and the trained artifacts) and edits derived
as the evaluation derives them (biosae.evaluation.edits). The paths are biosae.layout's.

An edited answer edits the residual stream at the hook layer at the answer position (the last
prompt token) only, as every causal test of the pipeline does; the first answer token is what the
tests score. Later tokens are decoded greedily on top of that edited position: the prompt's
other tokens and every generated token run unedited, and they see the edit only through attention
to the answer position. The LM, the SAEs, the activation tables and the methods are loaded on
first use and kept.

The run is the default seed's LM with every layer of its profile (a sweep's other seeds are
not opened here).
"""

from __future__ import annotations

import operator
from pathlib import Path

from biosae import layout
from biosae.errors import BiosaeError
from biosae.io import read_json
from biosae.rules import RULES

# What a finished run holds, in the order its stages write them; the first one missing is named.
FINISHED_RUN_FILES = (
    layout.lm_final(""),
    layout.activation_index(""),
    layout.eval_metrics(""),
)
# The shipped data's longest answer is 4 words; a pretrained tokenizer cuts words into more tokens.
DEFAULT_MAX_ANSWER_TOKENS = 16


def open_run(results_dir: str | Path = layout.RESULTS, device="auto") -> Run:
    """The finished run whose results directory is ``results_dir`` (``results`` of the working
    directory the run was made in). Checks that its files are there and loads nothing else;
    ``device``: where the LM runs, as config ``training.device`` (biosae.devices.pick_device: auto
    picks CUDA, then MPS, then the CPU; or cpu, cuda, mps, a torch.device)."""
    return Run(results_dir, device)


def _rule_index(rule) -> int:
    """A rule given by name (biosae.rules.RULES) or index (an int or a numpy integer)."""
    if isinstance(rule, str):
        if rule not in RULES:
            raise BiosaeError(f"rule {rule!r}: not one of {', '.join(RULES)}")
        return RULES.index(rule)
    try:
        index = operator.index(rule)
    except TypeError:
        index = -1
    if 0 <= index < len(RULES):
        return index
    raise BiosaeError(f"rule {rule!r}: give a rule name ({', '.join(RULES)}) or an index 0..{len(RULES) - 1}")


def _question_list(questions) -> list[str]:
    if isinstance(questions, str):
        raise BiosaeError(f"questions: give a list of questions, not one string ({questions!r})")
    questions = list(questions)
    bad = [q for q in questions if not isinstance(q, str) or not q.strip()]
    if bad:
        raise BiosaeError(f"questions: {bad[0]!r} is not a question (a non-empty string)")
    return questions


class Run:
    """A finished run (see the module docstring); made by :func:`open_run`."""

    def __init__(self, results_dir: str | Path, device="auto"):
        self.root = Path(results_dir)
        for required in FINISHED_RUN_FILES:
            path = self.path(required)
            if not path.exists():
                shown = f"{path}/" if not path.suffix else str(path)
                raise BiosaeError(f"{self.root}: not a finished biosae run: {shown} is missing (run ./run.sh first)")
        self.layers = self._profile_layers()
        if not self.layers:
            raise BiosaeError(
                f"{self.root}: not a finished biosae run: {self.path(layout.sae_dir('', 'L')).parent}/layer_<L>/ "
                "is missing (run ./run.sh first)"
            )
        self._device = device
        self._cache: dict = {}

    def __repr__(self) -> str:
        return f"biosae run {self.root} (layers {self.layers}, hook layer {self.hook_layer})"

    # --------------------------------------------------------------------------------------------
    # Files and what they hold

    def path(self, layout_path: str) -> Path:
        """A path of biosae.layout (``results/...``) in this run's results directory."""
        return self.root / Path(layout_path).relative_to(layout.RESULTS)

    def _profile_layers(self) -> list[int]:
        """The layers with a trained supervised SAE: 0, 1, ... in order, then -1 (the last block)."""
        sae_root = self.path(layout.sae_dir("", 0)).parent
        found = [layout.layer_of(d.name) for d in sae_root.glob(layout.layer_name("*")) if (d / "cfg.json").is_file()]
        return sorted(found, key=lambda layer: (layer < 0, layer))

    def _cached(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def metrics(self, layer: int | None = None) -> dict:
        """metrics.json of ``layer``'s evaluation (default: the seed's hook, the default run's)."""
        layer = self._layer(layer)
        prefix = layout.run_prefix(self.seed, layer, self.seed, self.hook_layer)
        path = self.path(layout.eval_metrics(prefix))
        if not path.is_file():
            raise BiosaeError(f"{path} is missing: layer {layer} was not evaluated in this run")
        return self._cached(("metrics", layer), lambda: read_json(path))

    @property
    def hook_layer(self) -> int:
        """The seed's hook (config ``activations.layer``): the layer of the default run's evaluation."""
        return int(self._cached(("metrics", "default"), lambda: read_json(self.path(layout.eval_metrics(""))))["layer"])

    @property
    def seed(self) -> int:
        """The run's training seed (its SAEs record it)."""
        path = self.path(layout.sae_file("", self.layers[0], "cfg.json"))
        return int(self._cached("seed", lambda: read_json(path)["seed"]))

    def _layer(self, layer: int | None) -> int:
        if layer is None:
            return self.hook_layer
        if layer not in self.layers:
            raise BiosaeError(f"layer {layer!r}: this run's layers are {', '.join(map(str, self.layers))}")
        return int(layer)

    def qa_rows(self, cell: str | None = None):
        """The run's QA rows (its activation index: question, rule, person, answer, split, ...) as a
        DataFrame, those of evaluation cell ``cell`` only when given."""
        import pandas as pd

        index = self._cached(
            "index", lambda: pd.read_csv(self.path(layout.activation_index("")), keep_default_na=False)
        )
        if cell is None:
            return index
        cells = list(dict.fromkeys(index["split"]))
        if cell not in cells:
            raise BiosaeError(f"cell {cell!r}: this run's cells are {', '.join(cells)}")
        return index[index["split"] == cell]

    def questions(self, cell: str | None = None) -> list[str]:
        """The questions of the run's QA rows (of cell ``cell`` only when given), in row order."""
        return list(self.qa_rows(cell)["question"])

    # --------------------------------------------------------------------------------------------
    # What is loaded on first use

    @property
    def model(self):
        """The trained LM (eval mode)."""
        return self._lm()[0]

    @property
    def tokenizer(self):
        return self._lm()[1]

    def _lm(self):
        def load():
            from biosae.devices import pick_device
            from biosae.lm.model import load_model_dir

            return load_model_dir(self.path(layout.lm_final("")), pick_device(self._device))

        return self._cached("lm", load)

    def sae(self, layer: int | None = None):
        """The supervised SAE of ``layer`` (biosae.sae.model.SupervisedSAE, eval mode, on the CPU)."""
        layer = self._layer(layer)

        def load():
            from biosae.sae.model import load_sae

            return load_sae(self.path(layout.sae_dir("", layer)))

        return self._cached(("sae", layer), load)

    def topk_sae(self, layer: int | None = None):
        """The unsupervised TopK SAE of ``layer`` (biosae.sae.topk.TopKSAE, eval mode, on the CPU)."""
        layer = self._layer(layer)
        directory = self.path(layout.topk_sae_dir("", layer))
        if not directory.is_dir():
            raise BiosaeError(
                f"{directory}/ is missing: method sae_unsupervised was not trained in this run (methods.names)"
            )

        def load():
            from biosae.sae.topk import load_topk_sae

            return load_topk_sae(directory)

        return self._cached(("topk_sae", layer), load)

    def export_saelens(self, directory: str | Path | None = None) -> list[Path]:
        """Write every layer's TopK SAE in SAELens's on-disk format (biosae.sae.saelens), one
        directory per layer, ``layer_<L>`` under ``directory`` (default: the run's
        ``saelens/sae_unsupervised/``), for ``sae_lens.SAE.load_from_disk``. Returns the directories."""
        from biosae.lm.layers import block_count
        from biosae.sae.saelens import save_saelens_topk, transformer_lens_hook_name

        lm_dir = self.path(layout.lm_final(""))
        n_blocks = block_count({"init": "pretrained", "name": str(lm_dir)}, download=False)
        written = []
        for layer in self.layers:
            target = self.path(layout.saelens_dir("", layer))
            if directory is not None:
                target = Path(directory) / layout.layer_name(layer)
            metadata = {
                "model_name": str(lm_dir),
                "hook_name": transformer_lens_hook_name(layer, n_blocks),
                "biosae_layer": layer,
                "biosae_position": "the answer position (the prompt's last token)",
                "biosae_source": str(self.path(layout.topk_sae_dir("", layer))),
            }
            written.append(save_saelens_topk(target, self.topk_sae(layer), metadata))
        return written

    def activation_table(self, layer: int | None = None):
        """(activations [N, d], index DataFrame) of ``layer``: the run's own activation file."""
        layer = self._layer(layer)

        def load():
            from biosae.lm.activations import load_activation_table

            return load_activation_table(
                self.path(layout.activation_file("", layer)), self.path(layout.activation_index(""))
            )

        return self._cached(("table", layer), load)

    # --------------------------------------------------------------------------------------------
    # The LM on questions

    def prompt_ids(self, questions) -> list[list[int]]:
        """Each question's prompt token ids, formatted and encoded as in LM training. A word the
        LM's vocabulary lacks is a BiosaeError naming the question and the word."""
        from biosae.lm.qa_accuracy import encode_rows

        questions = _question_list(questions)
        tokenizer = self.tokenizer
        prompts = encode_rows(tokenizer, [{"question": q, "answer": ""} for q in questions]).prompt_ids
        unknown = tokenizer.unk_token_id
        if unknown is not None:
            for number, (question, ids) in enumerate(zip(questions, prompts)):
                if unknown in ids:
                    raise BiosaeError(
                        f"question {number} ({question!r}): {_unknown_word(tokenizer, question)!r} is not in the LM's vocabulary"
                    )
        return prompts

    def activations(self, questions, layer: int | None = None):
        """float32 [N, d]: each question's residual stream at ``layer`` at the answer position, from
        the pipeline's activation pass (biosae.lm.activations.collect_activations) in the run's
        batch size, rounded to the run's storage dtype: a question of the run gives its row of the
        activation file, up to float32 summation order (within 1e-4)."""
        import numpy as np

        from biosae.lm.activations import STORAGE_DTYPES, activation_file_metadata, collect_activations

        layer = self._layer(layer)
        stored = self._cached(
            ("stored", layer), lambda: activation_file_metadata(self.path(layout.activation_file("", layer)))
        )
        prompts = self.prompt_ids(questions)
        unused = np.zeros(len(prompts), dtype=np.int64)  # no reference answer to score
        h = collect_activations(
            self.model, self.tokenizer, prompts, unused, [layer], int(stored.get("batch_size", 256)), progress=False
        )["activations"][layer]
        return h.to(STORAGE_DTYPES[stored.get("dtype", "float32")][2]).float()

    def answer(self, questions, max_tokens: int = DEFAULT_MAX_ANSWER_TOKENS) -> list[str]:
        """The LM's greedy answer to each question (decoded by its tokenizer: the from-scratch
        tokenizer's words come back lowercased)."""
        return self._answers(questions, self.hook_layer, None, max_tokens)

    def _answers(self, questions, layer: int, edit_for_rows, max_tokens: int) -> list[str]:
        from biosae.lm.generation import greedy_answers

        tokenizer = self.tokenizer
        answers = greedy_answers(
            self.model,
            self.prompt_ids(questions),
            tokenizer.pad_token_id,
            tokenizer.eos_token_id,
            layer,
            edit_for_rows,  # per batch of rows
            max_tokens,
        )
        return [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in answers]

    # --------------------------------------------------------------------------------------------
    # The supervised SAE and the methods

    def read_slots(self, questions, layer: int | None = None) -> list[str]:
        """The rule of each question's argmax slot of ``layer``'s supervised SAE (the evaluation's
        slot read, on the question's activation at the answer position)."""
        from biosae.evaluation.evaluate import slot_predictions

        slots = slot_predictions(self.sae(layer), self.activations(questions, layer))
        return [RULES[slot] for slot in slots]

    def swap_answer(
        self,
        questions,
        rule,
        layer: int | None = None,
        alpha: float = 2.0,
        from_rules=None,
        max_tokens: int = DEFAULT_MAX_ANSWER_TOKENS,
    ) -> list[str]:
        """The LM's greedy answers after moving each question from its slot to ``rule``'s with
        weight ``alpha``, error term kept: the ``sae_slot`` method's steering edit (the
        evaluation's slot swap) at ``layer``, at the answer position. The slot moved from is the
        question's read slot (:meth:`read_slots`), or ``from_rules[i]`` when given (the pipeline's
        tests move from the asked rule). The edit applies at the prompt's last position (the answer
        position) only, which gives the first answer token the pipeline's tests score; later tokens
        are decoded greedily after it, unedited, seeing the edit through attention."""
        return self.method("sae_slot", layer).steer(questions, rule, alpha, from_rules, max_tokens)

    def method(self, name: str, layer: int | None = None) -> MethodAtLayer:
        """Localization method ``name`` (biosae.methods.registry) at ``layer``, fitted as the
        pipeline fits it, with its read-out and edits."""
        layer = self._layer(layer)
        return self._cached(("method", name, layer), lambda: MethodAtLayer(self, name, layer, self._fit(name, layer)))

    def _fit(self, name: str, layer: int):
        """As the evaluate_methods job (biosae.evaluation.method_tests.evaluate_methods): the train
        cell's rows of the layer's activation table, the run's seed, the probe fitted on them, the
        trained artifacts of the layer; a control at the rank build_methods gave it in this run."""
        from dataclasses import replace

        from biosae.evaluation.method_tests import load_trained_methods, train_cell_fit_inputs
        from biosae.methods.registry import REGISTRY

        if name not in REGISTRY:
            raise BiosaeError(f"method {name!r}: unknown (known: {', '.join(REGISTRY)})")
        entry = REGISTRY[name]
        activations, index = self.activation_table(layer)
        artifacts = {"das": layout.das_dir("", layer), "sae_unsupervised": layout.topk_sae_dir("", layer)}
        if name.startswith("sae_slot_causal"):
            artifacts[name] = layout.causal_sae_dir("", layer, name)
        if name in artifacts and not self.path(artifacts[name]).is_dir():
            raise BiosaeError(
                f"{self.path(artifacts[name])}/ is missing: method {name} was not trained in this run (methods.names)"
            )
        trained, _ = load_trained_methods(
            self.path(artifacts["das"]) if self.path(artifacts["das"]).is_dir() else None,
            self.path(artifacts["sae_unsupervised"]) if self.path(artifacts["sae_unsupervised"]).is_dir() else None,
            {name: self.path(artifacts[name])} if name.startswith("sae_slot_causal") else None,
        )
        trained.pop("das_training_pairs", None)
        inputs = train_cell_fit_inputs(
            activations,
            index,
            self.seed,
            with_probe=name == "probe",
            sae=self.sae(layer) if name == "sae_slot" else None,
            **trained,
        )
        if entry.control:
            inputs = replace(inputs, rank=self._control_rank(layer))
        return entry.fit(inputs)

    def _control_rank(self, layer: int) -> int:
        """The rank build_methods gives a control in this run: the largest rank among the methods
        the run compared at ``layer`` (their method tests record it), at least one per rule."""
        from biosae.methods.registry import REGISTRY

        tests = read_json(self.path(layout.method_tests("", layer)))
        ranks = [
            result["rank"]
            for name, result in tests.get("methods", {}).items()
            if not (name in REGISTRY and REGISTRY[name].control) and result.get("rank") is not None
        ]
        return max(ranks + [len(RULES)])


class MethodAtLayer:
    """One localization method at one layer of a run: its read-out and its edits on questions,
    each edit applied as :class:`Run`'s edited answers are (the module docstring)."""

    def __init__(self, run: Run, name: str, layer: int, method):
        self.run, self.name, self.layer, self.method = run, name, layer, method

    def __repr__(self) -> str:
        return f"method {self.name} at layer {self.layer} of {self.run.root}"

    def read(self, questions) -> list[str] | None:
        """The rule the method reads from each question's activation; None: it has no read-out."""
        from biosae.evaluation.edits import read_out

        rules = read_out(self.method, self.run.activations(questions, self.layer))
        return None if rules is None else [RULES[r] for r in rules]

    def ablate(self, questions, rule, max_tokens: int = DEFAULT_MAX_ANSWER_TOKENS) -> list[str]:
        """Greedy answers with what the method says carries ``rule`` removed."""
        from biosae.evaluation.edits import ablation_edit

        edit = ablation_edit(self.method, _rule_index(rule))
        return self.run._answers(questions, self.layer, lambda rows: edit, max_tokens)

    def steer(self, questions, rule, alpha: float = 2.0, from_rules=None, max_tokens: int = DEFAULT_MAX_ANSWER_TOKENS):
        """Greedy answers after moving each question from its rule to ``rule`` with strength
        ``alpha``. Its rule: ``from_rules[i]`` when given, else the supervised SAE's read slot of
        this layer (the same for every method, so that methods are compared on the same move)."""
        import torch

        from biosae.evaluation.edits import steering_edit

        questions = _question_list(questions)
        if not self.method.steerable:
            raise BiosaeError(f"method {self.name} does not steer (it has no rule means to move between)")
        if from_rules is None:
            from_rules = self.run.read_slots(questions, self.layer)
        if len(from_rules) != len(questions):
            raise BiosaeError(f"from_rules: {len(from_rules)} rules for {len(questions)} questions")
        source = torch.tensor([_rule_index(r) for r in from_rules])
        target = _rule_index(rule)
        return self.run._answers(
            questions,
            self.layer,
            lambda rows: steering_edit(self.method, source[rows], target, float(alpha)),
            max_tokens,
        )

    def interchange(self, questions, sources, max_tokens: int = DEFAULT_MAX_ANSWER_TOKENS) -> list[str]:
        """Greedy answers after each question takes the value of the method's variable that
        ``sources[i]`` (another question) holds at this layer."""
        import torch

        from biosae.evaluation.edits import interchange_edit

        questions, sources = _question_list(questions), _question_list(sources)
        if len(sources) != len(questions):
            raise BiosaeError(f"sources: {len(sources)} source questions for {len(questions)} questions")
        source_h = self.run.activations(sources, self.layer)
        return self.run._answers(
            questions,
            self.layer,
            lambda rows: interchange_edit(self.method, source_h[torch.from_numpy(rows)]),
            max_tokens,
        )


def _unknown_word(tokenizer, question: str) -> str:
    """The first word of ``question`` that the tokenizer encodes as its unknown token."""
    from biosae.dataset.text import words

    for word in words(question):
        if tokenizer.unk_token_id in tokenizer(word, add_special_tokens=False)["input_ids"]:
            return word
    return question
