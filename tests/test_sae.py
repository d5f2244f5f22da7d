"""Tests of biosae.sae.model (model, loss terms, checkpoints) and biosae.sae.training (training, resume),
and the training regression fixture of both SAEs (biosae.sae.model and biosae.sae.topk)."""

import csv
import math
import pickle
from dataclasses import replace

import pytest
import torch

from biosae.errors import BiosaeError
from biosae.io import load_tensors, read_json, write_json
from biosae.sae import training as sae_training
from biosae.sae.model import (
    SAEConfig,
    SupervisedSAE,
    alignment_loss,
    independence_loss,
    load_sae,
    reconstruction_loss,
    sae_loss,
    save_sae,
    slot_entropy,
    value_loss,
)
from biosae.sae.topk import TopKSAE, TopKSAEConfig, load_topk_sae, save_topk_sae
from biosae.sae.training import majority_value_baseline, temperature_at, train_sae, train_sae_layers, validation_split

VOCAB = [3, 3, 3, 3, 3, 3]


@pytest.fixture(autouse=True)
def one_thread():
    # tiny tensors: threads cost more than they give, and the CI machine is shared
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(**overrides) -> SAEConfig:
    values = dict(d_model=32, value_vocab_sizes=VOCAB, epochs=4, batch_size=64, validation_fraction=0.25)
    values.update(overrides)
    return SAEConfig(**values)


def synthetic(n_persons=60, d=32, n_candidates=3, seed=0):
    """Rows = person x rule. h = center of the rule + the person's vector; the answer is linear in the person."""
    g = torch.Generator().manual_seed(seed)
    centers = 4 * torch.randn(6, d, generator=g)
    persons = torch.randn(n_persons, 8, generator=g)
    projection = torch.randn(8, d, generator=g) / math.sqrt(8) * 2
    readout = torch.randn(6, n_candidates, 8, generator=g)
    person = torch.arange(n_persons).repeat_interleave(6)
    rule = torch.arange(6).repeat(n_persons)
    h = centers[rule] + persons[person] @ projection + 0.1 * torch.randn(len(rule), d, generator=g)
    value = torch.einsum("nck,nk->nc", readout[rule], persons[person]).argmax(dim=-1)
    return h, rule, value


def trained_model(d=32, seed=0) -> SupervisedSAE:
    torch.manual_seed(seed)
    model = SupervisedSAE(config(d_model=d))
    model.fit_standardization(torch.randn(50, d) * 3 + 1)
    return model.eval()


# --- config ---------------------------------------------------------------------------------


def test_config_round_trip_and_strict_keys():
    cfg = config(seed=3, lr=0.01)
    assert SAEConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(BiosaeError, match="unknown key 'lambda_l1'"):
        SAEConfig.from_dict({**cfg.to_dict(), "lambda_l1": 1.0})
    data = cfg.to_dict()
    del data["temp_end"]
    with pytest.raises(BiosaeError, match="missing key 'temp_end'"):
        SAEConfig.from_dict(data)
    with pytest.raises(BiosaeError, match="value_vocab_sizes has 5 entries"):
        config(value_vocab_sizes=[3] * 5)


# --- loss terms, by hand ----------------------------------------------------------------------


def test_slot_entropy_known_values():
    assert slot_entropy(torch.eye(6)).item() == pytest.approx(0.0, abs=1e-9)
    assert slot_entropy(torch.full((4, 6), 1 / 6)).item() == pytest.approx(math.log(6), rel=1e-6)
    half = torch.tensor([[0.5, 0.5, 0, 0, 0, 0], [1.0, 0, 0, 0, 0, 0]])
    assert slot_entropy(half).item() == pytest.approx(math.log(2) / 2, rel=1e-6)


def test_independence_loss_identity_covariance_is_zero():
    centered = torch.randn(12, 6, dtype=torch.float64)
    centered -= centered.mean(dim=0)
    q, _ = torch.linalg.qr(centered)  # orthonormal, still centered columns
    z = q * math.sqrt(12 - 1)  # unbiased covariance = q^T q = I
    assert independence_loss(z).item() == pytest.approx(0.0, abs=1e-10)


