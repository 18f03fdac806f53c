"""The quickstart pipeline and the report, end to end on the built-in data."""

import json
from pathlib import Path

import pytest

from pcdistill.cli import main
from pcdistill.demo import run_demo
from pcdistill.engine.checkpoint import load_checkpoint
from pcdistill.report import write_report


def test_demo_trains_distills_and_compares(tmp_path, capsys):
    rows = run_demo(
        tmp_path / "demo", teacher_epochs=1, student_epochs=1, quiet=True,
        teacher=("pointnet", 0.125), student=("pointnet2_msg", 0.125), num_points=512,
    )  # fmt: skip
    assert [r["role"] for r in rows] == ["teacher", "student (KD)"]
    assert rows[1]["params"] == 30_184  # T3DNet's tiny model
    assert rows[0]["params"] > rows[1]["params"] and rows[1]["mflops"] > 0
    for r in rows:
        assert 0 <= r["test_oa"] <= 1 and r["latency_ms"] > 0
    table = capsys.readouterr().out
    assert "| student (KD) | pointnet2_msg x0.125 | 30,184 |" in table
    assert (tmp_path / "demo" / "summary.md").read_text().strip() == table.strip()
    assert load_checkpoint(tmp_path / "demo" / "student" / "last.pt")["model"]["width"] == 0.125
    assert list((tmp_path / "demo" / "teacher" / "tb").iterdir()), "TensorBoard events written"

    report = tmp_path / "report"
    assert main(["report", str(tmp_path / "demo" / "teacher"),
                 str(tmp_path / "demo" / "student"), "--out", str(report)]) == 0  # fmt: skip
    md = (report / "report.md").read_text()
    for png in ("curves.png", "accuracy_vs_params.png", "confusion_teacher.png"):
        assert f"({png})" in md
        assert (report / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| student | pointnet2_msg x0.125 | 30,184 | 1 |" in md
    # A second report into the same folder, of the student alone: no stale teacher plot,
    # and files the report did not write stay.
    (report / "mine.png").write_bytes(b"keep")
    assert main(["report", str(tmp_path / "demo" / "student"), "--out", str(report)]) == 0
    assert not (report / "confusion_teacher.png").exists()
    assert (report / "confusion_student.png").exists() and (report / "mine.png").exists()
    # A model without a run folder here (a shipped teacher): a row and a point of its own.
    write_report([tmp_path / "demo" / "student"], report, [("teacher (shipped)", 1_475_688, 0.9)])
    md = (report / "report.md").read_text()
    assert "| teacher (shipped) | (no run here) | 1,475,688 | | | 0.9000 | |" in md
    assert (report / "accuracy_vs_params.png").is_file()


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_data_command_prints_counts_and_fingerprint(capsys):
    assert main(["data", "builtin", "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "120 shapes, 40 classes, 1024 points" in out and "fingerprint" in out
    assert json.dumps("airplane")[1:-1] in out


def test_report_shows_where_an_unfinished_run_stands(tmp_path):
    """A run still training (no summary yet) gets its last epoch's numbers, marked so."""
    import json

    run = tmp_path / "in_flight"
    run.mkdir()
    epochs = [{"event": "epoch", "step": 10 * e, "epoch": e, "train_loss": 2.0 / e,
               "test_loss": 1.5 / e, "test_oa": 0.3 * e, "test_macc": 0.2 * e,
               "val_oa": 0.25 * e, "elapsed": 100.0 * e} for e in (1, 2)]  # fmt: skip
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs))
    empty = tmp_path / "not_started"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text("")
    write_report([run, empty], tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| in_flight | (unfinished) | | 2 so far | 200 | 0.6000 | 0.4000 |" in md
    assert "| not_started | (unfinished, no epoch yet) |" in md


def test_report_gives_mean_and_std_over_seeds(tmp_path):
    """Runs whose configs differ only in seed and out are one method over seeds: mean ±
    sample std (hand-computed), an error-bar plot; a run with another config stays apart."""

    import yaml

    def run(name: str, seed: int, lr: float, oa: float, macc: float) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        config = {"seed": seed, "out": f"runs/{name}", "optim": {"lr": lr}}
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        epoch = {"event": "epoch", "step": 5, "epoch": 1, "train_loss": 1.0, "test_loss": 1.0,
                 "test_oa": oa, "test_macc": macc, "elapsed": 60.0}  # fmt: skip
        (folder / "metrics.jsonl").write_text(json.dumps(epoch) + "\n")
        summary = {"model": {"name": "pointnet2_msg", "width": 0.125}, "params": 30184,
                   "epochs": 1, "seed": seed, "wall_time_s": 60.0 + seed,
                   "test_last": {"oa": oa, "macc": macc}}  # fmt: skip
        (folder / "summary.json").write_text(json.dumps(summary))
        return folder

    runs = [run("kd", 0, 1e-3, 0.70, 0.60), run("kd_seed1", 1, 1e-3, 0.74, 0.62),
            run("kd_seed2", 2, 1e-3, 0.75, 0.64), run("kd_lr", 0, 3e-3, 0.50, 0.40)]  # fmt: skip
    write_report(runs, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    # OA: mean 0.73, deviations -0.03, 0.01, 0.02 -> sqrt(0.0014 / 2) = 0.026458
    assert "| kd | 3 (0, 1, 2) | 0.7300 ± 0.0265 | 0.6200 ± 0.0200 | 61 |" in md
    assert "| kd_lr | 1 (0) | 0.5000 (1 seed) | 0.4000 (1 seed) | 60 |" in md  # no spread
    assert (tmp_path / "report" / "seeds.png").stat().st_size > 0
    assert (tmp_path / "report" / "accuracy_vs_params.png").is_file()


def test_report_curve_of_a_seed_group_is_the_mean_with_the_seed_range():
    """A method's curve over seeds: the epochs all its runs reached, their mean, min and
    max there (hand-computed); a run lacking the metric (no val split) gives no curve."""
    from pcdistill.report import epoch_curve

    def run(values: list[float]) -> dict:
        events = [{"event": "epoch", "epoch": e, "test_oa": v} for e, v in enumerate(values, 1)]
        return {"events": [{"event": "train_step", "step": 1}, *events]}

    epochs, mean, low, high = epoch_curve([run([0.2, 0.4, 0.5]), run([0.4, 0.7])], "test_oa")
    assert epochs == [1, 2]  # the second run stopped after epoch 2
    assert mean == pytest.approx([0.3, 0.55]) and low == [0.2, 0.4] and high == [0.4, 0.7]
    assert epoch_curve([run([0.5])], "val_oa") == ([], [], [], [])
