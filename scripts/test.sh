#!/usr/bin/env bash
# Set everything up and run the whole test suite: lint, format, types, unit, integration, e2e.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
echo "== ruff"; .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; .venv/bin/pytest -p no:cacheprovider -o console_output_style=classic -rfEs --durations=15 "$@"
