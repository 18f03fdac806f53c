"""Distillation methods, one file per method or loss term (DESIGN.md)."""

from pcdistill.distill.kd import OnlineKD, kd_loss
from pcdistill.distill.offline import NWSDSettings, OfflineKD

__all__ = ["NWSDSettings", "OfflineKD", "OnlineKD", "kd_loss"]
