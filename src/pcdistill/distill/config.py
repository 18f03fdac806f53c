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
    alpha: float = Field(
        0.9, ge=0, le=1, description=("KD's share: loss = (1 - alpha) CE + alpha KD")
    )
    tau: float = Field(4.0, gt=0, description="softmax temperature (the KD term is x tau^2)")


class DKDTerm(Section):
    weight: float = Field(1.0, ge=0, description="weight of the DKD term")
    alpha: float = Field(1.0, ge=0, description="weight of target-class KD (TCKD)")
    beta: float = Field(8.0, ge=0, description="weight of non-target-class KD (NCKD)")
    tau: float = Field(4.0, gt=0, description="softmax temperature")


class FitNetTerm(Section):
    weight: float = Field(
        1.0,
        ge=0,
        description=("weight of the global-feature regression (offline: needs record --features)"),
    )


class FADTerm(Section):
    lam: float = Field(0.1, ge=0, description="weight of the adversarial feature term")
    critic: Literal["mlp", "teacher_head"] = Field(
        "mlp", description=("the discriminator: a small MLP, or the teacher's own head")
    )
    d_hidden: int = Field(256, ge=1, description="the MLP critic's hidden width")
    d_lr: float = Field(1e-4, gt=0, description="the critic's learning rate")


class NWSDTerm(Section):
    beta: float = Field(0.1, ge=0, description="peak weight of the negative self-distillation")
    tau: float | None = Field(
        None, gt=0, description=("temperature; null: the KD temperature (4 without KD)")
    )
    clip: float = Field(2.0, gt=0, description="per-sample clip of the tau^2-scaled divergence")
    warmup: float = Field(
        0.1, ge=0, le=1, description=("fraction of the run over which beta ramps up")
    )
    decay_start: float = Field(
        0.5, ge=0, le=1, description=("fraction of the run after which beta decays to 0")
    )
    target: Literal["copy", "ema"] = Field(
        "copy",
        description=(
            "the stale target: the previous prediction per recorded copy, or an EMA model"
        ),
    )
    ema_decay: float = Field(0.999, gt=0, lt=1, description="the EMA model's decay")

    @model_validator(mode="after")
    def _ordered(self) -> NWSDTerm:
        if self.warmup > self.decay_start:
            raise ValueError(f"warmup ({self.warmup}) must not exceed decay_start "
                             f"({self.decay_start})")  # fmt: skip
        return self


class LossConfig(Section):
    ce_weight: float | None = Field(
        None, ge=0, description=("cross-entropy weight; null: 1 - kd.alpha with KD, else 1")
    )
    kd: KDTerm | None = Field(None, description="Hinton KD on the teacher's logits")
    dkd: DKDTerm | None = Field(None, description="decoupled KD (Zhao et al. 2022)")
    fitnet: FitNetTerm | None = Field(None, description="FitNet on the global features")
    fad: FADTerm | None = Field(None, description="feature adversarial distillation")
    nwsd: NWSDTerm | None = Field(None, description="negative-weight self-distillation")


class NetAugConfig(Section):
    epochs: int = Field(1, ge=1, description="epochs of the network-augmentation stage")
    expand: list[float] = Field(
        default_factory=lambda: [2.0, 3.0],
        description=("supernet widths, as multiples of the tiny model's"),
    )
    widen_until: float = Field(
        0.5, ge=0, le=1, description=("fraction of stage 1 that also trains a wide sub-network")
    )
    bn_batches: int = Field(
        50, ge=1, description=("batches for the tiny model's BatchNorm re-estimation")
    )

    @model_validator(mode="after")
    def _widths(self) -> NetAugConfig:
        if not self.expand or min(self.expand) < 1:
            raise ValueError(f"expand must list widths >= 1, got {self.expand}")
        return self


class DistillConfig(RunConfig):
    teacher: InputPath | None = Field(
        None, description=("teacher checkpoint or shipped key, run live unless records are given")
    )
    records: InputPath | None = Field(
        None,
        description=(
            "folder of record shards from `pcdistill record` (offline: no teacher in memory)"
        ),
    )
    loss: LossConfig = Field(default_factory=LossConfig)
    netaug: NetAugConfig | None = Field(
        None, description=("T3DNet's network-augmentation stage before the distillation stage")
    )

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
