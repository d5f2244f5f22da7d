"""Shared by the workflow scripts: logging to the rule's log file and one-line errors."""

import contextlib
import logging
import sys

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
