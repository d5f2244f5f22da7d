#!/usr/bin/env bash
# Quick start 2: install biosae into .venv (first time only) and run the test suite.
# Extra arguments go to pytest (e.g. -k dataset; -n 0 runs every test in this one process).
# One pytest-xdist worker per core, at most 4, each test file on one worker (its module fixtures
# are made once): in one process the suite kept 0.74 of 2 cores busy, its tests mostly waiting on
# Snakemake subprocesses (17.2 min; 10.4 min on two workers).
set -euo pipefail
cd "$(dirname "$0")"
source ./install.sh
exec .venv/bin/python -m pytest --numprocesses auto --maxprocesses 4 --dist loadfile "$@"
