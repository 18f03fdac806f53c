#!/usr/bin/env bash
# The test command: set up .venv if needed, lint, then run the whole test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
venv="${PCDISTILL_VENV:-$root/.venv}"
cd "$root"
"$venv/bin/ruff" check src tests benchmarks scripts
"$venv/bin/python" -m pytest -q -n 2 "$@"  # two workers: one per core here
