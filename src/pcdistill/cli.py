"""The `pcdistill` command.

Each subcommand is a small function taking parsed arguments. User-facing errors
(`PcdistillError`) become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pcdistill import __version__
from pcdistill.atomic import check_output, check_output_dir
from pcdistill.errors import ConfigError, DataError, Interrupted, PcdistillError

if TYPE_CHECKING:
    from pcdistill.data import PointCloudSet


def _cmd_models(args: argparse.Namespace) -> int:
    """List the model zoo with parameter counts at the requested width, then shipped weights."""
    from pcdistill.models import create_model, list_models, pretrained

    print(f"{'model':<16} {'width':>6} {'params':>12}")
    for name in list_models():
        model = create_model(name, num_classes=args.num_classes, width=args.width)
        params = sum(p.numel() for p in model.parameters())
        print(f"{name:<16} {args.width:>6g} {params:>12,}")
    shipped = pretrained.manifest()
    print(f"\nshipped weights ({len(shipped)}; create_model(name, width=..., pretrained=TAG), "
          "or the key wherever a checkpoint is asked for):")  # fmt: skip
    if shipped:
        print(f"{'key':<36} {'params':>10} {'dtype':>8} {'epochs':>6} {'test OA':>8} {'mAcc':>7}")
    for key, e in sorted(shipped.items()):
        print(f"{key:<36} {e['params']:>10,} {e['dtype']:>8} {e['epochs']:>6} "
              f"{e['test']['oa']:>8.4f} {e['test']['macc']:>7.4f}")  # fmt: skip
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    """Every config key with its type, default and meaning (train's, or distill's)."""
    from pcdistill.distill.config import DistillConfig
    from pcdistill.engine.config import RunConfig, describe_keys

    rows = describe_keys(DistillConfig if args.distill else RunConfig)
    width = max(len(r["key"]) for r in rows)
    print(f"{'key':<{width}}  {'default':<24}  {'type':<22}  meaning")
    for r in rows:
        default = r["default"] if len(r["default"]) <= 24 else r["default"][:21] + "..."
        print(f"{r['key']:<{width}}  {default:<24}  {r['type']:<22}  {r['meaning']}")
    return 0


def _run_config(args: argparse.Namespace, schema):
    """The config of a new run (--config + overrides) or of the run to resume."""
    from pcdistill.engine.config import load_config, validate_config

    if args.resume:
        extend = [o for o in args.overrides if o.partition("=")[0].strip() == "train.epochs"]
        if args.config or len(extend) != len(args.overrides):
            raise ConfigError("--resume takes the run's own config; drop --config and every "
                              "override but train.epochs=N (to extend the run)")  # fmt: skip
        if Path(args.resume).is_file():  # a snapshot or checkpoint carries its config
            from pcdistill.engine.checkpoint import load_checkpoint

            tree = load_checkpoint(args.resume)["config"]
            cfg = validate_config(tree, schema, args.resume)
        else:
            cfg = load_config(Path(args.resume) / "config.yaml", schema=schema)
        for item in extend:  # the schedule is then laid out over the new number of epochs
            cfg.train.epochs = load_config(None, [item]).train.epochs
        return cfg
    return load_config(args.config, args.overrides, schema=schema)


def _resume_from(args: argparse.Namespace) -> bool | Path:
    """What `Trainer.fit(resume=...)` takes: a file to start from, True for the run folder."""
    return Path(args.resume) if args.resume and Path(args.resume).is_file() else bool(args.resume)


def _print_summary(cfg, summary: dict) -> None:
    test = summary["test_last"]
    print(
        f"{cfg.model.name} width {cfg.model.width:g}: test OA {test['oa']:.4f}, "
        f"mAcc {test['macc']:.4f} after {summary['epochs']} epochs "
        f"({summary['wall_time_s']:.0f} s) -> {cfg.out}"
    )


def _cmd_train(args: argparse.Namespace) -> int:
    """Train a zoo model from a YAML config with key=value overrides, or resume a run."""
    from pcdistill.engine.config import RunConfig
    from pcdistill.engine.run import build_trainer

    cfg = _run_config(args, RunConfig)
    check_output_dir(cfg.out, "out")
    _print_summary(cfg, build_trainer(cfg, quiet=args.quiet).fit(resume=_resume_from(args)))
    return 0


def _cmd_distill(args: argparse.Namespace) -> int:
    """Distil a student as a run config composes it (terms, records, netaug stage)."""
    from pcdistill.distill.config import DistillConfig
    from pcdistill.distill.run import run_distill

    if isinstance(_resume_from(args), Path):
        raise ConfigError(
            f"--resume {args.resume}: a distillation run resumes from its run folder "
            "(every stage), not from one file"
        )
    cfg = _run_config(args, DistillConfig)
    check_output_dir(cfg.out, "out")
    _print_summary(cfg, run_distill(cfg, quiet=args.quiet, resume=bool(args.resume)))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a checkpoint on a dataset split (its own data settings by default)."""
    from pcdistill.engine.device import pick_device
    from pcdistill.engine.evaluate import evaluate_set
    from pcdistill.engine.run import checkpoint_and_data
    from pcdistill.transforms import ShapeAugment

    if args.json:
        check_output(args.json, "--json", (".json",))
    model, _, cfg, data = checkpoint_and_data(args.checkpoint, args.split, args.data)
    aug = ShapeAugment.from_spec(cfg.data.shape_augment)
    metrics = evaluate_set(model, data, pick_device(args.device), batch_size=args.batch_size,
                           vote=args.vote, vote_aug=aug, seed=cfg.seed)  # fmt: skip
    print(
        f"{args.checkpoint}: {args.split} OA {metrics['oa']:.4f}, mAcc {metrics['macc']:.4f} "
        f"on {metrics['num_samples']} shapes (vote {args.vote})"
    )
    if args.per_class:
        for name, acc in metrics["per_class"].items():
            print(f"  {name:<16} {'-' if acc is None else f'{acc:.4f}'}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(metrics, indent=1))
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    """Inspect a dataset: shapes and points per class, and its fingerprint."""
    opts = {"num_points": args.num_points, "classes": args.classes}
    if args.columns:
        opts["columns"] = ",".join(args.columns)
    for split in args.split:
        data = _shown_set(args.root, split, args.format, opts)
        print(
            f"{data.name}: {len(data)} shapes, {data.num_classes} classes, "
            f"{data.num_points} points per shape, normals: {data.normals is not None}"
        )
        print(f"  fingerprint {data.fingerprint()}")
        for name, count in data.class_counts().items():
            print(f"  {name:<16} {count:>6}")
    return 0


def _shown_set(root: str, split: str, fmt: str, opts: dict) -> PointCloudSet:
    """A split with its normals when every shape has them (readers refuse normals=True
    otherwise), so `data` says whether the files hold normals."""
    from pcdistill.data import builtin_dataset, load_dataset

    def read(normals: bool):
        if root == "builtin":
            return builtin_dataset(split, normals=normals, **opts)
        return load_dataset(root, split, format=fmt, normals=normals, **opts)

    try:
        return read(True)
    except DataError:
        return read(False)  # no normals, or another error, which this read raises again


def _cmd_record(args: argparse.Namespace) -> int:
    """Record a teacher's logits on K shape-augmented copies of every training sample."""
    import torch

    from pcdistill.engine.device import pick_device
    from pcdistill.engine.run import checkpoint_and_data
    from pcdistill.records.record import record_teacher
    from pcdistill.transforms import ShapeAugment, default_shape_augment

    check_output_dir(args.out, "--out")
    shard, num_shards = args.shard, args.num_shards
    if shard >= num_shards:
        raise ConfigError(f"--shard {shard} must be below --num-shards {num_shards}")
    device = pick_device(args.device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:  # under torchrun: rank r writes shard r of WORLD_SIZE
        if (shard, num_shards) != (0, 1):
            raise ConfigError(
                "under torchrun each rank records its own shard; drop --shard/--num-shards"
            )
        shard, num_shards = int(os.environ["RANK"]), world_size
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    aug = default_shape_augment(rotate=args.rotate)  # about z: every dataset is read z up
    if args.augment:  # checked before the teacher and data are loaded
        try:
            spec = json.loads(args.augment)
        except json.JSONDecodeError as err:
            raise ConfigError(f"--augment {args.augment!r} is not valid JSON ({err})") from None
        aug = ShapeAugment.from_spec(spec)
    teacher, ckpt, _, data = checkpoint_and_data(args.teacher, "train", args.data)
    path = record_teacher(
        teacher, ckpt["model"], data, aug, args.copies, args.out, seed=args.seed,
        batch_size=args.batch_size, shard=shard, num_shards=num_shards,
        features=args.features, device=device, progress=sys.stderr.isatty(),
        rows_per_chunk=args.chunk_rows,
    )  # fmt: skip
    size = path.stat().st_size
    copies = len(data) * args.copies / num_shards
    print(f"{path}: {copies:.0f} copies, {size:,} bytes ({size / copies:.1f} bytes per copy)")
    return 0


def _cmd_compress(args: argparse.Namespace) -> int:
    """The whole path for a dataset: teacher, records, tiny student, ONNX, int8, report."""
    from pcdistill.compress import compress

    check_output_dir(args.out, "--out")
    compress(args.data, args.out, teacher=args.teacher, recipe=args.recipe,
             teacher_model=args.teacher_model, teacher_width=args.teacher_width,
             teacher_epochs=args.teacher_epochs, epochs=args.epochs,
             num_points=args.num_points, copies=args.copies, seed=args.seed,
             threads=args.threads, batch_size=args.batch_size, overrides=args.overrides,
             quiet=args.quiet)  # fmt: skip
    print(f"-> {args.out}/summary.md, {args.out}/student.onnx, {args.out}/report/report.md")
    return 0


def _cmd_snapshot(args: argparse.Namespace) -> int:
    """A run's progress without optimizer state, small enough to keep; resumable as a restart."""
    from pcdistill.engine.checkpoint import write_snapshot

    check_output(args.out, "snapshot FILE", (".pt",))
    snap = write_snapshot(args.run, args.out)
    size = Path(args.out).stat().st_size
    print(
        f"{args.out}: epoch {snap['epoch']} step {snap['step_in_epoch']} of {args.run}, "
        f"{size:,} bytes; continue with: pcdistill train --resume {args.out} "
        "(a warm restart: the optimizer state starts afresh)"
    )
    return 0


def _cmd_ship(args: argparse.Namespace) -> int:
    """Add a trained checkpoint to the shipped weights, with its accuracy measured here."""
    from pcdistill.deploy.ship import ship_checkpoint

    if args.into:
        check_output_dir(args.into, "--into")
    row = ship_checkpoint(args.checkpoint, args.tag, args.command,
                          Path(args.into) if args.into else None, args.notes)  # fmt: skip
    t, t32 = row["test"], row["test_float32"]
    print(
        f"{row['key']}: {row['file']} ({row['dtype']}, {row['bytes']:,} bytes, sha256 "
        f"{row['sha256'][:12]}...): test OA {t['oa']:.4f} mAcc {t['macc']:.4f} "
        f"(float32: {t32['oa']:.4f} / {t32['macc']:.4f}), built-in test OA "
        f"{row['builtin_test']['oa']:.4f}"
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """The quickstart: teacher, tiny student by KD, side-by-side table."""
    from pcdistill.demo import run_demo

    check_output_dir(args.out, "--out")
    run_demo(Path(args.out), data=args.data, teacher_epochs=args.teacher_epochs,
             student_epochs=args.student_epochs, seed=args.seed, quiet=args.quiet)  # fmt: skip
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    """Markdown report with PNG plots for one or more run folders."""
    from pcdistill.report import write_report

    check_output_dir(args.out, "--out")
    print(write_report(args.runs, args.out))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """Export a checkpoint to ONNX (sampling and grouping in the graph), parity-checked."""
    from pcdistill.deploy.export import export_onnx

    parity = export_onnx(args.checkpoint, args.out, data=args.data, samples=args.samples,
                         force=args.force)  # fmt: skip
    print(
        f"{args.out}: parity on {parity.samples} test shapes: max |logit difference| "
        f"{parity.max_abs_diff:.2e} (logits up to {parity.logit_scale:.3g}), "
        f"predicted class agrees on {parity.agreement:.1%}"
    )
    return 0


def _columns(spec: str) -> tuple[str, ...]:
    """--columns: a table's column names (`fileio.parse_columns`)."""
    from pcdistill.data.fileio import parse_columns

    try:
        return parse_columns(spec)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _cmd_predict(args: argparse.Namespace) -> int:
    """Top-k classes of point-cloud or mesh files, with a checkpoint or an ONNX file."""
    from pcdistill.deploy.predict import (
        plot_predictions,
        predict_files,
        write_predictions,
    )

    for option, path, suffixes in (("--png", args.png, (".png",)),
                                   ("--out", args.out, (".json", ".csv"))):  # fmt: skip
        if path:
            check_output(path, option, suffixes)
    preds = predict_files(args.files, args.model, top_k=args.top_k, num_points=args.num_points,
                          sampling=args.sampling, up_axis=args.up_axis,
                          columns=args.columns)  # fmt: skip
    for pred in preds:
        if pred.error:
            print(f"pcdistill: error: {pred.error}", file=sys.stderr)
            continue
        print(pred.path)
        for rank, (name, prob) in enumerate(pred.top, start=1):
            print(f"  {rank}. {name:<16} {prob:.4f}")
    if args.out:
        print(f"predictions: {write_predictions(preds, args.out)}")
    if args.png:
        print(f"plot: {plot_predictions(preds, args.png)}")
    failed = sum(p.error is not None for p in preds)
    if failed:
        print(f"pcdistill: {failed} of {len(preds)} files could not be read", file=sys.stderr)
        return 1
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    """int8 ONNX graph of a checkpoint, with accuracy and latency against float."""
    from pcdistill.deploy.quantize import quantize_checkpoint

    r = quantize_checkpoint(args.checkpoint, args.out, mode=args.mode, data=args.data,
                            calibration=args.calibration, samples=args.samples,
                            force=args.force)  # fmt: skip
    ops = ", ".join(f"{n} {op}" for op, n in sorted(r.quantized.items())) or "nothing"
    change = r.int8_acc - r.float_acc
    print(f"{args.out}: {args.mode} int8, quantized {ops} (float graph: {r.float_ops})")
    print(
        f"  accuracy on {r.samples} test shapes: float {r.float_acc:.4f} -> int8 "
        f"{r.int8_acc:.4f} ({change:+.4f}); same class as float on {r.agreement:.1%}"
    )
    print(
        f"  batch-1 latency (median, {r.threads} threads): float {r.float_ms:.1f} ms -> "
        f"int8 {r.int8_ms:.1f} ms; file {r.float_bytes:,} -> {r.int8_bytes:,} bytes"
    )
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    """Size and speed of checkpoints or zoo models side by side: PyTorch, ONNX, int8."""
    from pcdistill.deploy.profile import RUNTIMES, matmul_gflops, profile_models

    runtimes = ("torch",) if args.torch_only else RUNTIMES
    opts = {"width": args.width, "num_points": args.num_points, "threads": args.threads}
    rows = profile_models(args.models, repeats=args.repeats, runtimes=runtimes, **opts)
    print(
        f"{args.threads} thread(s); latency ms, median / p90 of {args.repeats} runs after 2 "
        "warm-up; FLOPs: convolutions and matmuls only (not sampling or grouping); peak MB: "
        "resident memory growth while running, in a fresh process"
    )
    print(
        f"{'model':<22} {'runtime':<7} {'points':>6} {'params':>10} {'MFLOPs':>8} {'file MB':>8} "
        f"{'batch 1':>13} {'batch 32':>15} {'samples/s':>9} {'peak MB':>8}"
    )
    for r in rows:
        print(
            f"{r['model']:<22} {r['runtime']:<7} {r['num_points']:>6} {r['params']:>10,} "
            f"{r['flops'] / 1e6:>8.1f} {r['file_bytes'] / 2**20:>8.2f} "
            f"{r['b1_median_ms']:>6.1f} / {r['b1_p90_ms']:<4.1f} "
            f"{r['b32_median_ms']:>7.0f} / {r['b32_p90_ms']:<5.0f} "
            f"{r['throughput']:>9.1f} {r['peak_mb']:>8.1f}"
        )
    gflops = matmul_gflops(args.threads)
    print(
        f"\nmatmul throughput: {gflops:.1f} GFLOP/s (float32 1024x1024 torch.mm, "
        f"{args.threads} thread(s)); FLOP bound = MFLOPs / throughput, per sample"
    )
    for r in rows:
        bound = r["flops"] / (gflops * 1e9) * 1e3
        per_sample = r["b32_median_ms"] / 32
        print(
            f"{r['model']:<22} {r['runtime']:<7} FLOP bound {bound:.3f} ms; measured "
            f"batch 1 {r['b1_median_ms']:.1f} ms ({r['b1_median_ms'] / bound:.0f}x), "
            f"batch 32 {per_sample:.2f} ms/sample ({per_sample / bound:.0f}x)"
        )
    return 0


# `pcdistill.data.load.READERS` (not imported here: the parser is built on every call)
DATA_FORMATS = ["auto", "modelnet_h5", "modelnet_resampled", "scanobjectnn", "folders"]


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (no usage block), exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"pcdistill: error: {message} (see {self.prog} --help)\n")


def _int_at_least(low: int):
    """An argparse type: an integer >= low, refused with the value named."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def _device(text: str) -> str:
    """An argparse type: auto, cpu, mps, cuda or cuda:N (as train.device)."""
    if text in ("auto", "cpu", "mps", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"must be auto, cpu, mps, cuda or cuda:N, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pcdistill",
        description="Compress point-cloud classifiers into tiny models by knowledge distillation.",
    )
    parser.add_argument("--version", action="version", version=f"pcdistill {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("models", help="list the model zoo with parameter counts")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier (default 1)")
    p.add_argument("--num-classes", type=int, default=40, help="number of classes (default 40)")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("config", help="every config key: type, default, meaning")
    p.add_argument("--distill", action="store_true",
                   help="the distill schema: teacher, records, loss terms, netaug")  # fmt: skip
    p.set_defaults(func=_cmd_config)

    for name, func, what, folder, example in (
        ("train", _cmd_train, "train a model", "configs/", "optim.lr=0.01"),
        ("distill", _cmd_distill, "distil a student", "configs/distill/", "loss.kd.alpha=0.5"),
    ):
        p = sub.add_parser(name, help=f"{what} from a YAML config (see {folder})")
        p.add_argument("--config", help=f"YAML run config (see {folder})")
        p.add_argument(
            "--resume", metavar="RUN_DIR", help="continue the run saved in RUN_DIR"
            + (" (or warm-restart from a SNAPSHOT file)" if name == "train" else ""),
        )  # fmt: skip
        p.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"e.g. {example}")
        p.set_defaults(func=func)

    p = sub.add_parser("eval", help="evaluate a checkpoint")
    p.add_argument("checkpoint", help="a .pt checkpoint written by train")
    p.add_argument("--data", help="dataset root or 'builtin' (default: the run's own)")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument(
        "--vote", type=_int_at_least(0), default=0, help="extra augmented copies to average"
    )
    p.add_argument(
        "--batch-size", type=_int_at_least(1), default=64, help="clouds per batch (default 64)"
    )
    p.add_argument("--device", type=_device, default="auto", help="auto, cpu, mps, cuda[:N]")
    p.add_argument("--per-class", action="store_true", help="print per-class accuracy")
    p.add_argument("--json", help="write all metrics (confusion matrix too) to this file")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("data", help="inspect a dataset: counts per class, points, fingerprint")
    p.add_argument("root", help="dataset root, a ScanObjectNN .h5 file, or 'builtin'")
    p.add_argument(
        "--split",
        nargs="+",
        default=["train", "test"],
        choices=["train", "test"],
        help="splits to show (default both)",
    )
    p.add_argument(
        "--format",
        default="auto",
        choices=DATA_FORMATS,
        help="dataset format (default: auto, by its marker files)",
    )
    p.add_argument(
        "--num-points",
        type=_int_at_least(1),
        help="bring every shape to this many points (default: as stored)",
    )
    p.add_argument("--classes", help="'modelnet10' to keep the ModelNet10 classes")
    p.add_argument(
        "--columns", type=_columns, help="class folders' table columns, as predict --columns"
    )
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("record", help="record a teacher on K augmented copies (offline KD)")
    p.add_argument("--teacher", required=True, help="teacher checkpoint (.pt)")
    p.add_argument(
        "--copies", type=_int_at_least(1), default=10, help="K copies per training sample"
    )
    p.add_argument("--out", required=True, help="folder for the record shards")
    p.add_argument("--data", help="dataset root (default: the teacher run's own)")
    p.add_argument("--rotate", action="store_true", help="also rotate about the up axis")
    p.add_argument("--augment", help="shape augmentation spec as JSON (overrides the default)")
    p.add_argument("--features", action="store_true", help="also store the global feature")
    p.add_argument(
        "--seed", type=_int_at_least(0), default=0, help="seed of the augmented copies (default 0)"
    )
    p.add_argument(
        "--batch-size",
        type=_int_at_least(1),
        default=64,
        help="clouds per teacher batch (default 64)",
    )
    p.add_argument("--shard", type=_int_at_least(0), default=0, help="this worker's shard index")
    p.add_argument("--num-shards", type=_int_at_least(1), default=1, help="shards in all")
    p.add_argument(
        "--chunk-rows", type=_int_at_least(1), default=8192,
        help="rows per chunk written to OUT/records-...h5.partial/ (memory held; what a kill "
        "loses; a resume must use the same value; default 8192)",
    )  # fmt: skip
    p.add_argument("--device", type=_device, default="auto", help="auto, cpu, mps, cuda[:N]")
    p.set_defaults(func=_cmd_record)

    from pcdistill.compress import RECIPES

    p = sub.add_parser("compress", help="dataset -> teacher -> tiny student -> ONNX/int8 + report")
    p.add_argument("--data", required=True, help="dataset root (any supported format)")
    p.add_argument("--out", required=True, help="run folder; rerun the command to continue it")
    p.add_argument("--teacher", help="teacher checkpoint or shipped key (default: train one)")
    p.add_argument("--recipe", default="t3dnet", choices=RECIPES, help="configs/distill/ recipe")
    p.add_argument("--teacher-model", default="pointnet2_ssg", help="zoo model to train")
    p.add_argument(
        "--teacher-width",
        type=float,
        default=1.0,
        help="width of a teacher trained here (default 1.0)",
    )
    p.add_argument(
        "--teacher-epochs",
        type=_int_at_least(1),
        default=30,
        help="epochs of a teacher trained here (default 30)",
    )
    p.add_argument("--epochs", type=_int_at_least(1), help="student epochs (default: recipe's)")
    p.add_argument(
        "--num-points", type=_int_at_least(1), default=1024, help="points per shape (default 1024)"
    )
    p.add_argument("--copies", type=_int_at_least(1), default=10, help="records per shape (K)")
    p.add_argument(
        "--seed", type=_int_at_least(0), default=0, help="seed of every stage (default 0)"
    )
    p.add_argument("--threads", type=_int_at_least(1), help="torch threads for training")
    p.add_argument("--batch-size", type=_int_at_least(1), help="teacher and student batch")
    p.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="student config overrides")
    p.set_defaults(func=_cmd_compress)

    p = sub.add_parser("snapshot", help="a run's weights and progress without optimizer state")
    p.add_argument("run", metavar="RUN_DIR", help="a run folder holding last.pt")
    p.add_argument("out", metavar="SNAPSHOT", help="the file to write")
    p.set_defaults(func=_cmd_snapshot)

    p = sub.add_parser("ship", help="add a trained checkpoint to the package's shipped weights")
    p.add_argument("checkpoint", help="a .pt checkpoint (its last epoch is what ships)")
    p.add_argument("--tag", required=True, help="what it was trained on, e.g. modelnet40")
    p.add_argument("--command", required=True, help="the exact command(s) that trained it")
    p.add_argument("--into", help="weights folder (default: the package's own)")
    p.add_argument("--notes", default="", help="anything a user should know about the run")
    p.set_defaults(func=_cmd_ship)

    p = sub.add_parser("demo", help="quickstart: train a teacher, distill a tiny student, compare")
    p.add_argument("--data", default="builtin", help="dataset root (default: built-in real data)")
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument(
        "--teacher-epochs", type=_int_at_least(1), default=8, help="teacher epochs (default 8)"
    )
    p.add_argument(
        "--student-epochs", type=_int_at_least(1), default=8, help="student epochs (default 8)"
    )
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of both runs (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("report", help="Markdown report with plots for run folders")
    p.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        help="run folders (each with metrics.jsonl) to report on",
    )
    p.add_argument("--out", default="report", help="output folder (default ./report)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("export", help="export a checkpoint to ONNX, checked against PyTorch")
    p.add_argument("checkpoint", help="a .pt checkpoint")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="output format (onnx)")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument(
        "--data",
        default="builtin",
        help="test shapes for the parity check: dataset root or 'builtin' (default)",
    )
    p.add_argument("--samples", type=int, help="test shapes to check (default: all)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("predict", help="classify point-cloud or mesh files")
    what = (".npy/.txt/.xyz/.pts/.pcd/.ply clouds, .off/.obj/.ply/.stl/.glb meshes, or "
            "folders of them")  # fmt: skip
    p.add_argument("files", nargs="+", metavar="FILE", help=what)
    p.add_argument("--model", required=True, help="a .pt checkpoint or an exported .onnx file")
    p.add_argument("--top-k", type=int, default=5, help="classes to print per file (default 5)")
    p.add_argument(
        "--num-points", type=_int_at_least(1), help="points per cloud (default: the model's)"
    )
    p.add_argument(
        "--sampling",
        choices=["first", "random", "fps"],
        help="how to pick the points (default: as the model was trained)",
    )
    p.add_argument("--png", help="also plot the clouds, titled with the top class, to this PNG")
    p.add_argument("--out", help="also write the predictions to this .json or .csv file")
    axis = "the files' up axis (default z; the resampled ModelNet40 .txt release is y up)"
    p.add_argument("--up-axis", default="z", choices=["x", "y", "z"], help=axis)
    p.add_argument(
        "--columns",
        type=_columns,
        help="the columns of .txt/.xyz/.pts/.npy tables, comma separated: x,y,z (required), "
        "nx,ny,nz (normals), any other name for a column to skip, e.g. x,y,z,i or "
        "x,y,z,r,g,b (default: 3 columns x,y,z; 6 x,y,z,nx,ny,nz if those are unit normals)",
    )
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("quantize", help="int8 ONNX graph, with its accuracy and latency change")
    p.add_argument("checkpoint", help="a .pt checkpoint")
    p.add_argument("--out", required=True, help="the int8 .onnx file to write")
    p.add_argument(
        "--mode",
        default="dynamic",
        choices=["dynamic", "static"],
        help="dynamic: int8 weights, activations quantised at run time; static: activations "
        "calibrated on training shapes (default dynamic)",
    )
    p.add_argument("--data", help="dataset root or 'builtin' (default: the checkpoint's own)")
    p.add_argument(
        "--calibration",
        type=int,
        default=64,
        help="training shapes to calibrate static mode on (default 64)",
    )
    p.add_argument("--samples", type=int, help="test shapes to compare on (default: all)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=_cmd_quantize)

    p = sub.add_parser("profile", help="size and speed side by side: PyTorch, ONNX, int8")
    p.add_argument("models", nargs="+", metavar="MODEL", help="a .pt checkpoint or a zoo name")
    p.add_argument("--width", type=float, default=1.0, help="width of zoo models (default 1)")
    p.add_argument(
        "--num-points", type=_int_at_least(1), default=1024, help="points for zoo models"
    )
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    p.add_argument("--repeats", type=int, default=10, help="timed runs per batch size")
    p.add_argument("--torch-only", action="store_true", help="skip the ONNX and int8 rows")
    p.set_defaults(func=_cmd_profile)
    return parser


def _is_override(arg: str) -> bool:
    return not arg.startswith("-") and "=" in arg


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        # KEY=VALUE overrides may also follow the flags (`train --quiet train.epochs=1`)
        if extra and hasattr(args, "overrides") and all(_is_override(e) for e in extra):
            args.overrides = [*args.overrides, *extra]
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as done:  # --help, --version, or a bad argument (status 2)
        return int(done.code or 0)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    from pcdistill.engine.device import tune_cpu_allocator

    tune_cpu_allocator()
    try:
        return func(args)
    except Interrupted as stop:  # the run checkpointed itself; say how to go on
        print(f"pcdistill: {stop}", file=sys.stderr)
        return 128 + stop.signum
    except PcdistillError as err:
        print(f"pcdistill: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pcdistill: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head`: stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
