import time

import numpy as np
import pytest
import torch

from biosae.evaluation.baselines import BagOfWordsClassifier, LinearProbe, chance_accuracy, question_words_without_name

ATTRIBUTE_WORDS = ["birth date", "birth city", "university", "major", "employer", "work city"]
NAMES = ["Alice Mary Stone", "Bob Lee Carter", "Cara Jo Smith", "Dan Ray Hill", "Eve Ann Price", "Finn Kai Moss"]


def questions(frame, names, rules):
    return [frame.format(attr=ATTRIBUTE_WORDS[r], name=name) for name, r in zip(names, rules)]


def test_chance_accuracy():
    assert chance_accuracy() == pytest.approx(1 / 6)
    assert chance_accuracy(4) == 0.25


def test_name_is_removed_as_a_whole_word_sequence():
    assert question_words_without_name("What is Alice Mary Stone's major?", "Alice Mary Stone") == [
        "what",
        "is",
        "'",
        "s",
        "major",
        "?",
    ]
    # A name word that is also a wording word survives outside the name.
    assert "stone" in question_words_without_name("What stone is Alice Mary Stone's?", "Alice Mary Stone")


def test_bag_of_words_learns_the_wording_and_transfers_to_held_out_frames():
    rules = np.tile(np.arange(6), 10)
    names = [NAMES[i % 6] for i in range(rules.size)]
    train = questions("What is the {attr} of {name}?", names, rules)
    model = BagOfWordsClassifier().fit(train, names, rules)
    assert model.accuracy(train, names, rules) == 1.0
    held_out = questions("What is {name}'s {attr}? Please tell", names, rules)  # "please", "tell": unknown words
    assert (model.predict(held_out, names) == rules).all()


def test_bag_of_words_ignores_names_even_when_they_give_the_rule_away():
    # In training every rule is asked about one person only and the wording is identical, so the
    # name is the only cue. With names removed the classifier must not learn it.
    rules = np.repeat(np.arange(6), 10)
    names = [NAMES[r] for r in rules]
    texts = [f"Tell me about {name}." for name in names]
    model = BagOfWordsClassifier().fit(texts, names, rules)
    assert not any(word in model.vocabulary for word in ("alice", "stone", "bob", "carter"))
    assert len(set(model.predict(texts, names).tolist())) == 1
    assert model.accuracy(texts, names, rules) == pytest.approx(1 / 6)


def test_bag_of_words_is_deterministic():
    rng = np.random.default_rng(0)
    rules = rng.integers(0, 6, size=60)
    names = [NAMES[i % 6] for i in range(60)]
    texts = [f"word{rng.integers(0, 8)} {ATTRIBUTE_WORDS[r]} of {n}" for r, n in zip(rules, names)]
    first = BagOfWordsClassifier().fit(texts, names, rules)
    second = BagOfWordsClassifier().fit(texts, names, rules)
    assert torch.equal(first._model.weight, second._model.weight)


def clusters(centres, rng, n):
    """Rows drawn around one of six centres each (unit noise per dimension), with their labels."""
    rules = rng.integers(0, 6, size=n)
    return centres[rules] + rng.normal(size=(n, centres.shape[1])), rules


def test_linear_probe_separates_clusters_fast_and_deterministically():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 256)) * 0.5  # centres ~8 noise SDs apart in 256 dims
    x_train, y_train = clusters(centres, rng, 3000)
    x_test, y_test = clusters(centres, rng, 3000)
    started = time.perf_counter()
    probe = LinearProbe().fit(x_train.astype(np.float32), y_train)
    assert time.perf_counter() - started < 10
    assert probe.accuracy(x_test, y_test) > 0.98
    assert probe.accuracy(torch.as_tensor(x_train), torch.as_tensor(y_train)) > 0.98
    again = LinearProbe().fit(x_train.astype(np.float32), y_train)
    assert torch.equal(probe._model.weight, again._model.weight)


def test_linear_probe_on_noise_is_near_chance():
    rng = np.random.default_rng(2)
    x_train, y_train = rng.normal(size=(1200, 64)), rng.integers(0, 6, size=1200)
    x_test, y_test = rng.normal(size=(3000, 64)), rng.integers(0, 6, size=3000)
    probe = LinearProbe().fit(x_train, y_train)
    assert abs(probe.accuracy(x_test, y_test) - 1 / 6) < 0.05


def test_linear_probe_rejects_wrong_width():
    probe = LinearProbe().fit(np.eye(6), np.arange(6))
    with pytest.raises(ValueError):
        probe.predict(np.zeros((2, 5)))


def rule_clusters(n_per_rule: int, d: int, seed: int):
    """Activations whose rule sits in the first 6 dimensions (one-hot, plus noise) and whose
    other dimensions are person noise: a linear read-out of the rule is perfect."""
    generator = np.random.default_rng(seed)
    rules = np.repeat(np.arange(6), n_per_rule)
    h = generator.normal(size=(len(rules), d))
    h[:, :6] += 4.0 * np.eye(6)[rules]
    return h, rules


def test_error_term_holds_the_rule_when_the_sae_reconstructs_nothing():
    from biosae.evaluation.evaluate import error_term_diagnostics

    h, rules = rule_clusters(40, 16, seed=0)
    split = np.where(np.arange(len(rules)) % 2 == 0, "train", "ood_person")
    train_mean = h[split == "train"].mean(axis=0)
    nothing = error_term_diagnostics(h, np.broadcast_to(train_mean, h.shape), rules, split, ["train", "ood_person"])
    # decode(z) = the mean: the error term is h itself, the rule as readable as from h.
    assert nothing["train"]["reconstruction_r2"] == pytest.approx(0.0, abs=1e-12)
    assert nothing["ood_person"]["rule_probe_accuracy"] >= 0.95


def test_error_term_loses_the_rule_when_the_slots_reconstruct_it():
    from biosae.evaluation.evaluate import error_term_diagnostics

    h, rules = rule_clusters(40, 16, seed=1)
    split = np.where(np.arange(len(rules)) % 2 == 0, "train", "ood_person")
    # decode(z) reconstructs the 6 rule dimensions exactly: what's left is person noise only.
    slots_hold_the_rule = h.copy()
    slots_hold_the_rule[:, 6:] = 0.0
    result = error_term_diagnostics(h, slots_hold_the_rule, rules, split, ["train", "ood_person"])
    assert result["ood_person"]["rule_probe_accuracy"] < 0.4  # chance is 1/6
    assert 0.2 < result["train"]["reconstruction_r2"] < 0.8
    perfect = error_term_diagnostics(h, h, rules, split, ["train"])
    assert perfect["train"]["reconstruction_r2"] == pytest.approx(1.0)
