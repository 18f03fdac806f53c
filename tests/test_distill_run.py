"""`pcdistill distill`: recipes, sources of the teacher signal, the T3DNet stages, resume."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from pcdistill import cli
from pcdistill.distill.config import DistillConfig
from pcdistill.distill.nwsd import EMATarget
from pcdistill.distill.run import build_distill_trainer, run_distill
from pcdistill.engine.batches import Batch
from pcdistill.engine.checkpoint import build_from_checkpoint, load_checkpoint, save_model
from pcdistill.engine.config import load_config
from pcdistill.engine.run import load_set, load_splits
from pcdistill.errors import ConfigError, DataError
from pcdistill.models import create_model
from pcdistill.records.record import record_teacher
from pcdistill.transforms import ShapeAugment

RECIPES = sorted((Path(__file__).resolve().parents[1] / "configs" / "distill").glob("*.yaml"))
# The built-in ModelNet10 cut: 80 training shapes, a quarter held out, 30 test shapes.
SMALL = ["data.root=builtin", "data.num_points=512", "data.classes=modelnet10",
         "data.val_fraction=0.25", "train.epochs=1", "train.batch_size=16"]  # fmt: skip


def small_config(tmp: Path, *overrides: str, recipe: Path | None = None) -> DistillConfig:
    base = ["model.name=pointnet2_msg", "model.width=0.125"] if recipe is None else []
    return load_config(recipe, [*base, *SMALL, f"out={tmp}", *overrides], schema=DistillConfig)


def make_teacher(path: Path, cfg: DistillConfig, seed: int) -> nn.Module:
    """An untrained PointNet stands in for a teacher: the plumbing is what is tested."""
    torch.manual_seed(seed)
    teacher = create_model("pointnet", num_classes=10, width=0.125).eval()
    data = load_set(cfg, "train")
    spec = {"name": "pointnet", "num_classes": 10, "width": 0.125, "kwargs": {}}
    save_model(path, teacher, spec, list(data.class_names), data.fingerprint(),
               cfg.model_dump(mode="json"))  # fmt: skip
    return teacher


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict:
    """A teacher checkpoint and its K = 2 records (with features) on the small train set."""
    tmp = tmp_path_factory.mktemp("sources")
    cfg = small_config(tmp)
    teacher = make_teacher(tmp / "teacher.pt", cfg, seed=1)
    data = load_set(cfg, "train")
    aug = ShapeAugment.from_spec(cfg.data.shape_augment)
    spec = load_checkpoint(tmp / "teacher.pt")["model"]
    record_teacher(teacher, spec, data, aug, copies=2, out=tmp / "records", features=True)
    return {"teacher": tmp / "teacher.pt", "records": tmp / "records", "model": teacher}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_shares_the_student_and_the_schedule(recipe):
    cfg = load_config(recipe, schema=DistillConfig)
    assert (cfg.model.name, cfg.model.width) == ("pointnet2_msg", 0.125)
    assert cfg.train.epochs == 1 and cfg.seed == 0 and cfg.train.batch_size == 32
    assert (cfg.optim.name, cfg.optim.lr, cfg.sched.name) == ("adam", 0.003, "cosine")
    assert cfg.netaug is None or cfg.netaug.epochs == 1  # T3DNet's own stage comes first
    assert cfg.data.val_fraction > 0  # best.pt on a hold-out, never on test
    assert cfg.out == str(Path("runs/distill", recipe.stem).resolve())  # stored absolute


def test_the_recipes_cover_every_method():
    assert {p.stem for p in RECIPES} == {"scratch", "kd", "offline_kd", "offline_kd_nwsd",
                                         "offline_kd_nwsd_copy", "t3dnet", "fad", "fitnet",
                                         "dkd"}  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss.kd.alpha=0.5"], r"loss terms \['kd'\] need teacher"),
        (["teacher=t.pt", "loss.nwsd.beta=0.1"], "target=copy needs records"),
        (["records=r", "loss.fad.critic=teacher_head"], "teacher_head needs teacher"),
        (["loss.kd.tau=0"], "loss.kd.tau"),
        # a share above 1 made the default CE weight (1 - alpha) negative: CE was maximised
        (["teacher=t.pt", "loss.kd.alpha=2"], r"loss\.kd\.alpha: .*less than or equal to 1.*got 2"),
        (["teacher=t.pt", "loss.nwsd.target=ema", "loss.nwsd.ema_decay=1"], "ema_decay"),
        (["sched.gamma=1.5"], r"sched\.gamma"),
        (["loss.nwsd.target=ema", "loss.nwsd.warmup=0.8"], "warmup"),
        (["loss.kd.temperature=2", "teacher=t.pt"], "loss.kd.temperature: unknown key"),
        (["netaug.expand=[0.5]"], "expand must list widths"),
    ],
)
def test_config_errors_name_the_key(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        small_config(tmp_path, *overrides)


def test_records_are_matched_to_the_rows_a_held_out_split_leaves(tmp_path, sources):
    """Records cover the whole train split; with a validation hold-out every rebuilt input
    must still get its own sample's recorded logits (== a fresh teacher forward)."""
    cfg = small_config(tmp_path, f"records={sources['records']}", "loss.kd.alpha=0.9")
    splits = load_splits(cfg)
    rows = splits[0].rows
    assert rows is not None and not torch.equal(rows, torch.arange(len(rows)))
    trainer = build_distill_trainer(cfg, splits)
    for step in range(trainer.batches.steps_per_epoch):
        b = trainer.batches.batch(0, step)
        with torch.no_grad():
            fresh = sources["model"](b.points)
        torch.testing.assert_close(b.teacher_logits, fresh, rtol=1e-3, atol=1e-3)


