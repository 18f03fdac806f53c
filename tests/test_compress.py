"""`pcdistill compress`: the whole path on a class-folder dataset, and a kill part-way."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from pcdistill.compress import compress
from pcdistill.data import builtin_dataset
from pcdistill.engine.checkpoint import load_checkpoint
from pcdistill.errors import ConfigError

pytest.importorskip("onnxruntime")
pytest.importorskip("matplotlib")

CLASSES = (0, 1, 2)
ARGS = dict(recipe="offline_kd", teacher_model="pointnet", teacher_width=0.125, teacher_epochs=1,
            epochs=2, num_points=512, copies=2, threads=1, batch_size=8,
            overrides=["train.checkpoint_every=1"])  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three ModelNet40 classes of the built-in data as class folders of .npy clouds."""
    root = tmp_path_factory.mktemp("shapes")
    for split in ("train", "test"):
        data = builtin_dataset(split)
        for c in CLASSES:
            for i, row in enumerate(np.flatnonzero(data.labels == c)):
                path = root / data.class_names[c] / split / f"{i}.npy"
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, data.points[row])
    return root


def _cli(folder, out) -> list[str]:
    a = ARGS
    return [sys.executable, "-m", "pcdistill", "compress", "--data", str(folder),
            "--out", str(out), "--recipe", a["recipe"], "--teacher-model", a["teacher_model"],
            "--teacher-width", str(a["teacher_width"]),
            "--teacher-epochs", str(a["teacher_epochs"]),
            "--epochs", str(a["epochs"]), "--num-points", str(a["num_points"]),
            "--copies", str(a["copies"]), "--threads", "1", "--batch-size", str(a["batch_size"]),
            "--quiet", *a["overrides"]]  # fmt: skip


def test_compress_runs_end_to_end_and_a_killed_run_finishes_the_same(folder, tmp_path):
    """Both runs in fresh processes (on a clean checkout the first one compiles the
    kernels and the second loads them from numba's cache: the same floats either way)."""
    full = tmp_path / "full"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(_cli(folder, full), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    table = done.stdout
    summary = json.loads((full / "summary.json").read_text())
    outputs = ("compress.json", "records", "student.onnx", "student_int8.onnx", "profile.json",
               "summary.md", "report/report.md", "report/curves.png")  # fmt: skip
    for name in outputs:
        assert (full / name).exists(), name
    assert "| teacher | pointnet x0.125 |" in table
    assert "| student | pointnet2_msg x0.125 |" in table
    assert {r["runtime"] for r in summary["profile"]} == {"torch", "onnx", "int8"}
    assert 0 <= summary["accuracy"]["student"]["oa"] <= 1

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(folder, killed), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline and not (killed / "student" / "last.pt").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "student" / "summary.json").exists(), "the kill must land mid-student"
    rerun = subprocess.run(_cli(folder, killed), env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    a = load_checkpoint(full / "student" / "last.pt")["state_dict"]
    b = load_checkpoint(killed / "student" / "last.pt")["state_dict"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    test = [json.loads((d / "student" / "summary.json").read_text())["test_last"]
            for d in (full, killed)]  # fmt: skip
    assert test[0] == test[1]

    with pytest.raises(ConfigError, match=r"other settings \(recipe: 'offline_kd' -> 'kd'\)"):
        compress(str(folder), killed, **{**ARGS, "recipe": "kd"})
