#!/usr/bin/env bash
# The main job: set up .venv if needed, then run the quickstart pipeline.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
venv="${PCDISTILL_VENV:-$root/.venv}"
cd "$root"
"$venv/bin/pcdistill" models
"$venv/bin/pcdistill" models --width 0.125
