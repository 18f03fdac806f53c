"""Deployment: size and speed (`profile`), ONNX export with a parity check (`export`),
int8 quantization (`quantize`) and single-file prediction (`predict`).

ONNX export, int8 and predicting with an .onnx file need the `export` extra
(onnx, onnxruntime); they import it only when called.
"""

from pcdistill.deploy.export import export_onnx
from pcdistill.deploy.predict import predict_files
from pcdistill.deploy.profile import count_flops, count_params, measure_latency, time_call
from pcdistill.deploy.quantize import quantize_checkpoint

__all__ = [
    "count_flops",
    "count_params",
    "export_onnx",
    "measure_latency",
    "predict_files",
    "quantize_checkpoint",
    "time_call",
]
