"""int8: the quantized graph runs, quantizes every weight layer and nothing that picks
neighbours, and predicts like the float model on real test shapes."""

from pathlib import Path

import numpy as np
import pytest
import torch

from pcdistill.data import builtin_dataset
from pcdistill.data.preprocess import input_recipe
from pcdistill.deploy.export import read_metadata
from pcdistill.deploy.predict import predict_files
from pcdistill.deploy.quantize import quantize_checkpoint
from pcdistill.engine.checkpoint import model_spec, save_model
from pcdistill.engine.config import RunConfig
from pcdistill.errors import ConfigError
from pcdistill.models import create_model
from pcdistill.models.paths import use_path

pytest.importorskip("onnxruntime")

NUM_POINTS = 256
# int8 must pick the float model's class on at least this fraction of the test shapes
# (this barely trained model's margins are small: fixture seeds 0, 1, 3, 4 gave dynamic 0.90-0.98,
# static 0.88-0.93) and lose at most 6 of 120 shapes.
MIN_AGREEMENT = {"dynamic": 0.9, "static": 0.8}
MAX_ACC_DROP = 0.05


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A small DGCNN trained for 10 epochs (~25 s) on the reference path, far from chance
    (2.5%), so its predictions differ from shape to shape and agreement means something.
    At this budget the seed and the CPU's BLAS rounding move test accuracy a lot: 22% at
    5 epochs on the machine this was written on, 9% on another (an AVX-512 Xeon), where 10
    epochs give 12.5% (int8 agreement: dynamic 0.95, static 0.91). The floor asserted
    below is three times chance."""
    train = builtin_dataset("train", num_points=NUM_POINTS)
    torch.manual_seed(0)
    model = create_model("dgcnn", num_classes=40, width=0.125)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.from_numpy(train.points), torch.from_numpy(train.labels)
    model.train()
    with use_path("reference"):  # torch's rounding: the fixture stays put when kernels change
        for _ in range(10):
            for batch in torch.randperm(len(x)).split(32):
                loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
    cfg = RunConfig().model_dump(mode="json")
    cfg["data"]["num_points"] = NUM_POINTS
    path = tmp_path_factory.mktemp("quant") / "dgcnn.pt"
    spec = model_spec("dgcnn", 40, 0.125)
    recipe = input_recipe(False, train.points)  # as the trainer records it
    save_model(path, model, spec, list(train.class_names), train.fingerprint(), cfg, recipe)
    return path


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_predicts_like_float(trained, tmp_path, mode):
    out = tmp_path / f"{mode}.onnx"
    r = quantize_checkpoint(trained, out, mode=mode, data="builtin", calibration=16, repeats=3)
    assert r.samples == 120 and r.float_acc > 3 / 40
    assert r.agreement >= MIN_AGREEMENT[mode] and r.int8_acc >= r.float_acc - MAX_ACC_DROP
    # every weight layer: each EdgeConv's first layer as two per-point matmuls (the fast
    # path's rewrite, exported as is), the embedding convolution and 3 head layers; the 3
    # feature-space kNN products stay float (a quantized distance picks other neighbours)
    assert sum(r.quantized.values()) == 12
    assert r.float_ops == {"MatMul": 8, "Conv": 1, "Gemm": 3}
    assert r.float_ms > 0 and r.int8_ms > 0 and r.threads >= 1
    assert read_metadata(out)["quantized"]["mode"] == mode
    cloud = tmp_path / "cloud.npy"
    np.save(cloud, builtin_dataset("test", num_points=NUM_POINTS).points[0])
    assert len(predict_files([cloud], out, top_k=3)[0].top) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([cloud.name, out.name])


def test_unknown_mode_is_refused(trained, tmp_path):
    with pytest.raises(ConfigError, match="unknown quantization mode 'int4'"):
        quantize_checkpoint(trained, tmp_path / "q.onnx", mode="int4")