def test_independence_loss_includes_the_diagonal():
    # constant z: Cov = 0, so ||0 - I||^2 = 6 (an off-diagonal-only penalty would give 0)
    assert independence_loss(torch.full((8, 6), 1 / 6)).item() == pytest.approx(6.0)
    # 12 one-hot rows, 2 per slot: var = 5/33, cov = -1/33 -> 6 (28/33)^2 + 30 (1/33)^2 = 4734/1089
    z = torch.eye(6, dtype=torch.float64).repeat(2, 1)
    assert independence_loss(z).item() == pytest.approx(4734 / 1089, rel=1e-9)


def test_alignment_loss_matches_manual_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0, 3.0]])
    manual_0 = -(2.0 - math.log(math.exp(2) + 5))
    manual_1 = -(3.0 - math.log(4 + math.e + math.exp(3)))
    expected = (manual_0 + manual_1) / 2
    assert alignment_loss(logits, torch.tensor([0, 5])).item() == pytest.approx(expected, rel=1e-6)


def test_reconstruction_and_value_loss_known_values():
    x = torch.zeros(2, 3)
    x_recon = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    assert reconstruction_loss(x, x_recon).item() == pytest.approx(14 / 6)
    # -inf padding (a rule with 2 candidates) must not count
    logits = torch.tensor([[2.0, 0.0, float("-inf")], [0.0, 1.0, 3.0]])
    expected = (math.log(math.exp(2) + 1) - 2 + math.log(1 + math.e + math.exp(3)) - 3) / 2
    assert value_loss(logits, torch.tensor([0, 2])).item() == pytest.approx(expected, rel=1e-6)


def test_sae_loss_is_standardized_recon_plus_weighted_terms():
    cfg = SAEConfig(d_model=2, value_vocab_sizes=[2] * 6, lambda_sparse=0.5, lambda_indep=0.25)
    model = SupervisedSAE(cfg)
    model.mean.fill_(1.0)
    model.std.fill_(2.0)
    with torch.no_grad():
        model.decoder_weight.zero_()
        model.decoder_bias.zero_()
    h = torch.tensor([[3.0, 1.0], [1.0, 3.0], [1.0, 1.0]])  # standardized: rows e1, e2, 0
    rule, value = torch.tensor([0, 1, 2]), torch.tensor([1, 0, 1])
    losses = sae_loss(model, h, rule, value, None, cfg)
    assert losses["recon"].item() == pytest.approx(2 / 6)  # decoder outputs 0: mean of x^2
    z = model.encode(h)
    assert losses["sparse"].item() == pytest.approx(slot_entropy(z).item(), rel=1e-6)
    assert losses["indep"].item() == pytest.approx(independence_loss(z).item(), rel=1e-6)
    expected_total = (
        losses["recon"] + 0.5 * losses["sparse"] + losses["align"] + 0.25 * losses["indep"] + 0.5 * losses["value"]
    )
    assert losses["total"].item() == pytest.approx(expected_total.item(), rel=1e-6)


# --- model --------------------------------------------------------------------------------------


def test_encode_is_deterministic_without_temperature_and_sampled_with_it():
    model = trained_model()
    h = torch.randn(10, 32) * 3
    assert torch.equal(model.encode(h), model.encode(h))
    assert torch.allclose(model.encode(h), torch.softmax(model.slot_logits(h) / 0.1, dim=-1))
    torch.manual_seed(1)
    first = model.encode(h, temperature=1.0)
    second = model.encode(h, temperature=1.0)
    assert not torch.equal(first, second)
    assert torch.allclose(first.sum(dim=-1), torch.ones(10))


def test_error_term_forward_keeps_h_and_moves_by_the_decoded_difference():
    model = trained_model()
    h = torch.randn(16, 32) * 3 + 1
    assert torch.allclose(model(h, z_edit=lambda z: z), h, atol=1e-5)
    assert torch.allclose(model(h, z_edit=model.encode(h).clone()), h, atol=1e-5)
    assert torch.allclose(model(h), model.decode(model.encode(h)))

    z = model.encode(h)
    z_new = torch.roll(z, shifts=1, dims=1)  # move every row's weight to the next slot
    edited = model(h, z_edit=z_new)
    assert torch.allclose(edited - h, model.decode(z_new) - model.decode(z), atol=1e-5)
    assert not torch.allclose(edited, h, atol=1e-3)
    assert torch.allclose(model(h, z_edit=z_new, error_term=False), model.decode(z_new))
    with pytest.raises(BiosaeError, match="shape"):
        model(h, z_edit=z_new[:, :5])


