"""biosae: do a language model's answer-position activations separate which attribute is asked?

The library behind the Snakemake workflow. Every stage is a plain function here, testable
without Snakemake; ``workflow_scripts/`` only turn the ``snakemake`` object into these calls.
"""

from biosae.rules import EVALUATION_CELLS, RULE_ATTRIBUTE_WORDS, RULES

__all__ = ["RULES", "RULE_ATTRIBUTE_WORDS", "EVALUATION_CELLS"]
__version__ = "0.1.0"
