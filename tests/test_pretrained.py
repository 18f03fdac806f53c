"""Shipped weights: loaded by name, checksum verified, accurate as their manifest says."""

import json
import os

import pytest
import torch

from pcdistill.cli import main
from pcdistill.data import builtin_dataset
from pcdistill.deploy.ship import ship_checkpoint
from pcdistill.engine.checkpoint import build_from_checkpoint, load_checkpoint
from pcdistill.engine.config import load_config
from pcdistill.engine.evaluate import predict_logits
from pcdistill.engine.run import build_trainer, checkpoint_and_data
from pcdistill.errors import ModelError
from pcdistill.models import create_model, pretrained

SHIPPED = sorted(pretrained.manifest())
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A PointNet x1/8 trained 3 epochs on the built-in data (128 points)."""
    out = tmp_path_factory.mktemp("run")
    run = ["model.name=pointnet", "model.width=0.125", "data.num_points=128", "train.epochs=3",
           "train.threads=1", "optim.lr=0.01", f"out={out}"]  # fmt: skip
    build_trainer(load_config(None, run), quiet=True).fit()
    return out / "last.pt"


@pytest.fixture
def shipped(trained, tmp_path, monkeypatch):
    """`trained` shipped as `pointnet_w0.125.builtin` into a weights folder of the test's own."""
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path / "weights")
    row = ship_checkpoint(trained, "builtin", "pcdistill train model.name=pointnet ...")
    return row


def builtin_predictions(model, num_points: int) -> list[int]:
    points = torch.from_numpy(builtin_dataset("test", num_points=num_points).points)
    return predict_logits(model, points, CPU).argmax(1).tolist()


def test_shipped_weights_load_by_name_and_predict_as_the_checkpoint(shipped, trained, capsys):
    assert shipped["key"] == "pointnet_w0.125.builtin"
    mask = os.umask(0)
    os.umask(mask)  # readable as any file the user writes, not only by its owner
    assert (pretrained.WEIGHTS_DIR / shipped["file"]).stat().st_mode & 0o777 == 0o666 & ~mask
    model = create_model("pointnet", width=0.125, pretrained="builtin")
    assert not model.training
    reference, ckpt = build_from_checkpoint(trained)
    assert builtin_predictions(model, 128) == builtin_predictions(reference.eval(), 128)
    assert builtin_predictions(model, 128) == shipped["builtin_test"]["predictions_float32"]
    # The manifest's accuracy is measured, and states the float16 round trip it chose.
    assert shipped["dtype"] == "float16"
    assert abs(shipped["test"]["oa"] - shipped["test_float32"]["oa"]) <= 0.001
    assert shipped["epochs"] == 3 and shipped["dataset_fingerprint"] == ckpt["dataset_fingerprint"]
    state = load_checkpoint(trained)["state_dict"]
    for k, v in model.state_dict().items():  # exactly the float16 rounding of the checkpoint
        want = state[k].half().float() if state[k].is_floating_point() else state[k]
        assert torch.equal(v, want), k
    # Any command that takes a checkpoint takes the key; `models` lists the entry.
    assert main(["eval", shipped["key"]]) == 0
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "pointnet_w0.125.builtin" in out and f"{shipped['test']['oa']:.4f}" in out


def test_a_tampered_or_missing_weights_file_is_refused_with_one_clear_error(shipped):
    path = pretrained.WEIGHTS_DIR / shipped["file"]
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # one bit of one weight
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"sha256 .* the file is damaged or not the shipped one"):
        create_model("pointnet", width=0.125, pretrained="builtin")
    with pytest.raises(ModelError, match="sha256"):
        load_checkpoint(shipped["key"])
    path.unlink()
    with pytest.raises(ModelError, match=r"pointnet_w0.125.builtin.*is missing"):
        create_model("pointnet", width=0.125, pretrained="builtin")


def test_wrong_requests_for_shipped_weights_name_what_ships(shipped):
    with pytest.raises(ModelError, match=r"no shipped weights 'pointnet.builtin'.*"
                                         r"shipped: pointnet_w0.125.builtin"):  # fmt: skip
        create_model("pointnet", pretrained="builtin")
    with pytest.raises(ModelError, match="have 40 classes, not num_classes=10"):
        create_model("pointnet", num_classes=10, width=0.125, pretrained="builtin")
    with pytest.raises(ModelError, match="were trained with"):
        create_model("pointnet", width=0.125, pretrained="builtin", in_features=3)
    with pytest.raises(ModelError, match="nor a shipped weights key"):
        load_checkpoint("pointnet_w0.5.builtin")


def test_a_damaged_manifest_is_one_clear_error(shipped):
    (pretrained.WEIGHTS_DIR / "manifest.json").write_text("[{")
    with pytest.raises(ModelError, match=r"manifest .* is not valid JSON"):
        create_model("pointnet", width=0.125, pretrained="builtin")


