#!/usr/bin/env bash
# The main job on the built-in real data (320 + 120 ModelNet40 shapes shipped in the
# package): set up .venv if needed, then `pcdistill compress` with the shipped PointNet++
# teacher: records, T3DNet's tiny student, ONNX + int8, profile, report, and a table of the
# teacher, this student and (when it ships) the fully trained tiny student. Rerunning it
# continues where it stopped; extra arguments go to `pcdistill compress`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
venv="${PCDISTILL_VENV:-$root/.venv}"
cd "$root"
"$venv/bin/pcdistill" compress --data builtin --out "${PCDISTILL_QUICKSTART_OUT:-runs/quickstart}" \
    --teacher pointnet2_ssg.modelnet40 --recipe t3dnet --epochs 10 --copies 4 --threads 2 "$@"
