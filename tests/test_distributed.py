"""torchrun with 2 CPU processes (gloo): identical replicas, SyncBatchNorm == one process
over the same global batch, sharded recording == one recording, clear errors."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pcdistill.engine.config import load_config
from pcdistill.engine.run import load_set
from pcdistill.records import read_records
from pcdistill.transforms import default_shape_augment

WORKER = Path(__file__).parent / "helpers" / "dist_train.py"
# 80 built-in ModelNet10 training shapes, 5 steps of a global batch of 16.
SMALL = ["data.root=builtin", "data.num_points=512", "data.classes=modelnet10",
         "model.name=pointnet2_msg", "model.width=0.125", "train.epochs=1",
         "train.batch_size=16", "optim.name=adam", "optim.lr=0.01", "train.threads=1"]  # fmt: skip


def torchrun(nproc: int, *argv: str) -> subprocess.CompletedProcess:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
           "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
           "--master_port", str(port), *argv]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def train(tmp: Path, nproc: int, *overrides: str) -> list[dict]:
    run = torchrun(nproc, str(WORKER), str(tmp), *SMALL, *overrides)
    assert run.returncode == 0, run.stderr[-3000:]
    return [torch.load(tmp / f"rank{r}.pt") for r in range(nproc)]


def test_two_ranks_hold_identical_weights(tmp_path):
    """Plain DDP (no SyncBatchNorm): the replicas never drift apart."""
    ranks = train(tmp_path, 2)
    for key, value in ranks[0].items():
        if "running" not in key and "num_batches" not in key:  # BN buffers are per slice
            assert torch.equal(value, ranks[1][key]), key


def test_sync_batchnorm_over_two_ranks_equals_one_process(tmp_path):
    """Both ranks end with the weights of one process over the same global batches, and
    rank 0 alone logs."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    # SGD: Adam would turn the rounding noise in the gradient of a bias that feeds a
    # BatchNorm (mathematically zero) into full-size steps of either sign.
    single = train(tmp_path / "one", 1, "--float64", "optim.name=sgd")[0]
    ranks = train(tmp_path / "two", 2, "train.sync_bn=true", "--float64", "optim.name=sgd")
    for key, value in single.items():
        for rank in ranks:
            torch.testing.assert_close(rank[key], value, rtol=1e-9, atol=1e-9, msg=key)
    one = json.loads((tmp_path / "one" / "summary.json").read_text())["test_last"]
    two = json.loads((tmp_path / "two" / "summary.json").read_text())["test_last"]
    assert one["num_samples"] == two["num_samples"] == 30  # gathered, not per rank
    steps = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["event"] == "train_step"]  # fmt: skip
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5]  # written once, by rank 0


def test_two_rank_recording_merges_to_the_one_process_recording(tmp_path):
    cfg = load_config(None, [*SMALL[:3], "model.name=pointnet", "model.width=0.125",
                             f"out={tmp_path / 'teacher'}", "train.batch_size=16"])  # fmt: skip
    from pcdistill.engine.run import build_trainer

    build_trainer(cfg, quiet=True).fit()
    teacher = str(tmp_path / "teacher" / "last.pt")
    args = ["-m", "pcdistill", "record", "--teacher", teacher, "--copies", "3",
            "--batch-size", "8"]  # fmt: skip
    for nproc, out in ((2, "two"), (1, "one")):
        run = torchrun(nproc, *args, "--out", str(tmp_path / out))
        assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "records-00000-of-00002.h5", "records-00001-of-00002.h5"]  # fmt: skip
    data = load_set(cfg, "train")
    read = [read_records(tmp_path / out, dataset_fingerprint=data.fingerprint(),
                         class_names=data.class_names, augment_spec=default_shape_augment().spec())
            for out in ("one", "two")]  # fmt: skip
    assert np.array_equal(read[0].params, read[1].params)
    assert np.array_equal(read[0].logits.view(np.uint16), read[1].logits.view(np.uint16))


def test_a_global_batch_the_world_size_does_not_divide_is_refused(tmp_path):
    run = torchrun(2, "-m", "pcdistill", "train", *SMALL, "train.batch_size=15",
                   f"out={tmp_path}")  # fmt: skip
    assert run.returncode != 0
    assert "train.batch_size=15 (the global batch) is not divisible by the world size 2" in (
        run.stderr
    )


@pytest.mark.parametrize("flag", [["--shard", "1", "--num-shards", "2"]])
def test_record_under_torchrun_refuses_a_manual_shard(tmp_path, flag):
    run = torchrun(2, "-m", "pcdistill", "record", "--teacher", "missing.pt", *flag,
                   "--out", str(tmp_path))  # fmt: skip
    assert run.returncode != 0
    assert "each rank records its own shard; drop --shard/--num-shards" in run.stderr


def test_a_two_rank_run_resumes_to_the_uninterrupted_result(tmp_path):
    """Two epochs straight, against one epoch then `--resume` with the epoch count raised
    (a constant learning rate keeps the schedule independent of the total). PointNet:
    resuming does not depend on the model, and it is the quickest to train."""
    cli = ["-m", "pcdistill", "train", "--quiet", *SMALL, "sched.name=none", "model.name=pointnet"]
    straight = torchrun(2, *cli, "train.epochs=2", f"out={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr[-3000:]
    first = torchrun(2, *cli, f"out={tmp_path / 'resumed'}")
    assert first.returncode == 0, first.stderr[-3000:]
    config = tmp_path / "resumed" / "config.yaml"
    config.write_text(config.read_text().replace("epochs: 1", "epochs: 2"))
    again = torchrun(2, "-m", "pcdistill", "train", "--resume", str(tmp_path / "resumed"),
                     "--quiet")  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=False)
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert a["global_step"] == b["global_step"] == 10


def test_two_rank_distillation_gathers_the_nwsd_store_of_every_rank(tmp_path):
    """Offline KD + NWSD (per-copy target) under torchrun: rank 0's checkpoint must hold
    the predictions of the copies both ranks drew, not only its own half."""
    from pcdistill.engine.checkpoint import save_model
    from pcdistill.models import create_model
    from pcdistill.records.record import record_teacher

    cfg = load_config(None, [*SMALL, f"out={tmp_path / 'run'}"])
    data = load_set(cfg, "train")
    teacher = create_model("pointnet", num_classes=10, width=0.125).eval()
    spec = {"name": "pointnet", "num_classes": 10, "width": 0.125, "kwargs": {}}
    save_model(tmp_path / "t.pt", teacher, spec, list(data.class_names), data.fingerprint(),
               cfg.model_dump(mode="json"))  # fmt: skip
    record_teacher(teacher, spec, data, default_shape_augment(), copies=2,
                   out=tmp_path / "rec")  # fmt: skip
    run = torchrun(2, "-m", "pcdistill", "distill", "--quiet", *SMALL, f"out={tmp_path / 'run'}",
                   f"records={tmp_path / 'rec'}", "loss.kd.alpha=0.9",
                   "loss.nwsd.beta=0.1")  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)["objective"]["nwsd"]
    assert int(state["seen"].sum()) == 80  # one epoch: every shape drawn once, by some rank
