"""Compare two runs' metrics.json files number by number.

Usage: .venv/bin/python bench/compare_metrics.py RESULTS_A RESULTS_B [--tolerance 1e-6]

Walks every metrics.json under both results directories (the default run's and every profile
layer's and seed's), and reports each number that differs by more than the tolerance, each key
present in one only, and each string or bool that differs. Exit status 1 if anything differs.
A change that must not move the numbers (a refactor) is checked this way: the default pipeline
run before and after it, from clean clones, and the two results directories compared.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def differences(a, b, path: str, tolerance: float):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                yield f"{path}.{key}: only in {'B' if key not in a else 'A'}"
            else:
                yield from differences(a[key], b[key], f"{path}.{key}", tolerance)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            yield f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            yield from differences(x, y, f"{path}[{i}]", tolerance)
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if math.isnan(a) and math.isnan(b):
            return
        if not abs(a - b) <= tolerance:
            yield f"{path}: {a!r} != {b!r}"
    elif a != b:
        yield f"{path}: {a!r} != {b!r}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--tolerance", type=float, default=1e-6)
    args = parser.parse_args(argv)
    files_a = {p.relative_to(args.a) for p in args.a.rglob("metrics.json")}
    files_b = {p.relative_to(args.b) for p in args.b.rglob("metrics.json")}
    found = [f"{name}: only in {'A' if name in files_a else 'B'}" for name in sorted(files_a ^ files_b)]
    for name in sorted(files_a & files_b):
        a, b = (json.loads((root / name).read_text()) for root in (args.a, args.b))
        found += [f"{name}: {line}" for line in differences(a, b, "", args.tolerance)]
    print(
        f"{len(files_a & files_b)} metrics.json files compared, tolerance {args.tolerance:g}: "
        f"{'no difference' if not found else f'{len(found)} difference(s)'}"
    )
    for line in found[:200]:
        print(" ", line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
