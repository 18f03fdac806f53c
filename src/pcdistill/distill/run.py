"""From a DistillConfig to a trained student: optional T3DNet stage 1, then the
distillation stage with a live teacher or its records.

Folder layout of a run `out/`: the student's checkpoints and logs as for any
training run; with `netaug`, stage 1 lives in `out/netaug/` (`last.pt` is the
supernet, for resuming; `tiny.pt` is the exported tiny model with re-estimated
BatchNorm statistics, a plain zoo checkpoint, and the start of stage 2).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pcdistill.distill.config import DistillConfig
from pcdistill.distill.dkd import DKD
from pcdistill.distill.fad import FAD
from pcdistill.distill.fitnet import FitNet
from pcdistill.distill.kd import KD
from pcdistill.distill.netaug import NetAugObjective, NetAugSuperNet, reestimate_batchnorm
from pcdistill.distill.nwsd import NWSD, CopyTargets, EMATarget
from pcdistill.distill.objective import Distill, Term
from pcdistill.engine.batches import RecordedBatches
from pcdistill.engine.checkpoint import (
    build_from_checkpoint,
    load_checkpoint,
    load_state,
    model_spec,
    save_model,
)
from pcdistill.engine.config import dump_config
from pcdistill.engine.distributed import world
from pcdistill.engine.run import build_trainer, check_model_config, load_splits, new_model
from pcdistill.engine.trainer import Split, Trainer, point_augment
from pcdistill.errors import ConfigError, DataError, ModelError
from pcdistill.records import RecordSet, read_records
from pcdistill.records.schema import model_fingerprint
from pcdistill.transforms import ShapeAugment

Splits = tuple[Split, Split | None, Split, str]


def run_distill(cfg: DistillConfig, quiet: bool = False, resume: bool = False) -> dict:
    """Run every stage of `cfg`; with `resume`, pick up where an interrupted run stopped."""
    check_model_config(cfg)
    out = Path(cfg.out)
    if not resume and ((out / "last.pt").exists() or (out / "netaug" / "last.pt").exists()):
        raise ConfigError(f"{out} already holds a run; use --resume or another out folder")
    out.mkdir(parents=True, exist_ok=True)
    if world().main:  # `--resume out` works from stage 1 on
        (out / "config.yaml").write_text(dump_config(cfg))
    splits = load_splits(cfg)
    init = _netaug_stage(cfg, splits, quiet, resume) if cfg.netaug else None
    trainer = build_distill_trainer(cfg, splits, init, quiet)
    return trainer.fit(resume=resume and (out / "last.pt").is_file())


def build_distill_trainer(
    cfg: DistillConfig, splits: Splits, init: dict | None = None, quiet: bool = False
) -> Trainer:
    """The distillation stage: a fresh student (or `init` weights), its teacher signal and
    its objective. Records cover the whole train split; the rows this run trains on are
    picked out, so a held-out validation split is fine."""
    train, num_classes = splits[0], len(splits[0].class_names)
    teacher, teacher_ckpt = (None, None)
    if cfg.teacher:
        teacher, teacher_ckpt = _load_teacher(cfg.teacher, train.class_names)
    records = _load_records(cfg, splits, teacher, teacher_ckpt) if cfg.records else None

    model, spec = new_model(cfg, num_classes)  # initialised as for any training run
    if init is not None:
        load_state(model, init, Path(cfg.out) / "netaug" / "tiny.pt")
    objective = build_objective(cfg, model, teacher, records, len(train.points))
    batches = None
    if records is not None:
        rows = slice(None) if train.rows is None else train.rows.numpy()
        feats = None if records.features is None else torch.from_numpy(records.features[rows])
        batches = RecordedBatches(
            train.points, train.labels, cfg.train.batch_size, cfg.seed,
            ShapeAugment.from_spec(cfg.data.shape_augment),
            torch.from_numpy(records.params[rows]), torch.from_numpy(records.logits[rows]),
            point_aug=point_augment(cfg), features=feats,
        )  # fmt: skip
    return build_trainer(
        cfg, quiet, objective, splits=splits, batches=batches, model=model, spec=spec
    )


def build_objective(
    cfg: DistillConfig,
    student: nn.Module,
    teacher: nn.Module | None,
    records: RecordSet | None,
    num_train: int,
) -> Distill:
    """The configured terms around one CE; the teacher runs live only without records."""
    loss = cfg.loss
    teacher_dim = 0
    if teacher is not None:
        teacher_dim = teacher.global_dim
    elif records is not None:
        teacher_dim = records.header.feature_dim
    if (loss.fitnet or loss.fad) and records is not None and records.features is None:
        raise ConfigError(
            f"loss.fitnet / loss.fad need teacher features, but the records in {cfg.records} "
            "hold none: record with `pcdistill record --features`"
        )
    terms: dict[str, Term] = {}
    if loss.kd:
        terms["kd"] = KD(loss.kd.alpha, loss.kd.tau)
    if loss.dkd:
        d = loss.dkd
        terms["dkd"] = DKD(d.weight, d.alpha, d.beta, d.tau)
    if loss.fitnet:
        terms["fitnet"] = FitNet(student.global_dim, teacher_dim, loss.fitnet.weight)
    if loss.fad:
        f = loss.fad
        head = teacher.head if f.critic == "teacher_head" else None
        terms["fad"] = FAD(student.global_dim, teacher_dim, f.lam, f.critic, f.d_hidden, f.d_lr,
                           teacher_head=head)  # fmt: skip
    if loss.nwsd:
        n = loss.nwsd
        if n.target == "copy":
            target = CopyTargets(num_train, records.header.copies, len(records.header.class_names))
        else:
            target = EMATarget(n.ema_decay)
        tau = n.tau or (loss.kd.tau if loss.kd else 4.0)
        terms["nwsd"] = NWSD(target, n.beta, tau, n.clip, n.warmup, n.decay_start)
    ce = loss.ce_weight if loss.ce_weight is not None else (1 - loss.kd.alpha if loss.kd else 1.0)
    live = teacher if records is None else None
    return Distill(terms, live, ce, cfg.train.label_smoothing)


def _load_teacher(path: str, class_names: tuple[str, ...]) -> tuple[nn.Module, dict]:
    teacher, ckpt = build_from_checkpoint(path)
    if list(ckpt["class_names"]) != list(class_names):
        raise ModelError(
            f"teacher {path} was trained on classes {list(ckpt['class_names'])[:5]}..., "
            f"the student's dataset has {list(class_names)[:5]}..."
        )
    return teacher.eval().requires_grad_(False), ckpt


def _load_records(
    cfg: DistillConfig, splits: Splits, teacher: nn.Module | None, teacher_ckpt: dict | None
) -> RecordSet:
    """The records of the whole train split, checked against this run (and its teacher)."""
    train, _, _, fingerprint = splits
    records = read_records(
        cfg.records,
        dataset_fingerprint=fingerprint,
        class_names=train.class_names,
        augment_spec=ShapeAugment.from_spec(cfg.data.shape_augment).spec(),
    )
    if teacher is not None:
        have = model_fingerprint(teacher, teacher_ckpt["model"])
        if records.header.teacher_fingerprint != have:
            raise DataError(
                f"records in {cfg.records} come from another teacher than {cfg.teacher} "
                f"(fingerprint {records.header.teacher_fingerprint[:12]} != {have[:12]})"
            )
    return records


def _netaug_stage(cfg: DistillConfig, splits: Splits, quiet: bool, resume: bool) -> dict:
    """T3DNet stage 1; returns the exported tiny model's state (re-using a finished stage)."""
    stage_out = Path(cfg.out) / "netaug"
    tiny_path = stage_out / "tiny.pt"
    if tiny_path.is_file():
        return load_checkpoint(tiny_path)["state_dict"]
    n, train = cfg.netaug, splits[0]
    num_classes, name, kwargs = len(train.class_names), cfg.model.name, cfg.model.kwargs
    stage_cfg = cfg.model_copy(deep=True)
    stage_cfg.out, stage_cfg.train.epochs = str(stage_out), n.epochs
    torch.manual_seed(cfg.seed)
    supernet = NetAugSuperNet(name, num_classes, cfg.model.width, max(n.expand), **kwargs)
    spec = model_spec("netaug", num_classes, cfg.model.width,
                      {"base": name, "max_expand": max(n.expand), **kwargs})  # fmt: skip
    objective = NetAugObjective(tuple(n.expand), n.widen_until, cfg.train.label_smoothing)
    trainer = build_trainer(stage_cfg, quiet, objective, splits=splits, model=supernet, spec=spec)
    trainer.fit(resume=resume and (stage_out / "last.pt").is_file())

    tiny = supernet.export_tiny().to(trainer.device)
    steps = min(n.bn_batches, trainer.batches.steps_per_epoch)
    clouds = (trainer.batches.batch(0, s).points.to(trainer.device) for s in range(steps))
    reestimate_batchnorm(tiny, clouds, max_batches=steps)
    if world().main:  # every rank holds the same tiny model; one writes it
        spec = model_spec(name, num_classes, cfg.model.width, kwargs)
        config = stage_cfg.model_dump(mode="json")
        save_model(tiny_path, tiny, spec, list(train.class_names), splits[3], config,
                   trainer.preprocess)  # fmt: skip
    return tiny.state_dict()
