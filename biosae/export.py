"""``python -m biosae.export [RESULTS] [--out DIR]``: a finished run's TopK SAEs in SAELens's
on-disk format, one directory per layer (biosae.api.Run.export_saelens; docs/saelens.md)."""

from __future__ import annotations

import argparse
import sys

from biosae import layout
from biosae.api import open_run
from biosae.errors import BiosaeError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m biosae.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", default=layout.RESULTS, help="a finished run's results directory")
    parser.add_argument(
        "--out", default=None, help="where to write layer_<L>/ (default: RESULTS/saelens/sae_unsupervised)"
    )
    args = parser.parse_args(argv)
    try:
        written = open_run(args.results).export_saelens(args.out)
    except BiosaeError as error:
        print(f"biosae export: {error}", file=sys.stderr)
        return 1
    for directory in written:
        print(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
