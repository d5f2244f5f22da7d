#!/usr/bin/env bash
# Quick start 1: install biosae into .venv (first time only) and run the whole default
# pipeline on this machine. Extra arguments go to snakemake (e.g. -n for a dry run).
set -euo pipefail
cd "$(dirname "$0")"
source ./install.sh
exec .venv/bin/snakemake --cores "${BIOSAE_CORES:-all}" "$@"
