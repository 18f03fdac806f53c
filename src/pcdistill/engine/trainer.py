"""The training loop every method shares.

A method plugs in as an *objective* (`objective(model, batch) -> (loss, logits)`)
and, if it needs other inputs, as a *batch source* (anything with
`steps_per_epoch` and `batch(epoch, step)`). The trainer owns the rest: optimiser,
schedule, checkpoints, evaluation, logging and exact resume.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from pcdistill.data.preprocess import input_recipe
from pcdistill.engine.batches import AugmentedBatches, Batch
from pcdistill.engine.checkpoint import (
    FORMAT,
    VERSION,
    atomic_save,
    check_compatible,
    load_checkpoint,
    load_state,
)
from pcdistill.engine.config import RunConfig, dump_config
from pcdistill.engine.device import derive_seed, pick_device, tune_cpu_allocator
from pcdistill.engine.distributed import (
    all_sum,
    average_gradients,
    check_divides,
    convert_sync_batchnorm,
    init_from_env,
)
from pcdistill.engine.evaluate import evaluate
from pcdistill.engine.runlog import RunLog
from pcdistill.errors import ConfigError, Interrupted
from pcdistill.transforms import Jitter, PointAugment, RandomDropout, ShapeAugment, Shuffle


@dataclass
class Split:
    """One split held in memory as tensors."""

    points: Tensor
    labels: Tensor
    class_names: tuple[str, ...]
    rows: Tensor | None = None  # rows of the whole split held here (None: all, in order)


class Objective(Protocol):
    def __call__(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]: ...


class BatchSource(Protocol):
    steps_per_epoch: int

    def batch(self, epoch: int, step: int) -> Batch: ...


class CrossEntropy:
    """Plain supervised training (the `scratch` baseline)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
        logits = model(batch.points)
        return F.cross_entropy(logits, batch.labels, label_smoothing=self.label_smoothing), logits


def build_optimizer(cfg: RunConfig, params) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)


def lr_factor(cfg: RunConfig, step: int, steps_per_epoch: int) -> float:
    """Multiplier of the base lr at a global step; the schedule is stepped every batch."""
    s, total = cfg.sched, cfg.train.epochs * steps_per_epoch
    warmup = s.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    floor = s.min_lr / cfg.optim.lr
    if s.name == "cosine":
        t = (step - warmup) / max(total - warmup, 1)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    if s.name == "step":
        return max(s.gamma ** (step // (s.step_size * steps_per_epoch)), floor)
    if s.name == "onecycle":  # linear up for 30% of the run, cosine down to 1/1000
        peak = max(int(0.3 * total), 1)
        if step < peak:
            return 0.04 + 0.96 * step / peak
        t = (step - peak) / max(total - peak, 1)
        return 1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * t))
    return 1.0


