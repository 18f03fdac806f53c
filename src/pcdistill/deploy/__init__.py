"""Deployment: profiling now; ONNX export, int8 and prediction land with the deployment issue."""

from pcdistill.deploy.profile import count_flops, count_params, measure_latency

__all__ = ["count_flops", "count_params", "measure_latency"]
