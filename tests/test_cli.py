"""The command line: help, version, and one clear line (exit 2) for every bad input."""

import argparse
import subprocess
import sys

import h5py
import numpy as np
import pytest

from pcdistill import __version__
from pcdistill.cli import DATA_FORMATS, build_parser, main
from pcdistill.data.load import READERS


def test_help_and_version():
    out = subprocess.run([sys.executable, "-m", "pcdistill", "--help"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    for command in ("train", "eval", "data", "demo", "report", "models"):
        assert command in out
    version = subprocess.run([sys.executable, "-m", "pcdistill", "--version"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert version.strip() == f"pcdistill {__version__}"


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_option_of_every_command_says_what_it_does(command):
    """Regression (issue 13): data, eval, record, quantize and demo had options whose
    --help line was empty."""
    parser = _subcommands()[command]
    assert parser.description or command in build_parser().format_help()
    for action in parser._actions:
        if not isinstance(action, argparse._HelpAction):
            assert action.help, f"{command} {action.option_strings or action.dest}: no help"


def test_data_formats_offered_are_the_readers():
    assert ["auto", *READERS] == DATA_FORMATS


def test_data_shows_normals_when_the_files_have_them(shared_data, capsys):
    """Regression (issue 13): `data` printed normals: False for the resampled release,
    whose every row holds normals (it read the points only)."""
    assert main(["data", str(shared_data / "modelnet40_normal_resampled_sample")]) == 0
    out = capsys.readouterr().out
    assert out.count("normals: True") == 2
    assert main(["data", "builtin", "--split", "test"]) == 0
    assert "normals: False" in capsys.readouterr().out


def _modelnet_layout(root, data: np.ndarray, labels: np.ndarray) -> None:
    root.mkdir()
    (root / "shape_names.txt").write_text("a\nb\n")
    (root / "train_files.txt").write_text("data/ply_data_train0.h5\n")
    (root / "test_files.txt").write_text("data/ply_data_test0.h5\n")
    for split in ("train", "test"):
        with h5py.File(root / f"ply_data_{split}0.h5", "w") as f:
            f["data"] = data
            f["label"] = labels


def one_error_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pcdistill: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_inputs_give_one_clear_line(tmp_path, capsys):
    assert "nowhere" in one_error_line(capsys, ["data", str(tmp_path / "nowhere")])

    good = np.random.default_rng(0).normal(size=(4, 64, 3)).astype(np.float32)
    labels = np.array([[0], [1], [0], [1]], dtype=np.uint8)

    nan = good.copy()
    nan[2, 5, 1] = np.nan
    _modelnet_layout(tmp_path / "nan", nan, labels)
    assert "shape 2" in one_error_line(capsys, ["data", str(tmp_path / "nan")])

    _modelnet_layout(tmp_path / "labels", good, np.array([[0], [1], [7], [1]], dtype=np.uint8))
    assert "label 7" in one_error_line(capsys, ["data", str(tmp_path / "labels")])

    _modelnet_layout(tmp_path / "few", good, labels)
    err = one_error_line(capsys, ["data", str(tmp_path / "few"), "--num-points", "128"])
    assert "64" in err and "128" in err

    _modelnet_layout(tmp_path / "cut", good, labels)
    h5 = tmp_path / "cut" / "ply_data_train0.h5"
    h5.write_bytes(h5.read_bytes()[:300])
    assert "ply_data_train0.h5" in one_error_line(capsys, ["data", str(tmp_path / "cut")])


def test_eval_refuses_its_json_output_before_reading_the_checkpoint(tmp_path, capsys):
    """The output is checked first: the checkpoint here does not even exist."""
    (tmp_path / "file").write_text("in the way")
    (tmp_path / "out.json").mkdir()
    for bad, words in [(tmp_path / "m.txt", "name a .json"), (tmp_path / "out.json", "is a folder"),
                       (tmp_path / "file" / "m.json", "is a file, not a folder")]:  # fmt: skip
        err = one_error_line(capsys, ["eval", "missing.pt", "--json", str(bad)])
        assert "--json" in err and words in err and "missing.pt" not in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["models", "--width", "-1"], "-1"),
        (["train", "model.name=pointnet3"], "pointnet3"),
        (["train", "optim.lr=fast"], "optim.lr"),
        (["eval", "missing.pt"], "missing.pt"),
        (["train", "--resume", "no_such_run"], "config file not found"),
        (["train", "train.batch_size=1000", "data.num_points=128"], "train.batch_size=1000"),
        # refused before any work, naming the option and the value
        (["eval", "x.pt", "--batch-size", "0"], "--batch-size: must be >= 1, got 0"),
        (["eval", "x.pt", "--device", "foo"], "--device: must be auto, cpu, mps"),
        (["eval", "x.pt", "--vote", "-1"], "--vote: must be >= 0, got -1"),
        (["record", "--teacher", "t.pt", "--out", "o", "--copies", "0"], "--copies"),
        (["record", "--teacher", "t.pt", "--out", "o", "--batch-size", "0"], "--batch-size"),
        (["record", "--teacher", "t.pt", "--out", "o", "--num-shards", "0"], "--num-shards"),
        (
            ["record", "--teacher", "t.pt", "--out", "o", "--shard", "3", "--num-shards", "2"],
            "--shard 3 must be below --num-shards 2",
        ),
        (["eval"], "the following arguments are required: checkpoint"),
        (
            ["record", "--teacher", "t.pt", "--out", "o", "--augment", "notjson"],
            "--augment 'notjson' is not valid JSON",
        ),
        (
            ["record", "--teacher", "t.pt", "--out", "o", "--augment", '{"name": "translate"}'],
            "list of {name: ..., option: value} mappings",
        ),
        (
            [
                "record",
                "--teacher",
                "t.pt",
                "--out",
                "o",
                "--augment",
                '[{"name": "translate", "x": 1}]',
            ],
            "bad options for shape augmentation 'translate'",
        ),
    ],
)
def test_bad_arguments_give_one_clear_line(capsys, argv, needle):
    assert needle in one_error_line(capsys, argv)


def test_record_command_writes_a_valid_shard_and_refuses_to_overwrite(tmp_path, capsys):
    from pcdistill.data import builtin_dataset
    from pcdistill.engine.config import load_config
    from pcdistill.engine.run import build_trainer
    from pcdistill.records import read_records
    from pcdistill.transforms import default_shape_augment

    cfg = load_config(None, ["model.name=pointnet", "model.width=0.125", "data.num_points=128",
                             "train.epochs=1", f"out={tmp_path / 'teacher'}"])  # fmt: skip
    build_trainer(cfg, quiet=True).fit()
    argv = ["record", "--teacher", str(tmp_path / "teacher" / "last.pt"), "--copies", "2",
            "--out", str(tmp_path / "rec")]  # fmt: skip
    assert main(argv) == 0
    assert "640 copies" in capsys.readouterr().out
    data = builtin_dataset("train", num_points=128)
    spec = default_shape_augment().spec()
    rec = read_records(tmp_path / "rec", dataset_fingerprint=data.fingerprint(),
                       class_names=data.class_names, augment_spec=spec)  # fmt: skip
    assert rec.logits.shape == (320, 2, 40)
    assert "already exists" in one_error_line(capsys, argv)


TINY_RUN = ["model.name=pointnet", "model.width=0.125", "data.num_points=128",
            "train.threads=1", "train.epochs=1"]  # fmt: skip


def test_runs_store_absolute_paths_take_overrides_after_flags_and_can_be_extended(
    tmp_path, monkeypatch, capsys
):
    """A run started in one folder is evaluated and extended from another; overrides may
    follow the flags; a run folder stands for its last.pt; only train.epochs may change
    on --resume, and the schedule is laid out over the new total."""
    import json

    from pcdistill.engine.config import load_config

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    (work / "shapes").mkdir(parents=True)
    elsewhere.mkdir()
    monkeypatch.chdir(work)
    cfg = load_config(None, ["data.root=shapes", "out=runs/a"])
    assert cfg.data.root == str(work / "shapes") and cfg.out == str(work / "runs" / "a")
    assert load_config(None, ["data.root=missing"]).data.root == "missing"  # fails later, named
    assert main(["train", *TINY_RUN[:2], "--quiet", *TINY_RUN[2:], "out=runs/a"]) == 0

    monkeypatch.chdir(elsewhere)
    run = str(work / "runs" / "a")
    assert main(["eval", run]) == 0
    assert f"{run}: test OA" in capsys.readouterr().out
    err = one_error_line(capsys, ["train", "--resume", run, "optim.lr=1"])
    assert "every override but train.epochs=N" in err
    assert main(["train", "--resume", run, "train.epochs=2", "--quiet"]) == 0
    rows = [json.loads(line) for line in (work / "runs" / "a" / "metrics.jsonl").open()]
    assert [r["epoch"] for r in rows if r["event"] == "epoch"] == [1, 2]
    steps = [r for r in rows if r["event"] == "train_step"]
    spe = len(steps) // 2
    # lr of the last step of epoch 1 came from the 1-epoch plan, the rest from the 2-epoch one
    assert steps[spe - 1]["lr"] < steps[spe]["lr"]


def test_config_prints_every_key_with_its_default_and_meaning(capsys):
    """`pcdistill config` (and --distill): every key of the schema, each documented."""
    from pcdistill.distill.config import DistillConfig
    from pcdistill.engine.config import describe_keys

    rows = describe_keys(DistillConfig)
    assert all(r["meaning"] for r in rows), [r["key"] for r in rows if not r["meaning"]]
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "teacher" not in out.split()
    line = next(x for x in out.splitlines() if x.startswith("optim.lr "))
    assert line.split()[:3] == ["optim.lr", "0.001", "float"]
    assert main(["config", "--distill"]) == 0
    out = capsys.readouterr().out
    keys = [x.split()[0] for x in out.splitlines()[1:]]
    assert keys == [r["key"] for r in rows]
    assert "loss.nwsd.target" in keys and "netaug.expand" in keys


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["train", "out={bad}", "--quiet"], "out"),
        (["distill", "--config", "configs/distill/scratch.yaml", "out={bad}"], "out"),
        (
            [
                "record",
                "--teacher",
                "pointnet2_ssg.modelnet40",
                "--data",
                "builtin",
                "--copies",
                "1",
                "--out",
                "{bad}",
            ],
            "--out",
        ),
        (["report", "{runs}", "--out", "{bad}"], "--out"),
        (["demo", "--out", "{bad}"], "--out"),
        (["compress", "--data", "{runs}", "--out", "{bad}"], "--out"),
        (["export", "pointnet2_ssg.modelnet40", "--out", "{bad}/m.onnx"], "--out"),
        (["quantize", "pointnet2_ssg.modelnet40", "--out", "{bad}/m.onnx"], "--out"),
        (["snapshot", "{runs}", "{bad}/s.pt"], "snapshot FILE"),
    ],
    ids=lambda v: v[0] if isinstance(v, list) else None,
)
def test_every_output_under_a_file_is_refused_before_any_work(tmp_path, capsys, argv, option):
    """Each command's output (folder or file) where a parent must be a folder but is a
    file: one line naming the option and the path, exit 2, and nothing else done."""
    blocker = tmp_path / "taken.txt"
    blocker.write_text("a file")
    bad = blocker / "sub"
    runs = tmp_path / "runs"
    runs.mkdir()
    args = [a.format(bad=bad, runs=runs) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"pcdistill: error: {option} {bad}") and "is a file" in err, err
    assert "\n" not in err and sorted(p.name for p in tmp_path.iterdir()) == ["runs", "taken.txt"]


def test_every_option_of_every_command_has_help_text():
    import argparse

    from pcdistill.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {a.option_strings or a.dest}"
               for name, sub in commands.choices.items() for a in sub._actions
               if not a.help and not isinstance(a, argparse._HelpAction)]  # fmt: skip
    assert not missing
