"""The side-by-side profile: one row per runtime, every column filled, bad names refused."""

import math

import pytest
import torch

from pcdistill.cli import main
from pcdistill.deploy.profile import matmul_gflops, profile_models

pytest.importorskip("onnxruntime")


def test_profile_rows_for_every_runtime():
    rows = profile_models(["dgcnn"], width=0.125, num_points=256, repeats=2)
    assert [r["runtime"] for r in rows] == ["torch", "onnx", "int8"]
    torch_row, onnx_row, int8_row = rows
    assert torch_row["params"] == 29_976 and torch_row["flops"] > 0
    assert int8_row["file_bytes"] < onnx_row["file_bytes"]  # int8 weights
    for r in rows:
        assert r["num_points"] == 256 and r["threads"] == 1
        assert 0 < r["b1_median_ms"] <= r["b1_p90_ms"] and r["throughput"] > 0
        assert math.isnan(r["peak_mb"]) or r["peak_mb"] >= 0


def test_profile_refuses_unknown_models(tmp_path, capsys):
    for name, words in [("pointnet9", "unknown model"), (str(tmp_path / "x.pt"), "not found")]:
        assert main(["profile", name, "--torch-only"]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and "\n" not in err


def test_profile_prints_flop_bound_next_to_latency(capsys):
    """The FLOP bound (FLOPs / measured matmul throughput) is printed per row, and no
    measured latency beats it — a bound above the latency would mean a wrong unit."""
    assert 1 < matmul_gflops(threads=1, size=256, repeats=3) < 10_000
    args = ["profile", "dgcnn", "--width", "0.125", "--num-points", "256",
            "--torch-only", "--repeats", "2"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "GFLOP/s" in out
    line = next(x for x in out.splitlines() if "FLOP bound" in x and x.startswith("dgcnn"))
    bound = float(line.split("FLOP bound ")[1].split(" ms")[0])
    batch1 = float(line.split("batch 1 ")[1].split(" ms")[0])
    assert 0 < bound < batch1


def test_flops_are_the_architectures_on_the_fast_path_too():
    """The fused kernels are invisible to torch's FLOP counter: FLOPs are counted on the
    reference path, so the tiny model keeps its conventional 128.2 MFLOPs per cloud."""
    from pcdistill.deploy.profile import count_flops
    from pcdistill.models import create_model

    flops = count_flops(create_model("pointnet2_msg", width=0.125), torch.rand(1, 1024, 3))
    assert 128.0e6 < flops < 128.5e6


def test_profile_takes_a_shipped_key_and_counts_its_weights_file():
    from pcdistill.models import pretrained

    key = "pointnet2_ssg.modelnet40"
    entry = pretrained.manifest()[key]
    (row,) = profile_models([key], runtimes=("torch",), batches=(1,), repeats=1)
    assert row["source"] == key and row["params"] == entry["params"]
    assert row["file_bytes"] == entry["bytes"]
