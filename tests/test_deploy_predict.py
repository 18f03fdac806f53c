"""Predicting single files: every supported format, checkpoint and ONNX export agree, and a
bad file gets one clear error naming it."""

from pathlib import Path

import laspy
import numpy as np
import pytest
import trimesh
from pypcd4 import Encoding, PointCloud

from pcdistill.cli import main
from pcdistill.data import builtin_dataset
from pcdistill.data.preprocess import input_recipe
from pcdistill.deploy.export import export_onnx
from pcdistill.deploy.predict import predict_files
from pcdistill.engine.checkpoint import load_checkpoint, model_spec, save_model
from pcdistill.engine.config import RunConfig
from pcdistill.errors import ConfigError, DataError
from pcdistill.models import create_model
from test_deploy_export import write_checkpoint

pytest.importorskip("onnxruntime")

NUM_POINTS = 256


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """A small DGCNN checkpoint (normalising, FPS point selection) and its ONNX export."""
    folder = tmp_path_factory.mktemp("models")
    ckpt = write_checkpoint(
        folder / "dgcnn.pt", "dgcnn", 0.125, NUM_POINTS, normalize=True, sampling="fps"
    )
    export_onnx(ckpt, folder / "dgcnn.onnx", samples=4)
    return ckpt, folder / "dgcnn.onnx"


def write_files(folder: Path) -> list[Path]:
    """One file per supported format: clouds (.npy, .txt, .ply, .xyz, .pts, .pcd, .las,
    .laz) and meshes (.off, .obj, .ply, .stl, .glb)."""
    rng = np.random.default_rng(0)
    cloud = rng.normal(size=(600, 3)) * [1.0, 0.5, 2.0]
    paths = [folder / "cloud.npy", folder / "cloud.txt", folder / "cloud.ply"]
    np.save(paths[0], cloud.astype(np.float32))
    np.savetxt(paths[1], cloud, delimiter=",")
    trimesh.PointCloud(cloud).export(paths[2])
    meshes = {
        "box.off": trimesh.creation.box(extents=(1, 2, 0.5)),
        "sphere.obj": trimesh.creation.icosphere(),
        "cone.ply": trimesh.creation.cone(radius=1, height=2),
    }
    for name, mesh in meshes.items():
        mesh.export(folder / name)
        paths.append(folder / name)
    # scanner-style text: x y z intensity; a .pts with its point count first
    xyzi = np.column_stack([cloud, rng.random(len(cloud))])
    np.savetxt(folder / "scan.xyz", xyzi)
    (folder / "scan.pts").write_text(f"{len(cloud)}\n" + "\n".join(
        " ".join(f"{v:.6f}" for v in row) for row in xyzi) + "\n")  # fmt: skip
    trimesh.creation.cylinder(radius=0.5, height=2).export(folder / "part.stl")
    trimesh.creation.capsule(height=1, radius=0.4).export(folder / "part.glb")
    paths += [folder / "scan.xyz", folder / "scan.pts", folder / "part.stl", folder / "part.glb"]
    for encoding in Encoding.ASCII, Encoding.BINARY, Encoding.BINARY_COMPRESSED:  # PCL .pcd
        paths.append(folder / f"scan_{encoding.value}.pcd")
        PointCloud.from_xyz_points(cloud.astype(np.float32)).save(paths[-1], encoding=encoding)
    for suffix in (".las", ".laz"):  # LiDAR, georeferenced: UTM-like offsets
        paths.append(folder / f"survey{suffix}")
        write_las(paths[-1], cloud + np.array([500_000.0, 4_000_000.0, 100.0]))
    return paths


def write_las(path: Path, xyz: np.ndarray) -> None:
    header = laspy.LasHeader(point_format=3, version="1.2")
    header.offsets, header.scales = xyz.min(axis=0), [1e-7] * 3
    las = laspy.LasData(header)
    las.x, las.y, las.z = xyz.T
    las.write(path)  # .laz: compressed (lazrs)


def test_every_format_same_top1_for_checkpoint_and_onnx(models, tmp_path):
    ckpt, onnx_file = models
    files = write_files(tmp_path)
    torch_preds = predict_files(files, ckpt, top_k=3)
    onnx_preds = predict_files(files, onnx_file, top_k=3)
    by_name = {p.path.name: p for p in torch_preds}
    pcds = [f"scan_{e}.pcd" for e in ("ascii", "binary", "binary_compressed")]
    for name in ("scan.xyz", "scan.pts", *pcds):  # the cloud of cloud.txt (intensity dropped)
        np.testing.assert_allclose(by_name[name].points, by_name["cloud.txt"].points, atol=1e-5)
    for name in ("survey.las", "survey.laz"):  # far from the origin, in float64: the same
        np.testing.assert_allclose(by_name[name].points, by_name["cloud.txt"].points, atol=1e-5)
    assert (tmp_path / "survey.laz").stat().st_size < (tmp_path / "survey.las").stat().st_size
    for a, b in zip(torch_preds, onnx_preds, strict=True):
        assert a.points.shape == (NUM_POINTS, 3)
        assert np.linalg.norm(a.points, axis=1).max() == pytest.approx(1.0)  # normalised
        assert len(a.top) == 3 and a.top[0][0] == b.top[0][0]
        assert a.top[0][1] == pytest.approx(b.top[0][1], abs=1e-5)
        probs = [p for _, p in a.top]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6