def test_value_logits_use_the_rule_head_gated_by_its_slot():
    model = SupervisedSAE(config(value_vocab_sizes=[2, 3, 3, 3, 3, 3]))
    h, rule = torch.randn(4, 32), torch.tensor([0, 1, 0, 5])
    z = torch.softmax(torch.randn(4, 6), dim=-1)
    logits = model.value_logits(h, z, rule)
    x = model.standardize(h)
    assert logits.shape == (4, 3)

    def head(k, row):  # rule k's value head, nn.Linear on the gated row
        return (x[row] * z[row, k]) @ model.head_weights[k][0] + model.head_biases[k][0]

    assert torch.allclose(logits[1], head(1, 1))
    assert torch.allclose(logits[0, :2], head(0, 0))
    assert logits[0, 2] == float("-inf") and logits[2, 2] == float("-inf")
    assert model.value_predictions(h, rule).max() <= 2


# --- training -----------------------------------------------------------------------------------


def test_training_separates_slots_and_values_beat_the_majority_baseline(tmp_path):
    h, rule, value = synthetic()
    cfg = config(epochs=40, lr=1e-2, batch_size=32)
    model, history = train_sae(h, rule, value, cfg, log_path=tmp_path / "log.csv", progress=False)
    last = history[-1]
    assert last["validation_slot_accuracy"] >= 0.95
    assert last["validation_value_accuracy"] >= last["validation_majority_value_accuracy"] + 0.2
    assert history[0]["temperature"] == 1.0 and last["temperature"] == pytest.approx(0.1)

    with open(tmp_path / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in rows] == list(range(1, 41))
    assert set(sae_training.LOG_COLUMNS) == set(rows[0])
    assert float(rows[-1]["validation_slot_accuracy"]) == pytest.approx(last["validation_slot_accuracy"], rel=1e-5)


def test_majority_baseline_and_stratified_split():
    rule = torch.tensor([0, 0, 0, 1, 1, 1])
    value = torch.tensor([2, 2, 1, 0, 1, 1])
    train = torch.tensor([True, True, True, True, True, False])
    # rule 1's train rows tie (0, 1): the smaller index wins
    assert majority_value_baseline(rule, value, train).tolist() == [2, 2, 2, 0, 0, 0]
    mask = validation_split(torch.arange(6).repeat(10), 0.2, seed=0)
    assert [int(mask[torch.arange(60) % 6 == r].sum()) for r in range(6)] == [2] * 6
    assert torch.equal(mask, validation_split(torch.arange(6).repeat(10), 0.2, seed=0))


def test_temperature_anneals_linearly_per_epoch():
    cfg = config(epochs=5)
    assert [temperature_at(cfg, e) for e in range(1, 6)] == pytest.approx([1.0, 0.775, 0.55, 0.325, 0.1])


def test_nan_activations_are_refused():
    h, rule, value = synthetic(n_persons=10)
    h[7, 3] = float("nan")
    with pytest.raises(BiosaeError, match="nan"):
        train_sae(h, rule, value, config(), progress=False)


def test_nan_loss_term_stops_training_with_its_name(monkeypatch):
    calls = {"n": 0}
    real_loss = sae_training.sae_loss

    def poisoned(*args):
        calls["n"] += 1
        losses = real_loss(*args)
        if calls["n"] == 2:
            losses["indep"] = losses["indep"] * float("nan")
        return losses

    monkeypatch.setattr(sae_training, "sae_loss", poisoned)
    h, rule, value = synthetic()
    with pytest.raises(BiosaeError, match="loss term 'indep' is nan at epoch 1 step 2"):
        train_sae(h, rule, value, config(batch_size=32), progress=False)


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    h, rule, value = synthetic(n_persons=30)
    cfg = config(epochs=4, batch_size=32)
    full, full_history = train_sae(h, rule, value, cfg, progress=False)

    torch.manual_seed(123)  # the caller's RNG state must not matter
    _, partial = train_sae(h, rule, value, cfg, checkpoint_dir=tmp_path / "ckpt", progress=False, stop_after_epochs=2)
    assert len(partial) == 2
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["state.json", "state.safetensors"]
    torch.manual_seed(456)
    resumed, history = train_sae(h, rule, value, cfg, checkpoint_dir=tmp_path / "ckpt", progress=False)

    assert history == full_history
    for name, tensor in full.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


