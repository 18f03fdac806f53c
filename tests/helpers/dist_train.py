"""Launched by tests/test_distributed.py under torchrun: train, then every rank saves the
parameters and buffers it holds (rank files are test output, not a pcdistill feature).

`--float64` trains in double precision: BatchNorm's backward over ~10^5 values per
channel cancels large sums, so float32 runs of one and two processes drift apart by
rounding alone; in float64 any real difference stands out.
"""

import sys

import torch

from pcdistill.engine.checkpoint import model_spec
from pcdistill.engine.config import load_config
from pcdistill.engine.run import build_trainer
from pcdistill.models import create_model

out, args = sys.argv[1], sys.argv[2:]
double = "--float64" in args
cfg = load_config(None, [f"out={out}", *(a for a in args if a != "--float64")])
torch.manual_seed(cfg.seed)
model = create_model(cfg.model.name, 10, cfg.model.width)
# A dropout mask depends on the shape of the slice a rank holds, so a 2-rank run could not
# equal a 1-process run with it on; these tests compare everything else.
for module in model.modules():
    if isinstance(module, torch.nn.Dropout):
        module.p = 0.0
if double:
    model.double()
    model.register_forward_pre_hook(lambda _, inputs: tuple(x.double() for x in inputs))
spec = model_spec(cfg.model.name, 10, cfg.model.width)
trainer = build_trainer(cfg, quiet=True, model=model, spec=spec)
trainer.fit()
torch.save(trainer.model.state_dict(), f"{out}/rank{trainer.world.rank}.pt")
