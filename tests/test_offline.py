"""Offline distillation: exact replay of recorded copies, and offline KD == online KD."""

import numpy as np
import pytest
import torch

from pcdistill.data import builtin_dataset
from pcdistill.distill import KD, NWSD, CopyTargets, Distill
from pcdistill.engine.batches import Batch, RecordedBatches
from pcdistill.errors import ConfigError
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
