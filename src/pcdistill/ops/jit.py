"""The numba decorator of the fused float kernels (`mlp_kernels`, `norm_kernels`).

Reassociation and contraction are allowed so that the reductions and multiply-adds
vectorise. Every function is also force-inlined into its callers, which makes a
kernel's float results independent of whether it was compiled in this process or
loaded from numba's on-disk cache (`cache=True`). Without it they differed: a freshly
compiled kernel called its helpers' own machine code, while a cached kernel runs the
copies of those helpers linked into its object, which LLVM optimised a second time
and, being free to reassociate, rounded differently (two fresh processes trained
different weights from the same seed, one compiling and one loading the cache;
tests/test_fast_path.py holds both equal). Inlining leaves one copy of each helper,
optimised once inside its caller; the training step measured the same speed
(0.99x, BENCHMARKS.md).
"""

import numba

fused_jit = numba.njit(nogil=True, cache=True, fastmath={"reassoc", "nsz", "contract"},
                       forceinline=True)  # fmt: skip