def test_input_recipe_follows_the_training_clouds():
    clouds = builtin_dataset("train", num_points=NUM_POINTS).points  # ship unit-sphere
    assert input_recipe(False, clouds)["normalize"] is True
    assert input_recipe(False, clouds * 100 + 50)["normalize"] is False  # own units
    assert input_recipe(True, clouds * 100 + 50)["normalize"] is True  # data.normalize


def test_predict_normalises_any_units_as_the_model_was_trained(tmp_path):
    """Regression (issue 13): a model trained on unit-sphere clouds (here the built-in
    ModelNet40 cut, which ships normalised, with data.normalize off) gave another class
    for the same shape scaled x100 and shifted by 50. The trainer records the recipe in
    the checkpoint, export carries it into the ONNX metadata, predict applies it."""
    run = tmp_path / "run"
    argv = ["train", "--quiet", f"out={run}", f"data.num_points={NUM_POINTS}",
            "model.name=dgcnn", "model.width=0.125", "train.epochs=1"]  # fmt: skip
    assert main(argv) == 0
    ckpt = run / "last.pt"
    assert load_checkpoint(ckpt)["preprocess"]["normalize"] is True
    export_onnx(ckpt, tmp_path / "model.onnx", samples=4)
    shape = builtin_dataset("test", num_points=NUM_POINTS).points[0]
    np.save(tmp_path / "unit.npy", shape)
    np.save(tmp_path / "raw.npy", shape * 100 + 50)
    for model in (ckpt, tmp_path / "model.onnx"):
        unit, raw = predict_files([tmp_path / "unit.npy", tmp_path / "raw.npy"], model, top_k=3)
        assert [c for c, _ in raw.top] == [c for c, _ in unit.top]
        np.testing.assert_allclose([p for _, p in raw.top], [p for _, p in unit.top], atol=1e-5)


def test_checkpoint_without_a_recipe_warns_and_keeps_its_units(tmp_path):
    """A checkpoint written before recipes were recorded is used as its data.normalize
    says (here: not normalised), with a warning saying so."""
    cfg = RunConfig().model_dump(mode="json")
    cfg["data"]["num_points"] = NUM_POINTS
    names = list(builtin_dataset("test", num_points=NUM_POINTS).class_names)
    model = create_model("dgcnn", num_classes=len(names), width=0.125)
    save_model(tmp_path / "old.pt", model, model_spec("dgcnn", len(names), 0.125),
               names, "", cfg)  # fmt: skip
    np.save(tmp_path / "raw.npy", np.random.default_rng(0).normal(size=(300, 3)) * 100)
    with pytest.warns(UserWarning, match="predates recorded input preprocessing"):
        (pred,) = predict_files([tmp_path / "raw.npy"], tmp_path / "old.pt")
    assert np.abs(pred.points).max() > 10  # left in its own units


