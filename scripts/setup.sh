#!/usr/bin/env bash
# Create ./.venv if missing and install pcdistill into it (editable, with dev tools).
# Where no NVIDIA GPU is present, PyTorch's CPU build is installed first, and the
# install is refused if the resolver would pull CUDA packages (several GB).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PCDISTILL_VENV:-$root/.venv}"
torch_spec="${PCDISTILL_TORCH:-torch==2.13.0}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "[setup] creating virtual environment $venv"
    "$python" -m venv "$venv"
fi
pip() { "$venv/bin/python" -m pip "$@"; }

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

if ! "$venv/bin/python" -c "import torch" >/dev/null 2>&1; then
    if has_gpu; then
        echo "[setup] NVIDIA GPU found: installing $torch_spec (CUDA build)"
        pip install -q "$torch_spec"
    else
        echo "[setup] no GPU: installing the CPU build of $torch_spec"
        plan="$(mktemp)"
        pip install -q --dry-run --ignore-installed --report "$plan" "$torch_spec"
        if grep -q '"name": "nvidia-' "$plan"; then
            echo "[setup] refusing: '$torch_spec' resolves to the CUDA build here (nvidia-* packages)." >&2
            echo "[setup] Point pip at a CPU wheel (PIP_FIND_LINKS or PIP_EXTRA_INDEX_URL for PyTorch's CPU index) and retry." >&2
            rm -f "$plan"
            exit 1
        fi
        rm -f "$plan"
        pip install -q "$torch_spec"
    fi
fi

stamp="$venv/.pcdistill-installed"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
    echo "[setup] installing pcdistill (editable) and its dependencies"
    pip install -q -e "$root[dev]"
    touch "$stamp"
fi
