"""pcdistill: compress point-cloud classifiers into tiny models by knowledge distillation."""

__version__ = "0.1.0"