def test_records_of_another_teacher_are_refused(tmp_path, sources):
    cfg = small_config(tmp_path, f"records={sources['records']}", "loss.kd.alpha=0.9")
    make_teacher(tmp_path / "other.pt", cfg, seed=2)
    cfg.teacher = str(tmp_path / "other.pt")
    with pytest.raises(DataError, match="another teacher"):
        build_distill_trainer(cfg, load_splits(cfg))


def test_feature_terms_on_records_without_features_are_refused(tmp_path, sources):
    cfg = small_config(tmp_path, f"records={sources['records']}", "loss.fitnet.weight=1")
    teacher, ckpt = build_from_checkpoint(sources["teacher"])
    plain = tmp_path / "plain"
    data = load_set(cfg, "train")
    aug = ShapeAugment.from_spec(cfg.data.shape_augment)
    record_teacher(teacher.eval(), ckpt["model"], data, aug, copies=1, out=plain)
    cfg.records = str(plain)
    with pytest.raises(ConfigError, match="--features"):
        build_distill_trainer(cfg, load_splits(cfg))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_runs_from_the_command_line(tmp_path, sources, recipe, capsys):
    text = recipe.read_text()  # each recipe keeps only the sources it names
    sources_args = [f"{k}={sources[k]}" for k in ("teacher", "records") if f"\n{k}:" in text]
    argv = ["distill", "--config", str(recipe), *SMALL, f"out={tmp_path / 'run'}",
            "netaug.epochs=1", *sources_args, "--quiet"]  # fmt: skip
    if "netaug" not in recipe.read_text():
        argv.remove("netaug.epochs=1")
    assert cli.main(argv) == 0
    assert "test OA" in capsys.readouterr().out
    _, ckpt = build_from_checkpoint(tmp_path / "run" / "last.pt")  # a plain zoo checkpoint
    assert (ckpt["model"]["name"], ckpt["model"]["width"]) == ("pointnet2_msg", 0.125)


def test_t3dnet_stage_two_starts_from_the_exported_tiny_model_and_resumes(tmp_path, sources):
    out = tmp_path / "t3d"
    cfg = small_config(out, f"records={sources['records']}", "loss.kd.alpha=0.9",
                       "netaug.epochs=1", "netaug.bn_batches=2")  # fmt: skip
    first = run_distill(cfg, quiet=True)
    tiny, ckpt = build_from_checkpoint(out / "netaug" / "tiny.pt")
    assert (ckpt["model"]["name"], ckpt["model"]["width"]) == ("pointnet2_msg", 0.125)
    assert load_checkpoint(out / "netaug" / "last.pt")["model"]["name"] == "netaug"

    trainer = build_distill_trainer(cfg, load_splits(cfg), init=tiny.state_dict())
    for key, value in tiny.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[key], value), key

    # Lose stage 2; resuming re-uses stage 1 and ends where the first run ended.
    stage1_log = (out / "netaug" / "metrics.jsonl").read_text()
    final = load_checkpoint(out / "last.pt")["state_dict"]
    for name in ("last.pt", "best.pt", "metrics.jsonl", "summary.json"):
        (out / name).unlink(missing_ok=True)
    again = run_distill(cfg, quiet=True, resume=True)
    assert (out / "netaug" / "metrics.jsonl").read_text() == stage1_log
    assert again["test_last"] == first["test_last"]
    for key, value in load_checkpoint(out / "last.pt")["state_dict"].items():
        assert torch.equal(value, final[key]), key
    assert json.loads((out / "summary.json").read_text())["epochs"] == 1


def test_a_new_run_refuses_a_folder_holding_one(tmp_path, sources):
    cfg = small_config(tmp_path, "netaug.epochs=1")
    (tmp_path / "netaug").mkdir()
    (tmp_path / "netaug" / "last.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match="already holds a run"):
        run_distill(cfg)


class _Mean(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        return self.lin(x.mean(1))


def test_ema_target_averages_the_weights_and_skips_the_first_step():
    model = _Mean()
    batch = Batch(torch.randn(4, 8, 3), torch.zeros(4, dtype=torch.long), torch.arange(4),
                  torch.zeros(4, 0))  # fmt: skip
    target = EMATarget(decay=0.75)
    _, seen = target.targets(model, batch, model(batch.points))
    assert not seen.any()
    old = model.lin.weight.detach().clone()
    with torch.no_grad():
        model.lin.weight.add_(1.0)
    logits, seen = target.targets(model, batch, model(batch.points))
    assert seen.all()
    torch.testing.assert_close(target.ema.lin.weight, 0.75 * old + 0.25 * (old + 1.0))
    torch.testing.assert_close(logits, target.ema(batch.points))
    # Resuming from a checkpoint continues exactly as the uninterrupted target does.
    restored = EMATarget(decay=0.75)
    restored.load_state_dict({k: v.clone() for k, v in target.state_dict().items()})  # as saved
    with torch.no_grad():
        model.lin.weight.mul_(0.5)
    logits, _ = target.targets(model, batch, model(batch.points))
    again, seen = restored.targets(model, batch, model(batch.points))
    assert seen.all()
    torch.testing.assert_close(again, logits, rtol=0, atol=0)
    torch.testing.assert_close(restored.ema.lin.weight, target.ema.lin.weight, rtol=0, atol=0)