@pytest.mark.parametrize("key", SHIPPED)
def test_each_shipped_entry_classifies_the_builtin_shapes_as_its_manifest_states(key):
    """The package's own weights: checksum, the built-in test OA the manifest states, and
    the same predictions as the float32 model they were rounded from."""
    entry = pretrained.manifest()[key]
    spec = entry["model"]
    model = create_model(spec["name"], spec["num_classes"], spec["width"],
                         pretrained=key.rsplit(".", 1)[1])  # fmt: skip
    _, _, _, data = checkpoint_and_data(key, "test", "builtin")  # the inputs as trained
    preds = predict_logits(model, torch.from_numpy(data.points), CPU).argmax(1).tolist()
    labels = data.labels.tolist()
    oa = sum(p == y for p, y in zip(preds, labels, strict=True)) / len(labels)
    assert oa == pytest.approx(entry["builtin_test"]["oa"], abs=1 / len(labels))
    assert preds == entry["builtin_test"]["predictions_float32"]
    assert json.dumps(entry["class_names"]) == json.dumps(list(builtin_dataset("test").class_names))


@pytest.mark.realdata
@pytest.mark.parametrize("key", SHIPPED)
def test_each_shipped_entry_classifies_both_releases_of_a_shape_alike(key, shared_data):
    """The same shapes from the y-up resampled release and the z-up HDF5 copy, each read
    into the one frame, get the same classes (up to their different point samples)."""
    from pcdistill.ops import farthest_point_sample
    from test_data import _same_shapes_from_both_releases

    h5, resampled = _same_shapes_from_both_releases(shared_data, None)
    x = torch.from_numpy(resampled)
    picked = x.gather(1, farthest_point_sample(x, h5.shape[1]).unsqueeze(-1).expand(-1, -1, 3))
    entry = pretrained.manifest()[key]
    spec = entry["model"]
    model = create_model(spec["name"], spec["num_classes"], spec["width"],
                         pretrained=key.rsplit(".", 1)[1])  # fmt: skip
    a = predict_logits(model, torch.from_numpy(h5), CPU).argmax(1)
    b = predict_logits(model, picked, CPU).argmax(1)
    assert (a == b).float().mean() >= 0.8, (a.tolist(), b.tolist())


def test_the_training_data_under_another_spelling_of_its_path_is_read_as_trained(
    tmp_path, monkeypatch
):
    """A shipped model's config names its data by an absolute path; a recipe (and the
    record command in its comment) by a relative one. The same folder is the training
    data, read as trained (no added normalisation, so records and student runs have the
    same dataset fingerprint); another folder is normalised as the model expects."""
    from pcdistill.engine.config import RunConfig
    from pcdistill.engine.run import data_config

    data = tmp_path / "data" / "modelnet40"
    data.mkdir(parents=True)
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    cfg = RunConfig().model_dump(mode="json")
    cfg["data"]["root"] = str(data)  # absolute, as in the manifest
    ckpt = {"config": cfg, "preprocess": {"normalize": True}}
    same = data_config(ckpt, "../data/modelnet40")
    assert not same.data.normalize and same.data.root == str(data)
    other = data_config(ckpt, "../data/other")
    assert other.data.normalize and other.data.root == "../data/other"


def test_a_copy_of_the_training_data_elsewhere_is_read_as_trained(tmp_path):
    """On another machine the training data lies under another path: the same content
    (dataset fingerprint) is read as trained; other data is normalised as the model expects."""
    import shutil

    import h5py
    import numpy as np

    from pcdistill.engine.config import RunConfig
    from pcdistill.engine.run import data_config, load_set

    def write(root, seed):
        root.mkdir()
        (root / "shape_names.txt").write_text("a\nb\n")
        (root / "train_files.txt").write_text("ply_data_train0.h5\n")
        rng = np.random.default_rng(seed)
        with h5py.File(root / "ply_data_train0.h5", "w") as f:
            f.create_dataset("data", data=rng.normal(size=(4, 1024, 3)).astype(np.float32))
            f.create_dataset("label", data=np.array([[0], [1], [0], [1]], np.uint8))

    write(tmp_path / "trained_on", 0)
    shutil.copytree(tmp_path / "trained_on", tmp_path / "copy")
    write(tmp_path / "other", 1)
    cfg = RunConfig().model_dump(mode="json")
    cfg["data"]["root"] = str(tmp_path / "trained_on")
    fingerprint = load_set(RunConfig.model_validate(cfg), "train").fingerprint()
    ckpt = {"config": cfg, "preprocess": {"normalize": True}, "dataset_fingerprint": fingerprint}
    assert not data_config(ckpt, str(tmp_path / "copy")).data.normalize
    assert data_config(ckpt, str(tmp_path / "other")).data.normalize
