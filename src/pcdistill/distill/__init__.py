"""Distillation: one file per method or loss term (DESIGN.md), combined by `Distill`."""

from pcdistill.distill.dkd import DKD, dkd_loss
from pcdistill.distill.fad import FAD
from pcdistill.distill.fitnet import FitNet
from pcdistill.distill.kd import KD, kd_loss
from pcdistill.distill.nwsd import NWSD, CopyTargets, EMATarget
from pcdistill.distill.objective import Distill, Outputs

__all__ = ["DKD", "FAD", "KD", "NWSD", "CopyTargets", "Distill", "EMATarget", "FitNet",
           "Outputs", "dkd_loss", "kd_loss"]  # fmt: skip
