#!/usr/bin/env bash
# Install everything the test suite needs and run it: lint, types, then all tests, including the
# real-model accuracy tests against the AutoAWQ 0.2.9 reference (its own venv, .venv-ref).
#
#   bash scripts/test.sh [pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/install.sh
bash scripts/setup_reference.sh
.venv/bin/ruff check src tests benchmarks scripts
.venv/bin/mypy
FASTAWQ_REQUIRE_REFERENCE=1 .venv/bin/python -m pytest -q -m "not gpu" --durations=15 "$@"
