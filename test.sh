#!/usr/bin/env bash
# Quick start 2: install biosae into .venv (first time only) and run the test suite.
# Extra arguments go to pytest (e.g. -k dataset).
set -euo pipefail
cd "$(dirname "$0")"
source ./install.sh
exec .venv/bin/python -m pytest "$@"
