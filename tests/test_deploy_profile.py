"""The side-by-side profile: one row per runtime, every column filled, bad names refused."""

import math

import pytest

from pcdistill.cli import main
from pcdistill.deploy.profile import profile_models

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