def test_cli_prints_top_k_and_plots(models, tmp_path, capsys):
    _, onnx_file = models
    files = write_files(tmp_path)[3:5]
    png = tmp_path / "plot.png"
    argv = ["predict", *map(str, files), "--model", str(onnx_file), "--top-k", "2"]
    assert main([*argv, "--png", str(png)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(files[0]) and lines[1].startswith("  1. ")
    assert lines[3] == str(files[1]) and png.stat().st_size > 1000


def one_error_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pcdistill: error: ") and "\n" not in err
    return err


def test_bad_files_give_one_clear_error_naming_them(models, tmp_path, capsys):
    ckpt, onnx_file = models
    corrupt = tmp_path / "broken.ply"
    corrupt.write_bytes(b"ply\nformat nonsense\n\x00\x01\x02")
    unsupported = tmp_path / "cloud.e57"
    unsupported.write_text("0 0 0\n")
    few = tmp_path / "few.npy"
    np.save(few, np.ones((10, 3), np.float32))
    bad_npy = tmp_path / "bad.npy"
    bad_npy.write_bytes(b"\x93NUMPY garbage")
    bad_pcd = tmp_path / "bad.pcd"
    header = "VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"
    bad_pcd.write_text(header + "WIDTH 5\nHEIGHT 1\nPOINTS 5\nDATA binary\n\x00\x01")
    no_xyz = tmp_path / "intensity.pcd"
    PointCloud.from_points(np.ones((20, 1), np.float32), ("i",), (np.float32,)).save(no_xyz)
    for path, words in [
        (corrupt, "cannot read"),
        (unsupported, "unsupported file type '.e57'"),
        (few, "fewer than"),
        (bad_npy, "cannot read"),
        (bad_pcd, "cannot read"),
        (no_xyz, "no x, y, z fields"),
        (tmp_path / "missing.off", "not found"),
    ]:
        for model in (ckpt, onnx_file):
            err = one_error_line(capsys, ["predict", str(path), "--model", str(model)])
            assert str(path) in err and words in err
        with pytest.raises(DataError):
            predict_files([path], onnx_file)
    with pytest.raises(ConfigError, match=f"exported for {NUM_POINTS} points"):
        predict_files([tmp_path / "x.npy"], onnx_file, num_points=128)
    err = one_error_line(capsys, ["predict", str(few), "--model", str(tmp_path / "none.onnx")])
    assert "none.onnx" in err


def test_a_folder_and_a_bad_file_among_many_with_json_and_csv_output(models, tmp_path, capsys):
    """A folder predicts every supported file in it; an unreadable file is reported and the
    rest still predicted (exit 1); --out writes JSON or CSV; a bad output path is refused
    before any work."""
    import csv
    import json

    ckpt, _ = models
    folder = tmp_path / "shapes"
    folder.mkdir()
    files = write_files(folder)
    (folder / ".hidden.npy").write_bytes(b"not a cloud")  # hidden: not an input
    (folder / "notes.md").write_text("not a cloud either")  # unsupported: not an input
    broken = tmp_path / "broken.npy"
    broken.write_bytes(b"\x93NUMPY garbage")
    out = tmp_path / "preds.json"
    argv = ["predict", str(folder), str(broken), "--model", str(ckpt), "--top-k", "2"]
    assert main([*argv, "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert f"pcdistill: error: cannot read {broken}" in captured.err
    assert f"1 of {len(files) + 1} files could not be read" in captured.err
    rows = json.loads(out.read_text())
    assert [r["file"] for r in rows] == [*map(str, sorted(files)), str(broken)]
    assert all(len(r["top"]) == 2 and r["error"] is None for r in rows[:-1])
    assert rows[-1]["top"] == [] and "cannot read" in rows[-1]["error"]
    alone = predict_files(sorted(files), ckpt, top_k=2)  # same answers as without the bad one
    assert [[t["class"] for t in r["top"]] for r in rows[:-1]] == [
        [c for c, _ in p.top] for p in alone
    ]
    table = tmp_path / "preds.csv"
    assert main([*argv, "--out", str(table)]) == 1
    lines = list(csv.reader(table.open()))
    assert lines[0] == ["file", "rank", "class", "prob", "error"]
    assert len(lines) == 1 + len(files) * 2 + 1
    capsys.readouterr()
    for option, bad, words in [("--out", tmp_path / "p.txt", "name a .json or .csv"),
                               ("--png", folder, "name a .png"),
                               ("--png", folder / "cloud.npy" / "x.png", "is a file")]:  # fmt: skip
        err = one_error_line(capsys, [*argv, option, str(bad)])
        assert option in err and words in err
    empty = tmp_path / "empty"
    empty.mkdir()
    err = one_error_line(capsys, ["predict", str(empty), "--model", str(ckpt)])
    assert str(empty) in err and "no .npy" in err


def test_columns_lay_out_text_tables(models, tmp_path, capsys):
    """An xyzrgb .txt is refused without --columns (6 columns, not unit normals) instead
    of being read with colours as normals; with `--columns x,y,z,r,g,b` it is the same
    cloud as its xyz alone. A bad --columns is one usage error (exit 2)."""
    ckpt, _ = models
    rng = np.random.default_rng(2)
    xyz = rng.normal(size=(400, 3))
    np.save(tmp_path / "xyz.npy", xyz.astype(np.float32))
    np.savetxt(tmp_path / "scan.txt", np.column_stack([xyz, rng.integers(0, 256, (400, 3))]))
    err = one_error_line(capsys, ["predict", str(tmp_path / "scan.txt"), "--model", str(ckpt)])
    assert "scan.txt: 6 columns whose last three are not unit normals" in err
    (plain,) = predict_files([tmp_path / "xyz.npy"], ckpt)
    (scan,) = predict_files([tmp_path / "scan.txt"], ckpt, columns=("x", "y", "z", "r", "g", "b"))
    assert scan.error is None and np.array_equal(scan.points, plain.points)
    assert scan.top == plain.top
    assert main(["predict", str(tmp_path / "scan.txt"), "--model", str(ckpt),
                 "--columns", "x,y,z,r,g,b"]) == 0  # fmt: skip
    capsys.readouterr()
    argv = ["predict", str(tmp_path / "scan.txt"), "--model", str(ckpt), "--columns", "x,y"]
    assert "--columns: 'x,y' must name the x, y and z columns" in one_error_line(capsys, argv)
