"""The TopK SAEs exported in SAELens's on-disk format (biosae.sae.saelens): sae-lens 6.x's
``SAE.load_from_disk`` reads them, and its encode of raw activations gives our latents, its decode
our reconstruction."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

import biosae
from biosae.sae.saelens import CFG_FILENAME, WEIGHTS_FILENAME, save_saelens_topk, transformer_lens_hook_name
from biosae.sae.topk import TopKSAEConfig, train_topk_sae
from tests.conftest import REPO


def saelens_sae_class():
    """sae_lens.SAE: the saelens extra, which CI installs (.ci/run); a skip only off CI."""
    if importlib.util.find_spec("sae_lens") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must test the SAELens export: install the saelens extra (pip install -e '.[saelens]')")
        pytest.skip("sae-lens is not installed (pip install -e '.[saelens]')")
    from sae_lens import SAE

    return SAE


def raw_reconstruction(model, h: torch.Tensor) -> torch.Tensor:
    """Our TopK SAE's reconstruction of raw ``h``, back in raw space."""
    x = model.standardize(h)
    return model.mean[0] + model.std[0] * model.decode_standardized(model.encode_standardized(x[None]))[0]


def test_hook_names_are_transformer_lens_residual_stream_names():
    assert transformer_lens_hook_name(0, 4) == "blocks.0.hook_resid_pre"
    assert transformer_lens_hook_name(1, 4) == "blocks.0.hook_resid_post"
    assert transformer_lens_hook_name(3, 4) == "blocks.2.hook_resid_post"
    assert transformer_lens_hook_name(-1, 4) == transformer_lens_hook_name(4, 4) == "blocks.3.hook_resid_post"


def test_a_trained_topk_sae_on_shifted_scaled_activations_encodes_the_same_in_saelens(tmp_path):
    """Activations far from standardized (mean 3, per-dimension scales 0.1 .. 10), so that a
    standardization left out of the fold, or folded the wrong way, changes every latent."""
    SAE = saelens_sae_class()
    generator = torch.Generator().manual_seed(0)
    scales = torch.logspace(-1, 1, 24)
    h = 3.0 + torch.randn(600, 24, generator=generator) * scales
    model, _ = train_topk_sae(h[:500], TopKSAEConfig(d_model=24, n_latents=64, k=4, epochs=5, batch_size=50))
    save_saelens_topk(tmp_path, model, {"hook_name": "blocks.0.hook_resid_post"})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CFG_FILENAME, WEIGHTS_FILENAME])

    sae = SAE.load_from_disk(tmp_path)
    held_out = h[500:]
    with torch.no_grad():
        ours, theirs = model.encode(held_out), sae.encode(held_out)
        assert type(sae).__name__ == "TopKSAE" and sae.cfg.k == 4 and sae.cfg.d_sae == 64
        assert ((ours > 0).sum(dim=1) == 4).all()  # real latents, k a row
        torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sae.decode(theirs), raw_reconstruction(model, held_out), atol=1e-4, rtol=1e-5)


def test_the_tiny_runs_topk_saes_load_in_saelens_and_give_our_latents(tiny_pipeline, tmp_path):
    """Every layer of the tiny run, on all of its real activations: the export through the Python
    API and through ``python -m biosae.export`` (the same files)."""
    SAE = saelens_sae_class()
    run = biosae.open_run(tiny_pipeline / "results")
    written = run.export_saelens(tmp_path / "api")
    assert [d.name for d in written] == [f"layer_{layer}" for layer in run.layers]

    n_blocks = 2  # tests/conftest.py's tiny_config
    for layer, directory in zip(run.layers, written):
        sae = SAE.load_from_disk(directory)
        assert sae.cfg.metadata.hook_name == transformer_lens_hook_name(layer, n_blocks)
        assert sae.cfg.metadata.biosae_layer == layer
        activations, _ = run.activation_table(layer)
        h = torch.as_tensor(activations)
        ours = run.topk_sae(layer)
        with torch.no_grad():
            latents = ours.encode(h)
            assert ((latents > 0).sum(dim=1) > 0).all()
            torch.testing.assert_close(sae.encode(h), latents, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(sae.decode(latents), raw_reconstruction(ours, h), atol=1e-4, rtol=1e-5)

    result = subprocess.run(
        [sys.executable, "-m", "biosae.export", str(tiny_pipeline / "results"), "--out", str(tmp_path / "cli")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path / "cli" / d.name) for d in written]
    for directory in written:
        for name in (CFG_FILENAME, WEIGHTS_FILENAME):
            assert (tmp_path / "cli" / directory.name / name).read_bytes() == (directory / name).read_bytes()
    assert json.loads((directory / CFG_FILENAME).read_text())["architecture"] == "topk"


def test_export_of_a_directory_that_is_no_run_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "biosae.export", str(tmp_path)], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"biosae export: {tmp_path}: not a finished biosae run: {tmp_path}/lm/final/ is missing (run ./run.sh first)"
    ]
