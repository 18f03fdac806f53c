"""The trainer: determinism, exact resume after a kill, checkpoints, config errors, metrics."""

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pcdistill.distill.config import DistillConfig
from pcdistill.engine.checkpoint import (
    build_from_checkpoint,
    load_checkpoint,
    save_model,
    write_snapshot,
)
from pcdistill.engine.config import load_config
from pcdistill.engine.metrics import confusion_matrix, summarize
from pcdistill.engine.run import build_trainer, stratified_holdout
from pcdistill.engine.runlog import read_metrics
from pcdistill.engine.trainer import Trainer, lr_factor
from pcdistill.errors import ConfigError, Interrupted, ModelError

# A run small enough for a unit test: PointNet at width 1/8 on 128 points of the built-in data.
TINY = [
    "model.name=pointnet",
    "model.width=0.125",
    "data.num_points=128",
    "train.batch_size=32",
    "train.eval_batch_size=120",
    "train.threads=1",
    "optim.lr=0.01",
]


def tiny_cfg(out: Path, *extra: str):
    return load_config(None, [*TINY, f"out={out}", *extra])


def test_same_config_and_seed_give_the_same_metrics(tmp_path):
    a = build_trainer(tiny_cfg(tmp_path / "a", "train.epochs=1"), quiet=True).fit()
    b = build_trainer(tiny_cfg(tmp_path / "b", "train.epochs=1"), quiet=True).fit()
    c = build_trainer(tiny_cfg(tmp_path / "c", "train.epochs=1", "seed=1"), quiet=True).fit()
    assert a["test_last"] == b["test_last"]
    assert a["test_last"]["loss"] != c["test_last"]["loss"]
    steps = [r["loss"] for r in read_metrics(tmp_path / "a") if r["event"] == "train_step"]
    assert steps == [r["loss"] for r in read_metrics(tmp_path / "b") if r["event"] == "train_step"]
    # Each step logs the lr it was taken with (not the next step's): the schedule at step i.
    cfg = tiny_cfg(tmp_path / "a", "train.epochs=1")
    lrs = [r["lr"] for r in read_metrics(tmp_path / "a") if r["event"] == "train_step"]
    assert lrs[0] == 0.01
    assert lrs == pytest.approx([0.01 * lr_factor(cfg, i, len(lrs)) for i in range(len(lrs))])


