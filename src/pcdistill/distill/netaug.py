"""T3DNet stage 1: network augmentation of a tiny model (Yang et al. 2024, arXiv 2402.19264).

The tiny model lives inside a supernet whose hidden widths are up to `max_expand`
times larger; every width in between is a sub-network made of the *leading*
channels of each layer, so the tiny model is exactly the first channels of the
supernet. Training adds, to the tiny model's loss, the loss of a randomly
widened sub-network, so the shared weights learn from a bigger model's gradient.

Where PointNet++ concatenates (the [xyz, features] input of each level, and the
MSG branches' outputs) a leading slice would mix segments, so input channels are
picked per segment: xyz, then the leading channels of each branch in turn.
Network augmentation is implemented for the PointNet++ family (SSG and MSG),
the architecture of T3DNet's tiny model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from pcdistill.errors import ModelError
from pcdistill.models import create_model
from pcdistill.models.pointnet2 import PointNet2

SUPPORTED = ("pointnet2_ssg", "pointnet2_msg")


class NetAugSuperNet(nn.Module):
    """Holds the supernet's weights; runs any width in [width, width·max_expand] by slicing."""

    def __init__(
        self, name: str, num_classes: int, width: float, max_expand: float = 3.0, **kwargs
    ) -> None:
        super().__init__()
        if name not in SUPPORTED:
            raise ModelError(f"network augmentation supports {SUPPORTED}, not {name!r}")
        if max_expand < 1:
            raise ModelError(f"max_expand must be >= 1, got {max_expand}")
        self.name, self.num_classes, self.width = name, num_classes, width
        self.max_expand, self.kwargs = max_expand, kwargs
        self.supernet = create_model(name, num_classes, width * max_expand, **kwargs)
        self._skeletons: dict[float, PointNet2] = {}

    def skeleton(self, expand: float) -> PointNet2:
        """A model of the sub-network's shape; its own weights are never used."""
        if not 1 <= expand <= self.max_expand:
            raise ModelError(f"expand must be in [1, {self.max_expand}], got {expand}")
        if expand not in self._skeletons:
            model = create_model(self.name, self.num_classes, self.width * expand, **self.kwargs)
            self._skeletons[expand] = model.to(next(self.supernet.parameters()).device)
        return self._skeletons[expand]

    def sliced_state(self, expand: float) -> dict[str, Tensor]:
        """The supernet's tensors cut to the sub-network's shapes (differentiable views)."""
        sub = self.skeleton(expand)
        full = dict(self.supernet.named_parameters()) | dict(self.supernet.named_buffers())
        state = {}
        for key, target in list(sub.named_parameters()) + list(sub.named_buffers()):
            t = full[key]
            if t.shape == target.shape:
                state[key] = t
                continue
            t = t[: target.shape[0]]  # output channels: always the leading ones
            if t.ndim > 1 and t.shape[1] != target.shape[1]:
                t = t.index_select(1, self._input_channels(key, sub, target.shape[1]))
            state[key] = t
        return state

    def _input_channels(self, key: str, sub: PointNet2, count: int) -> Tensor:
        """Indices of the supernet input channels that feed a sub-network layer."""
        parts = key.split(".")
        device = next(self.supernet.parameters()).device
        if parts[0] == "levels" and parts[4] == "0" and int(parts[1]) > 0:
            level = int(parts[1])
            pieces = [torch.arange(3, device=device)]  # relative xyz
            offset = 3
            for sup, small in zip(self.supernet.levels[level - 1].branches,
                                  sub.levels[level - 1].branches, strict=True):  # fmt: skip
                pieces.append(offset + torch.arange(_out_channels(small), device=device))
                offset += _out_channels(sup)
            index = torch.cat(pieces)
        else:
            index = torch.arange(count, device=device)
        if len(index) != count:
            raise ModelError(f"cannot map input channels of {key}: {len(index)} != {count}")
        return index

    def forward(self, points: Tensor, expand: float = 1.0, return_features: bool = False):
        sub = self.skeleton(expand)
        sub.train(self.training)
        kwargs = {"return_features": return_features}
        return functional_call(sub, self.sliced_state(expand), (points,), kwargs)

    def export_tiny(self) -> PointNet2:
        """The tiny model as a plain zoo model (`create_model(name, width=width)`)."""
        tiny = create_model(self.name, self.num_classes, self.width, **self.kwargs)
        tiny.load_state_dict({k: v.detach().clone() for k, v in self.sliced_state(1.0).items()})
        return tiny


def _out_channels(branch: nn.Sequential) -> int:
    convs = [m for m in branch if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, batches, max_batches: int = 50) -> None:
    """Recompute BatchNorm running statistics as exact averages over `batches` of points.

    After network augmentation the shared statistics mix all widths; the tiny
    model needs its own (T3DNet re-estimates them at the end of stage 1).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: an exact mean over the batches seen
    model.eval()  # dropout off: statistics must see what evaluation will see
    for m in norms:
        m.train()
    for i, points in enumerate(batches):
        if i >= max_batches:
            break
        model(points)
    model.eval()
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum


class NetAugObjective:
    """Stage-1 loss: CE(tiny) + CE(a randomly widened sub-network), one optimizer step on
    the summed gradients. Widening stops after `widen_until` of training, so the last
    part trains the tiny model alone (DESIGN.md). The width is drawn from the global
    RNG, which the trainer seeds per step, so runs and resumes stay reproducible.
    """

    def __init__(
        self, expand_choices: tuple[float, ...] = (2.0, 3.0), widen_until: float = 0.5,
        label_smoothing: float = 0.0,
    ) -> None:  # fmt: skip
        if not expand_choices or min(expand_choices) < 1:
            raise ValueError(f"expand_choices must be widths >= 1, got {expand_choices}")
        self.expand_choices = tuple(expand_choices)
        self.widen_until, self.label_smoothing = widen_until, label_smoothing
        self.progress = 0.0

    def set_progress(self, progress: float) -> None:
        self.progress = progress

    def __call__(self, model: NetAugSuperNet, batch) -> tuple[Tensor, Tensor]:
        ce = torch.nn.functional.cross_entropy
        logits = model(batch.points, expand=1.0)
        loss = ce(logits, batch.labels, label_smoothing=self.label_smoothing)
        if self.progress < self.widen_until:
            pick = int(torch.randint(len(self.expand_choices), ()).item())
            wide = model(batch.points, expand=self.expand_choices[pick])
            loss = loss + ce(wide, batch.labels, label_smoothing=self.label_smoothing)
        return loss, logits
