"""Which implementation the point ops run: compiled CPU kernels or plain torch.

"auto" (the default) runs the numba kernels of `cpu_kernels` for float CPU tensors,
because they are several times faster there (BENCHMARKS.md), and plain torch
everywhere else: on GPU/MPS, for other dtypes, and whenever the call is being
traced, compiled or exported, where a call into numpy would be baked into the
graph as a constant. "torch" forces the plain torch path, so benchmarks and tests
can compare the two. Both give identical indices (see `cpu_kernels` for ties).
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

BACKENDS = ("auto", "torch")
_KERNEL_DTYPES = (torch.float32, torch.float64)

_backend = "auto"


def get_backend() -> str:
    """The current backend name, "auto" or "torch"."""
    return _backend


def set_backend(name: str) -> None:
    """Select "auto" (CPU kernels where they apply) or "torch" (always plain torch)."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"unknown point-ops backend {name!r}; choose one of {BACKENDS}")
    _backend = name


@contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run a block with another backend, restoring the previous one afterwards."""
    previous = _backend
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def building_graph() -> bool:
    """True while torch records a graph (jit trace, ONNX export, torch.compile/export)."""
    return (
        torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
        or torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
    )


def use_cpu_kernels(*tensors: Tensor) -> bool:
    """Whether an op on these tensors should run the compiled CPU kernels."""
    return (
        _backend == "auto"
        and all(t.device.type == "cpu" and t.dtype in _KERNEL_DTYPES for t in tensors)
        and len({t.dtype for t in tensors}) == 1
        and not building_graph()
    )
