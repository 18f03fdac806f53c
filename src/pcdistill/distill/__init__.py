"""Distillation methods, one file per method or loss term (DESIGN.md)."""

from pcdistill.distill.kd import OnlineKD, kd_loss

__all__ = ["OnlineKD", "kd_loss"]