def test_checkpoints_are_written_by_interval_and_after_the_last_epoch(tmp_path, monkeypatch):
    import biosae.sae.training as training

    h, rule, value = synthetic(n_persons=20)
    cfg = config(epochs=3, batch_size=32)
    written = []
    real_save = training._save_checkpoint
    monkeypatch.setattr(
        training,
        "_save_checkpoint",
        lambda directory, model, optimizer, epoch, *rest: (
            written.append(epoch) or real_save(directory, model, optimizer, epoch, *rest)
        ),
    )
    every_epoch, _ = train_sae(
        h, rule, value, cfg, checkpoint_dir=tmp_path / "every", progress=False, checkpoint_every_s=0
    )
    assert written == [1, 2, 3]
    written.clear()
    # an hour between checkpoints: only the call's last epoch is written, interrupted or not
    train_sae(
        h,
        rule,
        value,
        cfg,
        checkpoint_dir=tmp_path / "rare",
        progress=False,
        stop_after_epochs=2,
        checkpoint_every_s=3600,
    )
    assert written == [2]
    resumed, _ = train_sae(
        h, rule, value, cfg, checkpoint_dir=tmp_path / "rare", progress=False, checkpoint_every_s=3600
    )
    assert written == [2, 3]
    assert all(torch.equal(t, resumed.state_dict()[n]) for n, t in every_epoch.state_dict().items())


def test_checkpoint_of_another_config_is_not_resumed(tmp_path):
    h, rule, value = synthetic(n_persons=20)
    train_sae(h, rule, value, config(epochs=2, lr=0.05), checkpoint_dir=tmp_path / "ckpt", progress=False)
    cfg = config(epochs=2)
    fresh, _ = train_sae(h, rule, value, cfg, progress=False)
    other, _ = train_sae(h, rule, value, cfg, checkpoint_dir=tmp_path / "ckpt", progress=False)
    assert all(torch.equal(t, other.state_dict()[n]) for n, t in fresh.state_dict().items())
    assert read_json(tmp_path / "ckpt" / "state.json")["cfg"]["lr"] == cfg.lr


# --- every layer of the profile at once ------------------------------------------------------------


def test_stacked_loss_of_each_layer_is_that_layers_sae_loss():
    """The loss of a stack of layers equals, layer by layer, the loss of each layer's slice on its
    own batch, Gumbel noise included."""
    h, rule, value = synthetic(n_persons=8)
    torch.manual_seed(0)
    stack = SupervisedSAE(config(), layers=2)
    with torch.no_grad():  # layers that differ in data, standardization and weights
        stack.fit_standardization(torch.stack([h, 3 * h.flip(1)]))
        for parameter in stack.parameters():
            parameter[1].add_(0.1 * torch.randn_like(parameter[1]))
    batch = torch.stack([h[:40], 3 * h.flip(1)[:40]])
    torch.manual_seed(7)
    stacked = sae_loss(stack, batch, rule[:40], value[:40], 0.5, config())
    for layer in range(2):
        model = stack.layer(layer).train()
        torch.manual_seed(7)  # each layer alone draws the same noise
        alone = sae_loss(model, batch[layer], rule[:40], value[:40], 0.5, config())
        for name, term in alone.items():
            torch.testing.assert_close(stacked[name][layer], term, msg=f"{name} of layer {layer}")


