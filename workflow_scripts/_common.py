"""Shared by the workflow scripts: logging to the rule's log file and one-line errors."""

import contextlib
import logging
import sys
from pathlib import Path

from biosae import layout
from biosae.errors import BiosaeError


@contextlib.contextmanager
def rule_context(snakemake):
    """Send logging to the rule's log (and stderr); turn BiosaeError into one line, exit 1."""
    handlers = [logging.StreamHandler(sys.stderr)]
    if snakemake.log:
        handlers.append(logging.FileHandler(str(snakemake.log[0]), mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", handlers=handlers, force=True)
    try:
        yield logging.getLogger(f"biosae.{snakemake.rule}")
    except BiosaeError as error:
        logging.getLogger("biosae").error("biosae error: %s", error)
        sys.exit(1)


def profile_layer_files(output_paths, index_path) -> list[tuple[str, Path]]:
    """For each output of a job that trains every profile layer (…/layer_<L>/<file>): the layer's
    name ("layer_<L>") and the activation file its activations job wrote beside ``index_path``.
    The index, not the layer files, is such a job's input: rules/sae.smk says why."""
    layers = [layout.layer_of(path) for path in output_paths]
    return [(layout.layer_name(layer), layout.activation_file_beside(index_path, layer)) for layer in layers]


def job_device(snakemake):
    """The torch device of config ``training.device`` (biosae.devices.pick_device), read from the
    job's config rather than a rule's params: where a job runs, like its threads, reruns nothing."""
    from biosae.devices import pick_device

    return pick_device(snakemake.config["training"]["device"])
