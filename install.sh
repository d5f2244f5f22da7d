# Sourced by run.sh and test.sh: a virtual environment with the pinned dependencies.
# torch is pinned to 2.13.0 (CPU wheels on a laptop; on a GPU node install the CUDA wheel of the
# same version first). The stamp file skips the install when pyproject.toml hasn't changed.
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e .
    touch .venv/.installed
fi
