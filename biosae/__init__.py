"""biosae: do a language model's answer-position activations separate which attribute is asked?

The library behind the Snakemake workflow. Every stage is a plain function here, testable
without Snakemake; ``workflow_scripts/`` only turn the ``snakemake`` object into these calls.
A finished run opens in Python with ``biosae.open_run("results")`` (biosae.api).
"""

import importlib

from biosae.rules import EVALUATION_CELLS, RULE_ATTRIBUTE_WORDS, RULES

__all__ = ["RULES", "RULE_ATTRIBUTE_WORDS", "EVALUATION_CELLS", "open_run"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """``open_run`` comes from biosae.api on first use, so that ``import biosae`` stays light (no
    torch) for the config check and the workflow's jobs. biosae.api sits at the top of the
    package and imports the layers below it, which all run this module first: it is named by
    string, imported only after this module has run, never by a module below it."""
    if name == "open_run":
        return importlib.import_module("biosae.api").open_run
    raise AttributeError(f"module 'biosae' has no attribute {name!r}")
