#!/usr/bin/env bash
# The main job: set up .venv if needed, then run the quickstart pipeline on the
# built-in real data: train a teacher, distill a tiny student, compare them.
# Extra arguments go to `pcdistill demo` (e.g. --data ../shared/data/modelnet40_hdf5_1024).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
venv="${PCDISTILL_VENV:-$root/.venv}"
cd "$root"
"$venv/bin/pcdistill" demo --out "${PCDISTILL_DEMO_OUT:-runs/demo}" "$@"
