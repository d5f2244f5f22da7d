#!/usr/bin/env bash
# Quick start 1: install biosae into .venv (first time only) and run the whole default
# pipeline on this machine. Extra arguments go to snakemake (e.g. -n for a dry run).
set -euo pipefail
cd "$(dirname "$0")"
source ./install.sh

# Snakemake refuses dotted keys in --config; write sae.lambda_align=2.0 as the nested form it
# takes, sae={lambda_align: 2.0} (a.b.c=v becomes a={b: {c: v}}).
nested_config_entry() {
    local key="${1%%=*}" entry="${1#*=}" parts i
    IFS=. read -ra parts <<< "$key"
    for ((i = ${#parts[@]} - 1; i > 0; i--)); do
        entry="{${parts[i]}: $entry}"
    done
    printf '%s=%s' "${parts[0]}" "$entry"
}
dotted='^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+='
args=()
in_config=0
for arg in "$@"; do
    case "$arg" in
        --config | -C) in_config=1 ;;
        --config=*) [[ ${arg#--config=} =~ $dotted ]] && arg="--config=$(nested_config_entry "${arg#--config=}")"; in_config=1 ;;
        -*) in_config=0 ;;
        *) ((in_config)) && [[ $arg =~ $dotted ]] && arg=$(nested_config_entry "$arg") ;;
    esac
    args+=("$arg")
done
exec .venv/bin/snakemake --cores "${BIOSAE_CORES:-all}" "${args[@]}"
