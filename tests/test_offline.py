"""Offline distillation: exact replay of recorded copies, and offline KD == online KD."""

import copy

import numpy as np
import pytest
import torch

from pcdistill.data import builtin_dataset
from pcdistill.distill import KD, NWSD, CopyTargets, Distill
from pcdistill.engine.batches import Batch, RecordedBatches
from pcdistill.errors import ConfigError, DataError
from pcdistill.models import create_model
from pcdistill.records import read_records
from pcdistill.records.record import copy_params, record_teacher
from pcdistill.transforms import default_shape_augment

SPEC = {"name": "pointnet2_msg", "num_classes": 40, "width": 0.125, "kwargs": {}}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    torch.manual_seed(0)
    teacher = create_model("pointnet2_msg", width=0.125).eval()
    data = builtin_dataset("train", num_points=512).subset(range(24))
    aug = default_shape_augment(rotate=True)
    out = tmp_path_factory.mktemp("records")
    record_teacher(teacher, SPEC, data, aug, copies=3, out=out, seed=5, batch_size=8)
    rec = read_records(out, dataset_fingerprint=data.fingerprint(),
                       class_names=data.class_names, augment_spec=aug.spec())  # fmt: skip
    return teacher, data, aug, rec, out


def replayed(data, aug, rec) -> RecordedBatches:
    return RecordedBatches(
        torch.from_numpy(data.points), torch.from_numpy(data.labels), 8, 11, aug,
        torch.from_numpy(rec.params), torch.from_numpy(rec.logits),
    )  # fmt: skip


def test_replayed_inputs_are_bit_identical_and_reproduce_the_teacher(recorded):
    teacher, data, aug, rec, _ = recorded
    batches = replayed(data, aug, rec)
    for step in range(batches.steps_per_epoch):
        b = batches.batch(epoch=1, step=step)
        for row in range(len(b.index)):
            i, k = int(b.index[row]), int(b.copy[row])
            params = copy_params(aug, 5, np.array([i]), k)  # what the record phase drew
            x = aug.apply(torch.from_numpy(data.points[i : i + 1]), torch.from_numpy(params))
            assert torch.equal(b.points[row : row + 1], x), f"sample {i} copy {k}"
        with torch.no_grad():
            fresh = teacher(b.points)
        # Recorded logits are float16: equal to a fresh forward within its rounding.
        torch.testing.assert_close(b.teacher_logits, fresh, rtol=1e-3, atol=1e-3)


def test_offline_kd_loss_equals_online_kd_on_the_same_copies(recorded):
    teacher, data, aug, rec, _ = recorded
    b = replayed(data, aug, rec).batch(epoch=0, step=1)
    student = create_model("pointnet", width=0.125).eval()
    offline, _ = Distill({"kd": KD(alpha=0.9, tau=4.0)}, ce_weight=0.1)(student, b)
    online_batch = Batch(b.points, b.labels, b.index, b.params)  # no recorded logits
    online, _ = Distill({"kd": KD(alpha=0.9, tau=4.0)}, teacher, ce_weight=0.1)(
        student, online_batch
    )
    assert offline.item() == pytest.approx(online.item(), rel=2e-3)
    with pytest.raises(ConfigError, match="need a teacher or records"):
        Distill({"kd": KD()})(student, online_batch)


def test_two_shards_merge_to_the_one_shard_recording_bit_for_bit(recorded, tmp_path):
    teacher, data, aug, rec, _ = recorded
    for shard in range(2):
        record_teacher(teacher, SPEC, data, aug, copies=3, out=tmp_path, seed=5, batch_size=8,
                       shard=shard, num_shards=2)  # fmt: skip
    merged = read_records(tmp_path, dataset_fingerprint=data.fingerprint(),
                          class_names=data.class_names, augment_spec=aug.spec())  # fmt: skip
    assert np.array_equal(merged.params, rec.params)
    assert np.array_equal(merged.logits.view(np.uint16), rec.logits.view(np.uint16))


def test_nwsd_in_offline_kd_uses_the_stale_prediction_of_the_same_copy(recorded):
    _, data, aug, rec, _ = recorded
    b = replayed(data, aug, rec).batch(epoch=0, step=0)
    torch.manual_seed(0)
    student = create_model("pointnet", width=0.125).eval()
    targets = CopyTargets(len(data), 3, 40)
    nwsd = NWSD(targets, beta=0.2, warmup=0.0)
    kd = Distill({"kd": KD(), "nwsd": nwsd}, ce_weight=0.1)
    plain_kd = Distill({"kd": KD()}, ce_weight=0.1)
    kd.set_progress(0.2)
    first, _ = kd(student, b)  # nothing seen yet: plain offline KD
    assert first.item() == pytest.approx(plain_kd(student, b)[0].item(), rel=1e-6)
    assert targets.get(b.index, b.copy)[1].all()
    with torch.no_grad():  # the student moves; its stored prediction is now stale
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    second, _ = kd(student, b)
    plain, _ = plain_kd(student, b)
    assert second.item() < plain.item()  # the negative term is active and subtracts
    assert kd.last["nwsd"] == pytest.approx(second.item() - plain.item(), rel=1e-4)


class _Kill(Exception):
    """Stands for the process dying: raised from inside the teacher's forward."""