class Trainer:
    def __init__(
        self,
        cfg: RunConfig,
        model: nn.Module,
        model_spec: dict,
        train: Split,
        test: Split,
        val: Split | None = None,
        objective: Objective | None = None,
        batches: BatchSource | None = None,
        dataset_fingerprint: str = "",
        quiet: bool = False,
    ) -> None:
        self.cfg = cfg
        self.device = pick_device(cfg.train.device)
        self.world = init_from_env(self.device.type)
        check_divides(cfg.train.batch_size, self.world)
        if self.device.type == "cuda" and self.world.size > 1:
            self.device = torch.device("cuda", self.world.local_rank)
            torch.cuda.set_device(self.device)
        if self.device.type == "cpu":
            tune_cpu_allocator()
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        if cfg.train.sync_bn and self.world.size > 1:
            model = convert_sync_batchnorm(model, self.device)
        self.model = model.to(self.device)
        # What the objective calls: DDP averages the gradients over ranks as they are made.
        self.net: nn.Module = self.model
        if self.world.size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.model_spec = model_spec
        self.train_split, self.val_split, self.test_split = train, val, test
        self.class_names = list(train.class_names)
        self.fingerprint = dataset_fingerprint
        self.preprocess = input_recipe(cfg.data.normalize, train.points.numpy())
        self.objective = objective or CrossEntropy(cfg.train.label_smoothing)
        if hasattr(self.objective, "to"):  # objectives holding a teacher or a critic
            self.objective.to(self.device)
        self.shape_aug = ShapeAugment.from_spec(cfg.data.shape_augment)
        self.batches = batches or AugmentedBatches(
            train.points,
            train.labels,
            cfg.train.batch_size,
            cfg.seed,
            self.shape_aug,
            point_aug=point_augment(cfg),
        )
        params = [p for p in self.model.parameters() if p.requires_grad]
        # Parameters a loss term owns (projectors): trained here, averaged over ranks by hand.
        self.extra_params = list(getattr(self.objective, "extra_parameters", lambda: [])())
        params += self.extra_params
        self.optimizer = build_optimizer(cfg, params)
        self.scheduler = self._scheduler_at(0)
        self.step_lr = self.optimizer.param_groups[0]["lr"]  # the lr the last step used
        self.use_amp = cfg.train.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.out = Path(cfg.out)
        self.quiet = quiet
        # Progress, restored from a checkpoint on resume.
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best_val: float | None = None
        self.elapsed = 0.0
        self.epoch_sums = {"loss": 0.0, "correct": 0, "seen": 0}  # this epoch's running totals
        self.restarts: list[int] = []  # global steps where a snapshot restarted the optimizer

    def _scheduler_at(self, step: int) -> torch.optim.lr_scheduler.LambdaLR:
        """The per-batch lr schedule positioned at global `step` (0 for a new run)."""
        cfg, spe = self.cfg, self.batches.steps_per_epoch
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        return torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(cfg, s, spe), last_epoch=step - 1
        )

    # ---- checkpoints -------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        objective_state = getattr(self.objective, "state_dict", None)
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": self.model_spec,
            "class_names": self.class_names,
            "dataset_fingerprint": self.fingerprint,
            "config": self.cfg.model_dump(mode="json"),
            "preprocess": self.preprocess,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "objective": objective_state() if objective_state else None,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "best_val": self.best_val,
            "elapsed": self.elapsed,
            "epoch_sums": self.epoch_sums,
            "restarts": self.restarts,
        }

    def save(self, name: str) -> None:
        if self.world.main:
            atomic_save(self._state(), self.out / name)

    def restore(self, path: Path) -> None:
        """Continue from a full checkpoint (bit-identical) or from a snapshot
        (`write_snapshot`: same weights, schedule position and data order; the optimizer
        restarts, which the log and the summary record)."""
        ckpt = load_checkpoint(path)
        check_compatible(ckpt, path, self.model_spec, self.class_names)
        if ckpt["dataset_fingerprint"] != self.fingerprint:
            raise ConfigError(
                f"checkpoint {path} was trained on dataset {ckpt['dataset_fingerprint'][:12]}, "
                f"but this run's dataset is {self.fingerprint[:12]}"
            )
        if "global_step" not in ckpt:
            raise ConfigError(f"{path} holds model weights only, no training progress to resume")
        load_state(self.model, ckpt["state_dict"], path)
        if ckpt["objective"] is not None:
            self.objective.load_state_dict(ckpt["objective"])
        self.epoch, self.step_in_epoch = ckpt["epoch"], ckpt["step_in_epoch"]
        self.global_step, self.best_val = ckpt["global_step"], ckpt["best_val"]
        self.elapsed, self.epoch_sums = ckpt["elapsed"], ckpt["epoch_sums"]
        self.restarts = list(ckpt.get("restarts", []))
        log = self.out / "metrics.jsonl"
        if "optimizer" in ckpt:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scaler.load_state_dict(ckpt["scaler"])
        else:
            self.restarts.append(self.global_step)
            if self.world.main and not log.is_file():  # the run folder is gone: its curves
                log.write_text("".join(json.dumps(r) + "\n" for r in ckpt["history"]))
        # The next step's lr comes from this run's plan, which `train.epochs=N` on resume
        # may have extended (the lr saved in the optimizer state is the old plan's).
        self.scheduler = self._scheduler_at(self.global_step)
        if self.world.main:
            _truncate_log(log, self.global_step)
        if "optimizer" not in ckpt:
            RunLog(self.out, quiet=True, tensorboard=False, enabled=self.world.main).log(
                "restart", self.global_step, source=str(path), optimizer="restarted"
            )

    # ---- the loop ----------------------------------------------------------------------
    def train_step(self, batch: Batch) -> tuple[float, int]:
        """One optimizer step on the global batch; returns its mean loss and correct count."""
        self.model.train()
        # Dropout and any other global-RNG draw of this step come from (epoch, step).
        torch.manual_seed(derive_seed(self.cfg.seed, "torch", self.epoch, self.step_in_epoch))
        batch = self._local(batch).to(self.device)
        if hasattr(self.objective, "set_progress"):  # schedules inside a loss (e.g. NWSD's beta)
            total = self.cfg.train.epochs * self.batches.steps_per_epoch
            self.objective.set_progress(self.global_step / total)
        with torch.autocast(self.device.type, enabled=self.use_amp):
            loss, logits = self.objective(self.net, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss became {loss.item()} at epoch {self.epoch} step {self.step_in_epoch}; "
                f"lower optim.lr or set train.grad_clip"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        average_gradients(self.extra_params)
        if self.cfg.train.grad_clip:
            self.scaler.unscale_(self.optimizer)
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            nn.utils.clip_grad_norm_(params, self.cfg.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step_lr = self.optimizer.param_groups[0]["lr"]  # this step's, before the next
        self.scheduler.step()
        correct = int((logits.argmax(1) == batch.labels).sum())
        n = len(batch.labels)
        loss_sum, correct_sum, seen = all_sum([loss.item() * n, correct, n])
        return loss_sum / seen, int(correct_sum)

    def _local(self, batch: Batch) -> Batch:
        """This rank's contiguous slice of the global batch."""
        if self.world.size == 1:
            return batch
        b = len(batch.labels) // self.world.size
        rows = slice(self.world.rank * b, (self.world.rank + 1) * b)
        return Batch(*(None if t is None else t[rows] for t in vars(batch).values()))

    def evaluate(self, split: Split) -> dict:
        return evaluate(
            self.model,
            split.points,
            split.labels,
            split.class_names,
            self.device,
            self.cfg.train.eval_batch_size,
            self.cfg.train.vote,
            self.shape_aug,
            self.cfg.seed,
            shard=(self.world.rank, self.world.size),
        )

    def fit(self, resume: bool | Path = False) -> dict:
        """Train to the configured number of epochs; returns the summary also written to disk.

        `resume=True` continues from the run folder's last.pt, a path from that checkpoint
        or snapshot (into a run folder that holds no run yet)."""
        self.out.mkdir(parents=True, exist_ok=True)
        last = self.out / "last.pt"
        if isinstance(resume, Path):
            if last.exists():
                raise ConfigError(
                    f"{self.out} already holds a run; resume it with --resume {self.out}"
                )
            self.restore(resume)
            self.save("last.pt")  # the folder now holds this run
        elif resume:
            if not last.is_file():
                raise ConfigError(f"nothing to resume: {last} does not exist")
            self.restore(last)
        elif last.exists():
            raise ConfigError(f"{self.out} already holds a run; use --resume or another out folder")
        elif self.world.main:  # a run killed before its first checkpoint left steps to redo
            _truncate_log(self.out / "metrics.jsonl", 0)
        if self.world.main:
            (self.out / "config.yaml").write_text(dump_config(self.cfg))
        log = RunLog(self.out, quiet=self.quiet, enabled=self.world.main)
        spe, bs = self.batches.steps_per_epoch, self.cfg.train.batch_size
        every, minutes = self.cfg.train.checkpoint_every, self.cfg.train.checkpoint_minutes
        saved = time.perf_counter()  # when the last checkpoint was written (or the start)
        stop = _StopSignals()
        ran = self.epoch < self.cfg.train.epochs
        try:
            while self.epoch < self.cfg.train.epochs:
                desc = f"epoch {self.epoch + 1}/{self.cfg.train.epochs}"
                bar = log.progress(spe, self.step_in_epoch, desc)
                t0 = start = time.perf_counter()
                done = 0
                while self.step_in_epoch < spe:
                    loss, correct = self.train_step(
                        self.batches.batch(self.epoch, self.step_in_epoch)
                    )
                    self.step_in_epoch += 1
                    self.global_step += 1
                    done += bs
                    sums = self.epoch_sums
                    sums["loss"] += loss * bs
                    sums["correct"] += correct
                    sums["seen"] += bs
                    bar.update(1)
                    rate = done / (time.perf_counter() - start)
                    bar.set_postfix(
                        loss=f"{loss:.3f}", acc=f"{correct / bs:.3f}", sps=f"{rate:.1f}"
                    )
                    log.log(
                        "train_step",
                        self.global_step,
                        loss=loss,
                        acc=correct / bs,
                        lr=self.step_lr,
                        **getattr(self.objective, "last", {}),  # each loss term, if it says
                    )
                    due = (every and self.global_step % every == 0) or (
                        minutes and time.perf_counter() - saved > 60 * minutes
                    )
                    if due and self.step_in_epoch < spe:
                        self._tick(t0)
                        t0 = saved = time.perf_counter()
                        self.save("last.pt")
                    if self._stop_requested(stop):
                        self._tick(t0)
                        self.save("last.pt")
                        bar.close()
                        raise self._interrupted(stop.signum)
                bar.close()
                self._tick(t0)
                self._end_epoch(log, samples_per_s=done / (time.perf_counter() - start))
                saved = time.perf_counter()  # the epoch end wrote last.pt
        finally:
            stop.restore()
            log.close()
        if not ran:  # resumed at the end: the summary's test metrics are measured again
            # (every rank takes part in the evaluation, so this depends on state alone)
            self._write_test_metrics(self.evaluate(self.test_split))
        return self._summary()

    def _stop_requested(self, stop: _StopSignals) -> bool:
        """Whether SIGINT/SIGTERM arrived, agreed by every rank (all stop at one step)."""
        flag = stop.signum
        if self.world.size > 1:
            flag = int(all_sum([float(flag)])[0] > 0) * (flag or signal.SIGTERM)
        stop.signum = flag
        return bool(flag)

    def _interrupted(self, signum: int) -> Interrupted:
        name = signal.Signals(signum).name
        how = f"pcdistill train --resume {self.out}"
        if type(self.cfg).__name__ == "DistillConfig":  # resumes through its run folder (all
            # stages); T3DNet's network-augmentation stage runs in RUN/netaug
            run = self.out.parent if self.out.name == "netaug" else self.out
            how = f"pcdistill distill --resume {run}"
        return Interrupted(
            f"{name}: stopped at epoch {self.epoch + 1} step {self.step_in_epoch}, checkpoint "
            f"{self.out / 'last.pt'} written; continue with: {how}",
            signum,
        )

    def _tick(self, since: float) -> None:
        self.elapsed += time.perf_counter() - since

    def _end_epoch(self, log: RunLog, samples_per_s: float) -> None:
        sums = self.epoch_sums
        record: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "train_loss": sums["loss"] / sums["seen"],
            "train_acc": sums["correct"] / sums["seen"],
        }
        improved = False
        if self.val_split is not None:
            val = self.evaluate(self.val_split)
            record.update(val_oa=val["oa"], val_macc=val["macc"])
            improved = self.best_val is None or val["oa"] > self.best_val
            if improved:
                self.best_val = val["oa"]
        test = self.evaluate(self.test_split)  # logged for curves; never used to select
        record.update(test_oa=test["oa"], test_macc=test["macc"], test_loss=test["loss"])
        log.log(
            "epoch", self.global_step, **record, elapsed=self.elapsed, samples_per_s=samples_per_s
        )
        log.info(
            " ".join(
                f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
            )
        )
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_sums = {"loss": 0.0, "correct": 0, "seen": 0}
        self.save("last.pt")
        if improved:
            self.save("best.pt")
        self._write_test_metrics(test)

    def _write_test_metrics(self, test: dict) -> None:
        if self.world.main:
            (self.out / "test_metrics_last.json").write_text(json.dumps(test, indent=1))

    def _summary(self) -> dict:
        # Every rank computed the same (gathered) test metrics; rank 0's file holds them.
        if not self.world.main:
            dist.barrier()
        test = json.loads((self.out / "test_metrics_last.json").read_text())
        summary = {
            "model": self.model_spec,
            "params": sum(p.numel() for p in self.model.parameters()),
            "epochs": self.cfg.train.epochs,
            "seed": self.cfg.seed,
            "wall_time_s": self.elapsed,
            "dataset_fingerprint": self.fingerprint,
            "test_last": {k: test[k] for k in ("oa", "macc", "loss", "num_samples")},
            "best_val_oa": self.best_val,
            "restarts": self.restarts,
        }
        if self.world.main:
            (self.out / "summary.json").write_text(json.dumps(summary, indent=1))
            if self.world.size > 1:
                dist.barrier()
        return summary


def point_augment(cfg: RunConfig) -> PointAugment | None:
    parts: list = []
    if cfg.data.dropout > 0:
        parts.append(RandomDropout(cfg.data.dropout))
    if cfg.data.jitter > 0:
        parts.append(Jitter(sigma=cfg.data.jitter, clip=5 * cfg.data.jitter))
    if cfg.data.shuffle:
        parts.append(Shuffle())
    return PointAugment(parts) if parts else None


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from; they will be redone."""
    if not path.is_file():
        return
    keep = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line)["step"] <= step
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    tmp.replace(path)


class _StopSignals:
    """SIGINT / SIGTERM during `fit` only record that a stop was asked for; the loop then
    checkpoints the step it just finished (exactly what a mid-epoch checkpoint holds, so
    resuming is bit-identical) and raises `Interrupted`. Outside the main thread (where
    Python cannot take signals) nothing is installed."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum = 0
        self.previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum:  # a second Ctrl-C: stop now, without the checkpoint
            raise KeyboardInterrupt
        self.signum = signum

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