def test_layers_trained_together_equal_each_trained_alone(tmp_path):
    """Weights and logs of a layer do not depend on which other layers share the training call,
    also when that call is interrupted and resumed."""
    h, rule, value = synthetic(n_persons=30)
    other = torch.tanh(h @ torch.randn(32, 32, generator=torch.Generator().manual_seed(1)))
    cfg = config(epochs=3, batch_size=32)
    alone = [train_sae(layer, rule, value, cfg, progress=False) for layer in (h, other)]
    train_sae_layers(
        [h, other], rule, value, cfg, checkpoint_dir=tmp_path / "ckpt", progress=False, stop_after_epochs=1
    )
    logs = [tmp_path / "a.csv", tmp_path / "b.csv"]
    together = train_sae_layers(
        [h, other], rule, value, cfg, log_paths=logs, checkpoint_dir=tmp_path / "ckpt", progress=False
    )
    for (model, history), (reference, reference_history), log in zip(together, alone, logs):
        for name, tensor in reference.state_dict().items():
            torch.testing.assert_close(model.state_dict()[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
        assert [row["epoch"] for row in history] == [1, 2, 3]
        for row, reference_row in zip(history, reference_history):
            assert row == pytest.approx(reference_row, rel=1e-4, abs=1e-6)
        assert len(log.read_text().splitlines()) == 1 + 3
    assert not torch.allclose(together[0][0].encoder_weight, together[1][0].encoder_weight)


def test_bad_activations_of_one_layer_name_that_layer():
    h, rule, value = synthetic(n_persons=10)
    bad = h.clone()
    bad[3, 1] = float("inf")
    with pytest.raises(BiosaeError, match=r"activations of layer 2 contain nan or inf in 1 rows \(first: row 3\)"):
        train_sae_layers([h, bad], rule, value, config(), progress=False, layer_names=["layer 0", "layer 2"])


def test_a_stack_takes_stacked_batches_and_saves_one_layer_at_a_time(tmp_path):
    torch.manual_seed(0)
    stack = SupervisedSAE(config(), layers=2)
    h = torch.randn(2, 10, 32) * 3
    stack.fit_standardization(h)
    assert stack.slot_logits(h).shape == (2, 10, 6) and stack(h).shape == (2, 10, 32)
    with pytest.raises(BiosaeError, match=r"a batch of shape \(10, 32\) for a stack of 2 layers"):
        stack.encode(h[0])
    with pytest.raises(BiosaeError, match="holds one layer's SAE, got a stack of 2"):
        save_sae(tmp_path / "sae", stack)
    save_sae(tmp_path / "sae", stack.layer(1))
    loaded = load_sae(tmp_path / "sae")
    torch.testing.assert_close(loaded.slot_logits(h[1]), stack.slot_logits(h)[1])
    assert torch.equal(loaded.slot_directions(), stack.slot_directions(1))
    assert torch.equal(loaded.std, stack.std[1:]) and torch.equal(loaded.mean, stack.mean[1:])


def test_topk_stack_takes_stacked_batches_and_saves_one_layer_at_a_time(tmp_path):
    cfg = TopKSAEConfig(d_model=12, n_latents=20, k=4)
    stack = TopKSAE(cfg, layers=3)
    h = torch.randn(3, 9, 12, generator=torch.Generator().manual_seed(0))
    stack.fit_standardization(h * 2 + 1)
    f = stack.encode(h)
    assert f.shape == (3, 9, 20) and int((f > 0).sum(dim=-1).max()) <= 4
    with pytest.raises(BiosaeError, match=r"a batch of shape \(9, 12\) for a stack of 3 layers"):
        stack.pre_activations(h[0])
    with pytest.raises(BiosaeError, match="holds one layer's SAE, got a stack of 3"):
        save_topk_sae(tmp_path / "topk", stack)
    save_topk_sae(tmp_path / "topk", stack.layer(2), {"history": [{"epoch": 1}]})
    assert read_json(tmp_path / "topk" / "cfg.json")["history"] == [{"epoch": 1}]
    loaded = load_topk_sae(tmp_path / "topk")
    torch.testing.assert_close(loaded.pre_activations(h[2]), stack.pre_activations(h)[2])
    assert torch.equal(loaded.raw_decoder_directions(), stack.raw_decoder_directions(2))


# --- save / load --------------------------------------------------------------------------------


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    model = trained_model()
    save_sae(tmp_path / "sae", model)
    assert read_json(tmp_path / "sae" / "cfg.json") == model.cfg.to_dict()
    loaded = load_sae(tmp_path / "sae")
    h, rule = torch.randn(20, 32) * 3, torch.arange(20) % 6
    assert torch.equal(loaded.slot_logits(h), model.slot_logits(h))
    assert torch.equal(loaded(h), model(h))
    assert torch.equal(loaded.value_logits(h, loaded.encode(h), rule), model.value_logits(h, model.encode(h), rule))
    assert torch.equal(loaded.std, model.std) and torch.equal(loaded.mean, model.mean)


def test_load_refuses_pickle_and_truncated_files(tmp_path):
    save_sae(tmp_path / "sae", trained_model())
    weights = tmp_path / "sae" / "sae.safetensors"
    content = weights.read_bytes()
    weights.write_bytes(content[: len(content) // 2])
    with pytest.raises(BiosaeError, match="sae.safetensors"):
        load_sae(tmp_path / "sae")
    weights.write_bytes(pickle.dumps({"encoder.weight": [[0.0] * 32] * 6}))
    with pytest.raises(BiosaeError, match="sae.safetensors: not a readable safetensors file"):
        load_sae(tmp_path / "sae")


def test_load_refuses_shape_mismatch_and_bad_config(tmp_path):
    save_sae(tmp_path / "sae", trained_model())
    cfg_path = tmp_path / "sae" / "cfg.json"
    data = read_json(cfg_path)
    write_json(cfg_path, {**data, "d_model": 16})
    with pytest.raises(BiosaeError, match="sae.safetensors: tensor .* has shape"):
        load_sae(tmp_path / "sae")
    write_json(cfg_path, {**data, "value_vocab_sizes": [3, 3, 3, 3, 3, 4]})
    with pytest.raises(BiosaeError, match="value_heads.5"):
        load_sae(tmp_path / "sae")
    write_json(cfg_path, {**data, "dropout": 0.1})
    with pytest.raises(BiosaeError, match="cfg.json: .*unknown key 'dropout'"):
        load_sae(tmp_path / "sae")


# --- regression: training and the on-disk format stay as the fixture records them -------------------


# How far a CPU other than the fixture's may round: PyTorch's CPU kernels sum in an order that
# depends on the instruction set (AVX2, AVX-512), so fp32 training on another CPU lands within a
# few ulps of the fixture (2.5e-7 of a tensor's largest value, seen on an AVX-512 AMD host against
# the fixture's Intel one), not on it. A change to the training itself moves weights by far more
# (test_reference_tolerance_still_catches_a_changed_training).
REFERENCE_RTOL = 1e-5
REFERENCE_ATOL = 1e-6


def assert_logs_match(logs: dict, reference: dict) -> None:
    """Equal keys, integers and strings; floats within the reference tolerance."""
    assert sorted(logs) == sorted(reference)
    for run, rows in reference.items():
        assert len(logs[run]) == len(rows), run
        for row, expected in zip(logs[run], rows):
            assert sorted(row) == sorted(expected), run
            for key, value in expected.items():
                if isinstance(value, float):
                    assert row[key] == pytest.approx(value, rel=REFERENCE_RTOL, abs=REFERENCE_ATOL), (run, key)
                else:
                    assert row[key] == value, (run, key)


def test_training_reproduces_the_reference_weights_and_logs():
    """Both SAEs, stacked over 3 layers and alone, train to the weights and logs of
    tests/data/make_sae_reference.py's fixture (to the last few ulps), saved under the same
    tensor names, dtypes and shapes."""
    from tests.data.make_sae_reference import REFERENCE_HISTORIES, REFERENCE_TENSORS, train_references

    tensors, histories = train_references()
    reference = load_tensors(REFERENCE_TENSORS)
    assert sorted(tensors) == sorted(reference)
    for name, tensor in reference.items():
        assert tensors[name].dtype == tensor.dtype and tensors[name].shape == tensor.shape, name
        torch.testing.assert_close(tensors[name], tensor, rtol=REFERENCE_RTOL, atol=REFERENCE_ATOL, msg=name)
    assert_logs_match(histories, read_json(REFERENCE_HISTORIES))


def test_reference_tolerance_still_catches_a_changed_training(monkeypatch):
    """The tolerance is no blanket: one more part in a thousand of learning rate, for both SAEs,
    takes the trained weights outside it."""
    from tests.data import make_sae_reference
    from tests.data.make_sae_reference import REFERENCE_TENSORS, train_references

    for name in ("supervised_config", "topk_config"):
        original = getattr(make_sae_reference, name)
        monkeypatch.setattr(
            make_sae_reference, name, lambda original=original: replace(original(), lr=original().lr * 1.001)
        )
    tensors, _ = train_references()
    reference = load_tensors(REFERENCE_TENSORS)
    for run in ("supervised_alone", "supervised_stack", "topk_alone", "topk_stack"):
        names = [name for name in reference if name.startswith(run + ".")]
        assert any(
            not torch.allclose(tensors[name], reference[name], rtol=REFERENCE_RTOL, atol=REFERENCE_ATOL)
            for name in names
        ), run