def _dying_after(teacher: torch.nn.Module, calls: int) -> torch.nn.Module:
    """The teacher, raising _Kill on its (calls + 1)-th forward."""
    count = {"n": 0}
    forward = teacher.forward

    def dying(*args, **kwargs):
        count["n"] += 1
        if count["n"] > calls:
            raise _Kill
        return forward(*args, **kwargs)

    teacher.forward = dying
    return teacher


def test_a_recording_killed_part_way_resumes_to_the_same_shard(recorded, tmp_path):
    """Killed in its 6th of 9 units (chunks of 2 units): nothing that validates is left,
    only the .partial folder with the 2 complete chunks; the same command then runs the
    teacher on the 5 units after them only, and writes a file byte-identical to the
    uninterrupted recording's."""
    teacher, data, aug, _, _ = recorded
    kwargs = dict(copies=3, seed=5, batch_size=8, rows_per_chunk=16)
    whole = record_teacher(teacher, SPEC, data, aug, out=tmp_path / "whole", **kwargs)
    out = tmp_path / "killed"
    with pytest.raises(_Kill):
        record_teacher(_dying_after(copy.deepcopy(teacher), 5), SPEC, data, aug, out=out,
                       **kwargs)  # fmt: skip
    partial = out / f"{whole.name}.partial"
    assert not (out / whole.name).exists()
    assert sorted(p.name for p in partial.iterdir()) == [
        "chunk-000000.npy", "chunk-000001.npy", "plan.json"]  # fmt: skip
    with pytest.raises(DataError, match="no record shards"):
        read_records(out, dataset_fingerprint=data.fingerprint(),
                     class_names=data.class_names, augment_spec=aug.spec())  # fmt: skip
    resumed = copy.deepcopy(teacher)
    calls = []
    resumed.register_forward_pre_hook(lambda *_: calls.append(1))
    record_teacher(resumed, SPEC, data, aug, out=out, **kwargs)
    assert len(calls) == 5
    assert (out / whole.name).read_bytes() == whole.read_bytes()
    assert not partial.exists()


def test_resuming_with_other_settings_is_refused_naming_them(recorded, tmp_path):
    teacher, data, aug, _, _ = recorded
    with pytest.raises(_Kill):
        record_teacher(_dying_after(copy.deepcopy(teacher), 2), SPEC, data, aug, copies=3,
                       out=tmp_path, seed=5, batch_size=8, rows_per_chunk=16)  # fmt: skip
    with pytest.raises(ConfigError, match=r"differs in: copies\)"):
        record_teacher(teacher, SPEC, data, aug, copies=2, out=tmp_path, seed=5, batch_size=8,
                       rows_per_chunk=16)  # fmt: skip
    with pytest.raises(ConfigError, match=r"differs in: seed\)"):
        record_teacher(teacher, SPEC, data, aug, copies=3, out=tmp_path, seed=6, batch_size=8,
                       rows_per_chunk=16)  # fmt: skip


def test_recording_holds_one_chunk_of_rows_not_the_table(tmp_path):
    """Peak Python-heap memory (numpy arrays, so the rows; tracemalloc) while recording
    16 shapes with a PointNet's 1,024-d features in chunks of 64 rows: 50 copies (a
    1.7 MB table) peak less than 256 KB above 5 copies (holding the table, as recording
    did before it streamed, would add 1.5 MB). The kernels load first, outside it."""
    import tracemalloc

    torch.manual_seed(0)
    teacher = create_model("pointnet").eval()
    spec = {"name": "pointnet", "num_classes": 40, "width": 1.0, "kwargs": {}}
    data = builtin_dataset("train", num_points=256).subset(range(16))
    aug = default_shape_augment()
    record_teacher(teacher, spec, data, aug, copies=1, out=tmp_path / "warm", batch_size=8)
    peaks = {}
    for copies in (5, 50):
        tracemalloc.start()
        try:
            record_teacher(teacher, spec, data, aug, copies=copies, out=tmp_path / str(copies),
                           batch_size=8, features=True, rows_per_chunk=64)  # fmt: skip
            peaks[copies] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    rec = read_records(tmp_path / "50", dataset_fingerprint=data.fingerprint(),
                       class_names=data.class_names, augment_spec=aug.spec())  # fmt: skip
    assert rec.features.shape == (16, 50, 1024)
    assert peaks[50] - peaks[5] < 2**18, peaks


def test_record_sigkilled_in_a_process_resumes_to_the_same_shard(tmp_path):
    """`pcdistill record` SIGKILLed once its third chunk is on disk, then run again: the
    shard is byte-identical to an uninterrupted recording's."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from test_deploy_export import write_checkpoint

    teacher = write_checkpoint(tmp_path / "t.pt", "pointnet", 0.125, 256)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def cli(out):
        return [sys.executable, "-m", "pcdistill", "record", "--teacher", str(teacher),
                "--data", "builtin", "--copies", "6", "--batch-size", "16",
                "--chunk-rows", "32", "--out", str(out)]  # fmt: skip

    subprocess.run(cli(tmp_path / "whole"), env=env, check=True, capture_output=True)
    out = tmp_path / "killed"
    partial = out / "records-00000-of-00001.h5.partial"
    proc = subprocess.Popen(cli(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not (partial / "chunk-000002.npy").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "records-00000-of-00001.h5").exists(), "the kill must land mid-recording"
    assert (partial / "chunk-000002.npy").exists()
    subprocess.run(cli(out), env=env, check=True, capture_output=True)
    whole = (tmp_path / "whole" / "records-00000-of-00001.h5").read_bytes()
    assert (out / "records-00000-of-00001.h5").read_bytes() == whole