def _run_cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "pcdistill", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_resume_after_kill_mid_epoch_reaches_the_same_result(tmp_path):
    """SIGKILL a real training process mid-epoch, resume it, compare with an uninterrupted run."""
    extra = ["train.epochs=2", "train.checkpoint_every=3", "data.val_fraction=0.125", "--quiet"]
    full = _run_cli("train", *TINY, f"out={tmp_path / 'full'}", *extra)
    assert full.wait(timeout=300) == 0, full.stderr.read()

    killed = tmp_path / "killed"
    proc = _run_cli("train", *TINY, f"out={killed}", *extra)
    deadline = time.time() + 240
    while time.time() < deadline:  # wait for the mid-epoch checkpoint of step 3 and a bit more
        if (killed / "last.pt").exists() and len(read_metrics(killed)) >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = load_checkpoint(killed / "last.pt")
    assert ckpt["epoch"] == 0 and 0 < ckpt["step_in_epoch"] < 8, "the kill must land mid-epoch"

    resumed = _run_cli("train", "--resume", str(killed), "--quiet")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()

    a = json.loads((tmp_path / "full" / "summary.json").read_text())
    b = json.loads((killed / "summary.json").read_text())
    assert a["test_last"] == b["test_last"] and a["best_val_oa"] == b["best_val_oa"]
    wa, _ = build_from_checkpoint(tmp_path / "full" / "last.pt")
    wb, _ = build_from_checkpoint(killed / "last.pt")
    for (name, pa), pb in zip(wa.state_dict().items(), wb.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    # The log was rewound to the checkpoint, so it reads like one uninterrupted run.
    log_a = [(r["event"], r["step"]) for r in read_metrics(tmp_path / "full")]
    log_b = [(r["event"], r["step"]) for r in read_metrics(killed)]
    assert log_a == log_b


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    build_trainer(tiny_cfg(out, "train.epochs=1"), quiet=True).fit()
    return out / "last.pt"


@pytest.mark.parametrize("command", ["train", "distill"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_checkpoint_the_step_and_resume_exactly(
    tmp_path, sig, command, tiny_teacher
):
    """Ctrl-C or a scheduler's SIGTERM mid-epoch, in `train` and in `distill` (KD, the
    teacher in the loop): the run writes a checkpoint at the step it just finished,
    prints the --resume command, exits 128 + signal, and resumes to the same weights and
    log as an uninterrupted run (no checkpoint_every needed)."""
    extra = ["train.epochs=2", "--quiet"]
    if command == "distill":
        extra += ["--config", "configs/distill/kd.yaml", "data.root=builtin", "data.dropout=0",
                  "data.val_fraction=0", f"teacher={tiny_teacher}"]  # fmt: skip
    full = _run_cli(command, *TINY, f"out={tmp_path / 'full'}", *extra)
    assert full.wait(timeout=300) == 0, full.stderr.read()

    stopped = tmp_path / "stopped"
    proc = _run_cli(command, *TINY, f"out={stopped}", *extra)
    deadline = time.time() + 240
    while time.time() < deadline and not (
        (stopped / "metrics.jsonl").exists() and len(read_metrics(stopped)) >= 2
    ):
        time.sleep(0.02)
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == 128 + sig
    err = proc.stderr.read()
    assert f"continue with: pcdistill {command} --resume {stopped}" in err, err
    ckpt = load_checkpoint(stopped / "last.pt")
    assert ckpt["epoch"] == 0 and 0 < ckpt["step_in_epoch"] < 8, "the stop must land mid-epoch"

    resumed = _run_cli(command, "--resume", str(stopped), "--quiet")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    wa, _ = build_from_checkpoint(tmp_path / "full" / "last.pt")
    wb, _ = build_from_checkpoint(stopped / "last.pt")
    for (name, pa), pb in zip(wa.state_dict().items(), wb.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    log_a = [(r["event"], r["step"]) for r in read_metrics(tmp_path / "full")]
    assert log_a == [(r["event"], r["step"]) for r in read_metrics(stopped)]


def test_checkpoint_refuses_another_architecture_or_class_list(tmp_path):
    trainer = build_trainer(tiny_cfg(tmp_path / "run", "train.epochs=1"), quiet=True)
    trainer.fit()
    other = build_trainer(
        tiny_cfg(tmp_path / "run", "train.epochs=2", "model.width=0.25"), quiet=True
    )
    with pytest.raises(ModelError, match="width"):
        other.fit(resume=True)
    wrong_classes = build_trainer(
        tiny_cfg(tmp_path / "run", "train.epochs=2", "data.classes=modelnet10"), quiet=True
    )
    with pytest.raises(ModelError, match="classes"):
        wrong_classes.fit(resume=True)
    with pytest.raises(ConfigError, match="already holds a run"):
        build_trainer(tiny_cfg(tmp_path / "run", "train.epochs=1"), quiet=True).fit()
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match=r"broken\.pt"):
        load_checkpoint(tmp_path / "broken.pt")


def test_bad_config_names_the_key_and_value(tmp_path):
    with pytest.raises(ConfigError, match=r"optim\.lrr: unknown key; did you mean 'optim\.lr'\?"):
        load_config(None, ["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"trian: unknown key; did you mean 'train'\?"):
        load_config(None, ["trian.epochs=1"])
    with pytest.raises(ConfigError, match=r"optim has name, lr, weight_decay, momentum$"):
        load_config(None, ["optim.learning_rate=1"])
    with pytest.raises(
        ConfigError, match=r"loss\.kd\.alpa: unknown key; did you mean 'loss\.kd\.alpha'"
    ):
        load_config(None, ["loss.kd.alpa=0.5", "teacher=t.pt"], schema=DistillConfig)
    with pytest.raises(ConfigError, match=r"train\.epochs.*got -1"):
        load_config(None, ["train.epochs=-1"])
    with pytest.raises(ConfigError, match=r"optim\.name"):
        load_config(None, ["optim.name=lion"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["optim.lr"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    proc = _run_cli("train", "train.batch_size=zero")
    assert proc.wait(timeout=60) == 2
    err = proc.stderr.read()
    assert "train.batch_size" in err and "Traceback" not in err


def test_summarize_golden_values():
    labels = np.array([0, 0, 0, 1, 1, 2])
    preds = np.array([0, 0, 1, 1, 0, 2])
    cm = confusion_matrix(labels, preds, 4)
    assert cm[:3, :3].tolist() == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    m = summarize(cm, ["a", "b", "c", "d"])
    assert m["oa"] == pytest.approx(4 / 6)
    assert m["macc"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)  # class d has no samples
    assert m["per_class"] == {"a": pytest.approx(2 / 3), "b": 0.5, "c": 1.0, "d": None}


def test_lr_schedules():
    cfg = load_config(None, ["train.epochs=10", "optim.lr=0.1", "sched.min_lr=0.001"])
    f = [lr_factor(cfg, s, 5) for s in range(50)]
    assert f[0] == pytest.approx(1.0, abs=1e-3) and f[-1] == pytest.approx(0.01, abs=1e-3)
    assert all(a >= b for a, b in itertools.pairwise(f))
    step = load_config(None, ["sched.name=step", "sched.step_size=2", "sched.gamma=0.5"])
    assert [lr_factor(step, s, 5) for s in (0, 9, 10, 20)] == [1.0, 1.0, 0.5, 0.25]
    warm = load_config(None, ["sched.warmup_epochs=1"])
    assert lr_factor(warm, 0, 4) == 0.25


def test_stratified_holdout_is_per_class_and_seeded():
    labels = np.repeat(np.arange(4), 10)
    kept, held = stratified_holdout(labels, 0.2, seed=3)
    assert np.bincount(labels[held]).tolist() == [2, 2, 2, 2]
    assert len(np.intersect1d(kept, held)) == 0 and len(kept) + len(held) == 40
    assert np.array_equal(held, stratified_holdout(labels, 0.2, seed=3)[1])


def test_vote_averages_the_clean_and_augmented_logits():
    from pcdistill.engine.device import derive_seed
    from pcdistill.engine.evaluate import evaluate, predict_logits
    from pcdistill.models import create_model
    from pcdistill.transforms import default_shape_augment

    model = create_model("pointnet", num_classes=5, width=0.125).eval()
    x = torch.randn(6, 64, 3, generator=torch.Generator().manual_seed(0))
    aug = default_shape_augment()
    cpu = torch.device("cpu")
    plain = predict_logits(model, x, cpu, batch_size=4)
    with torch.no_grad():
        torch.testing.assert_close(plain, model(x))
    voted = predict_logits(model, x, cpu, batch_size=4, vote=2, vote_aug=aug, seed=9)
    # By hand: per batch (start 0, 4), the clean logits and two copies seeded by (vote, start).
    with torch.no_grad():
        expected = []
        for start in (0, 4):
            xb = x[start : start + 4]
            total = model(xb)
            for v in range(2):
                params = aug.sample(
                    np.random.default_rng(derive_seed(9, "vote", v, start)), len(xb)
                )
                total = total + model(aug.apply(xb, params))
            expected.append(total / 3)
    torch.testing.assert_close(voted, torch.cat(expected))
    assert not torch.allclose(voted, plain)
    labels = plain.argmax(1)
    assert evaluate(model, x, labels, list("abcde"), cpu)["oa"] == 1.0


def test_device_optimizers_one_cycle_and_quiet_progress(tmp_path):
    from pcdistill.engine.device import pick_device
    from pcdistill.engine.runlog import RunLog
    from pcdistill.engine.trainer import build_optimizer

    if not torch.cuda.is_available():
        assert pick_device("auto").type in ("cpu", "mps")
        with pytest.raises(ConfigError, match="no CUDA"):
            pick_device("cuda")
    params = [torch.nn.Parameter(torch.zeros(2))]
    kinds = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    for name, kind in kinds.items():
        assert isinstance(build_optimizer(load_config(None, [f"optim.name={name}"]), params), kind)
    cycle = load_config(None, ["sched.name=onecycle", "train.epochs=10"])
    f = [lr_factor(cycle, s, 10) for s in range(100)]
    assert f.index(max(f)) == 30 and f[0] < 0.1 and f[-1] < 0.01  # up for 30%, then down
    # Not a TTY (pytest captures stderr): no bar, whatever --quiet says.
    log = RunLog(tmp_path, quiet=False, tensorboard=False)
    assert log.progress(10, 0, "x").disable


def test_a_snapshot_restarts_where_the_run_stopped_with_fresh_optimizer_state(
    tmp_path, monkeypatch
):
    """The run folder is lost; only the snapshot (no optimizer state) is kept. The restart
    continues at the same step with the same weights, data order and lr schedule as the
    uninterrupted run (so the first step after it has the same loss), starts Adam afresh,
    and says so in the log and the summary; the lost epoch rows come back from the snapshot."""
    extra = ["train.epochs=2", "optim.name=adam", "data.val_fraction=0.125"]
    full = build_trainer(tiny_cfg(tmp_path / "full", *extra), quiet=True)
    full.fit()
    spe = full.batches.steps_per_epoch
    stop_at = spe + 2

    def stop_once(self, stop):
        stop.signum = signal.SIGINT if self.global_step == stop_at else 0
        return bool(stop.signum)

    run = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(Trainer, "_stop_requested", stop_once)
        with pytest.raises(Interrupted):
            build_trainer(tiny_cfg(run, *extra), quiet=True).fit()
    lost = [r for r in read_metrics(run) if r["event"] == "epoch"]
    snap = write_snapshot(run, tmp_path / "snap.pt")
    assert "optimizer" not in snap and snap["global_step"] == stop_at
    assert (tmp_path / "snap.pt").stat().st_size < (run / "last.pt").stat().st_size
    shutil.rmtree(run)

    cfg = tiny_cfg(run, *extra)
    summary = build_trainer(cfg, quiet=True).fit(resume=tmp_path / "snap.pt")
    assert summary["restarts"] == [stop_at]
    a, b = read_metrics(tmp_path / "full"), read_metrics(run)
    restart = [r for r in b if r["event"] == "restart"]
    assert [r["step"] for r in restart] == [stop_at] and restart[0]["optimizer"] == "restarted"
    epochs_a = [r for r in a if r["event"] == "epoch"]
    epochs_b = [r for r in b if r["event"] == "epoch"]
    assert epochs_b[:1] == lost  # restored from the snapshot, not recomputed
    assert epochs_b[0]["test_oa"] == epochs_a[0]["test_oa"]
    steps_a = {r["step"]: r for r in a if r["event"] == "train_step"}
    steps_b = {r["step"]: r for r in b if r["event"] == "train_step"}
    assert sorted(steps_b) == list(range(stop_at + 1, 2 * spe + 1))
    for s, r in steps_b.items():
        assert r["lr"] == pytest.approx(steps_a[s]["lr"], rel=1e-12), s
    first = steps_b[stop_at + 1]
    assert first["loss"] == pytest.approx(steps_a[stop_at + 1]["loss"], rel=1e-6)
    assert epochs_b[1]["train_loss"] != epochs_a[1]["train_loss"]  # Adam did start afresh

    with pytest.raises(ConfigError, match="already holds a run"):
        build_trainer(cfg, quiet=True).fit(resume=tmp_path / "snap.pt")
    weights = tmp_path / "weights.pt"
    model, ckpt = build_from_checkpoint(run / "last.pt")
    save_model(weights, model, ckpt["model"], ckpt["class_names"],
               ckpt["dataset_fingerprint"], ckpt["config"])  # fmt: skip
    with pytest.raises(ConfigError, match="weights only, no training progress"):
        build_trainer(tiny_cfg(tmp_path / "new", *extra), quiet=True).fit(resume=weights)


def test_checkpoints_come_every_few_minutes_without_checkpoint_every(tmp_path, monkeypatch):
    """train.checkpoint_minutes (default 5) writes last.pt at the first step after that
    long without one, so a kill loses minutes, not an epoch; 0 turns it off."""
    assert load_config(None, []).train.checkpoint_minutes == 5
    saves = []
    original = Trainer.save
    monkeypatch.setattr(Trainer, "save", lambda self, name: (saves.append(self.global_step),
                                                            original(self, name)))  # fmt: skip
    often = tiny_cfg(tmp_path / "often", "train.epochs=2", "train.checkpoint_minutes=1e-9")
    trainer = build_trainer(often, quiet=True)
    trainer.fit()
    spe, epochs = trainer.batches.steps_per_epoch, trainer.cfg.train.epochs
    assert saves == list(range(1, spe * epochs + 1))  # every step: mid-epoch and epoch ends
    saves.clear()
    never = tiny_cfg(tmp_path / "never", "train.epochs=2", "train.checkpoint_minutes=0")
    build_trainer(never, quiet=True).fit()
    assert saves == [spe * (e + 1) for e in range(epochs)]  # epoch ends only
