"""pcdistill: compress point-cloud classifiers into tiny models by knowledge distillation."""

import os
import sys

__version__ = "0.1.0"

# torch's OpenMP workers (libgomp on Linux) spin for a while after every parallel op,
# holding the cores that our CPU kernels' helper threads run on next: on 2 cores our
# kernels ran no faster on 2 threads than on 1 right after a torch op. Told to sleep at
# once, the workers leave the cores free (BENCHMARKS.md, issue 11 latency). Only
# effective when pcdistill is imported before torch (as the command line does), and
# only if the user has not set it.
if "torch" not in sys.modules:
    os.environ.setdefault("GOMP_SPINCOUNT", "0")
