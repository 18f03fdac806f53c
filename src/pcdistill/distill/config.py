"""The distillation run config: a training config plus the teacher, the records, the
loss terms and the optional network-augmentation stage (one schema for every recipe
in configs/distill/).

    teacher: runs/teacher/last.pt     # live teacher (online) ...
    records: runs/records_k10         # ... or its recorded outputs (offline)
    loss:
      kd: {alpha: 0.9, tau: 4}
      nwsd: {beta: 0.1, target: copy}
    netaug: {epochs: 1}               # T3DNet stage 1 before the KD stage
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pcdistill.engine.config import InputPath, RunConfig, Section


class KDTerm(Section):
    alpha: float = Field(0.9, ge=0, le=1)  # KD's share: loss = (1 - alpha) CE + alpha KD
    tau: float = Field(4.0, gt=0)


class DKDTerm(Section):
    weight: float = Field(1.0, ge=0)
    alpha: float = Field(1.0, ge=0)
    beta: float = Field(8.0, ge=0)
    tau: float = Field(4.0, gt=0)


class FitNetTerm(Section):
    weight: float = Field(1.0, ge=0)


class FADTerm(Section):
    lam: float = Field(0.1, ge=0)
    critic: Literal["mlp", "teacher_head"] = "mlp"
    d_hidden: int = Field(256, ge=1)
    d_lr: float = Field(1e-4, gt=0)


class NWSDTerm(Section):
    beta: float = Field(0.1, ge=0)
    tau: float | None = Field(None, gt=0)  # default: the KD temperature (4 without KD)
    clip: float = Field(2.0, gt=0)
    warmup: float = Field(0.1, ge=0, le=1)  # fractions of the run
    decay_start: float = Field(0.5, ge=0, le=1)
    target: Literal["copy", "ema"] = "copy"  # previous prediction per recorded copy, or EMA
    ema_decay: float = Field(0.999, gt=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> NWSDTerm:
        if self.warmup > self.decay_start:
            raise ValueError(f"warmup ({self.warmup}) must not exceed decay_start "
                             f"({self.decay_start})")  # fmt: skip
        return self


class LossConfig(Section):
    ce_weight: float | None = Field(None, ge=0)  # default: 1 - kd.alpha with KD, else 1
    kd: KDTerm | None = None
    dkd: DKDTerm | None = None
    fitnet: FitNetTerm | None = None
    fad: FADTerm | None = None
    nwsd: NWSDTerm | None = None


class NetAugConfig(Section):
    epochs: int = Field(1, ge=1)
    expand: list[float] = Field(default_factory=lambda: [2.0, 3.0])  # widths × the tiny one
    widen_until: float = Field(0.5, ge=0, le=1)  # fraction of stage 1 with a wide sub-network
    bn_batches: int = Field(50, ge=1)  # batches for the tiny model's BatchNorm re-estimation

    @model_validator(mode="after")
    def _widths(self) -> NetAugConfig:
        if not self.expand or min(self.expand) < 1:
            raise ValueError(f"expand must list widths >= 1, got {self.expand}")
        return self


class DistillConfig(RunConfig):
    teacher: InputPath | None = None  # teacher checkpoint, run live unless records are given
    records: InputPath | None = None  # folder of record shards from `pcdistill record`
    loss: LossConfig = Field(default_factory=LossConfig)
    netaug: NetAugConfig | None = None

    @model_validator(mode="after")
    def _sources(self) -> DistillConfig:
        loss = self.loss
        needs = [n for n in ("kd", "dkd", "fitnet", "fad") if getattr(loss, n) is not None]
        if needs and not (self.teacher or self.records):
            raise ValueError(f"loss terms {needs} need teacher: (a checkpoint) or records:")
        if loss.nwsd and loss.nwsd.target == "copy" and not self.records:
            raise ValueError("loss.nwsd.target=copy needs records:; use target=ema without them")
        if loss.fad and loss.fad.critic == "teacher_head" and not self.teacher:
            raise ValueError("loss.fad.critic=teacher_head needs teacher: (its head is the critic)")
        return self
