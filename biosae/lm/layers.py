"""The layer profile: which hook points a run collects activations at, trains SAEs on and evaluates.

A layer label L is the residual stream after L transformer blocks (0 = the embeddings); -1 names
the last block's output (before ``ln_f``), the same hook point as L = n_layer. ``sweep.layers:
all`` (the default) means every hook point, 0 .. n_layer - 1 and the last block, which is labelled
-1 unless ``activations.layer`` names it n_layer. The profile always includes ``activations.layer``.

Light on imports on purpose: the Snakefile reads the profile at parse time, in every job.
"""

from __future__ import annotations

import json
from pathlib import Path

from biosae.errors import BiosaeError

ALL_LAYERS = "all"
# config.json keys that hold the block count, by architecture family (GPT-2/GPT-J/BLOOM use
# n_layer; Llama, NeoX, OPT, Mistral num_hidden_layers; GPT-Neo num_layers).
BLOCK_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


def pretrained_config_json(name: str, download: bool = True) -> dict | None:
    """config.json of a local model directory or of a hub id: from the local cache first, so that
    it works offline; downloaded only when nothing is cached and ``download`` is set (else None)."""
    if Path(name).is_dir():
        path = Path(name) / "config.json"
    else:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
        if not isinstance(cached, str) and not download:
            return None
        try:
            path = Path(cached if isinstance(cached, str) else hf_hub_download(name, "config.json"))
        except Exception as error:  # huggingface_hub raises many types (offline, 404, network)
            raise BiosaeError(
                f"config key model.name: cannot read the config.json of {name!r} to count its "
                f"layers ({str(error).splitlines()[0] if str(error) else type(error).__name__})"
            ) from None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise BiosaeError(
            f"config key model.name: {path}: cannot read it to count the model's layers ({error})"
        ) from None


def block_count(model_section: dict, download: bool = True) -> int | None:
    """Number of transformer blocks of the configured LM (scratch: model.n_layer; pretrained: its
    config.json). None for a hub model that is not cached when ``download`` is off."""
    if model_section["init"] == "scratch":
        return int(model_section["n_layer"])
    config = pretrained_config_json(model_section["name"], download)
    if config is None:
        return None
    for section in (config, config.get("text_config") or {}):
        for key in BLOCK_COUNT_KEYS:
            if isinstance(section.get(key), int):
                return section[key]
    raise BiosaeError(
        f"config key model.name: the config.json of {model_section['name']!r} names no layer count "
        f"(none of {', '.join(BLOCK_COUNT_KEYS)})"
    )


def depth(layer: int, n_layer: int) -> int:
    """Blocks before the hook point: -1 resolved to n_layer."""
    return n_layer if layer == -1 else layer


def profile_layers(config: dict, n_layer: int) -> list[int]:
    """Every layer label of the profile, ``activations.layer`` included, shallowest first."""
    seed_layer = config["activations"]["layer"]
    listed = config["sweep"]["layers"]
    if listed == ALL_LAYERS:
        last = n_layer if seed_layer == n_layer else -1
        listed = [*range(n_layer), last]
    return sorted({*listed, seed_layer}, key=lambda layer: depth(layer, n_layer))
