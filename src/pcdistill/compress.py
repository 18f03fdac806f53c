"""`pcdistill compress`: from a dataset to a deployable tiny model, in one resumable command.

Each stage keeps its output in the run folder and is skipped when that output is
complete, and the training stages resume their own checkpoints exactly, so rerunning the
same command after a kill continues where it stopped and ends as an uninterrupted run:

    teacher/            trained first, unless --teacher names a checkpoint or a shipped key
    records/            the teacher on K augmented copies (recipes that read records)
    student/            the recipe (`configs/distill/<recipe>.yaml`) on this dataset
    student.onnx        parity-checked export;  student_int8.onnx: dynamic int8
    profile.json        params, FLOPs, size, latency in PyTorch / onnxruntime / int8
    report/, summary.md curves and the teacher-student table
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pcdistill.errors import ConfigError

CONFIGS = resources.files("pcdistill") / "configs"
RECIPES = sorted(p.name.removesuffix(".yaml") for p in (CONFIGS / "distill").iterdir()
                 if p.name.endswith(".yaml"))  # fmt: skip


def compress(
    data: str,
    out: str | Path,
    *,
    teacher: str | None = None,
    recipe: str = "t3dnet",
    teacher_model: str = "pointnet2_ssg",
    teacher_width: float = 1.0,
    teacher_epochs: int = 30,
    epochs: int | None = None,
    num_points: int = 1024,
    copies: int = 10,
    seed: int = 0,
    threads: int | None = None,
    batch_size: int | None = None,
    overrides: list[str] | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run (or continue) every stage into `out`; returns the summary rows."""
    if recipe not in RECIPES:
        raise ConfigError(f"unknown recipe {recipe!r}; recipes: {', '.join(RECIPES)}")
    out = Path(out)
    settings = {k: v for k, v in locals().items() if k not in ("out", "quiet")}
    _check_settings(out, settings)
    common = [f"data.root={data}", f"data.num_points={num_points}", f"seed={seed}"]
    common += [f"train.threads={threads}"] if threads else []
    common += [f"train.batch_size={batch_size}"] if batch_size else []

    teacher_ref = teacher or _train_teacher(
        out / "teacher", teacher_model, teacher_width, teacher_epochs, common, quiet
    )
    tree = yaml.safe_load((CONFIGS / "distill" / f"{recipe}.yaml").read_text())
    student = [f"out={out / 'student'}", *common, *_as_the_teacher_reads(teacher_ref, data)]
    student += [f"train.epochs={epochs}"] if epochs else []
    if "teacher" in tree:
        student.append(f"teacher={teacher_ref}")
    if "records" in tree:
        records = _record(teacher_ref, data, out / "records", copies, seed, quiet)
        student.append(f"records={records}")
    ckpt = _train_student(out / "student", recipe, student + list(overrides or []), quiet)
    return _deploy_and_report(out, teacher_ref, ckpt, data, threads or 1)


def _as_the_teacher_reads(teacher: str, data: str) -> list[str]:
    """Overrides that make the student read `data` as the teacher does (records hold the
    teacher's outputs on those clouds and are checked by their fingerprint): normalised
    when the teacher was trained on another dataset and normalises its inputs."""
    from pcdistill.engine.checkpoint import load_checkpoint
    from pcdistill.engine.run import data_config

    normalize = data_config(load_checkpoint(teacher), data).data.normalize
    return ["data.normalize=true"] if normalize else []


def _check_settings(out: Path, settings: dict) -> None:
    """A run folder continues only the command that started it."""
    path = out / "compress.json"
    if path.is_file():
        before = json.loads(path.read_text())
        differ = {k: (before.get(k), v) for k, v in settings.items() if before.get(k) != v}
        if differ:
            what = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in differ.items())
            raise ConfigError(f"{out} was started with other settings ({what}); rerun the "
                              "same command to continue it, or give another --out")  # fmt: skip
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=1) + "\n")


def _train_teacher(
    run: Path, name: str, width: float, epochs: int, common: list[str], quiet: bool
) -> str:
    from pcdistill.engine.config import load_config
    from pcdistill.engine.run import build_trainer

    if not (run / "summary.json").is_file():
        cfg = load_config(CONFIGS / "pointnet2_ssg.yaml", [
            f"out={run}", f"model.name={name}", f"model.width={width}",
            f"train.epochs={epochs}", "sched.name=cosine", *common,
        ])  # fmt: skip
        build_trainer(cfg, quiet=quiet).fit(resume=(run / "last.pt").is_file())
    return str(run / "last.pt")


def _record(teacher: str, data: str, dest: Path, copies: int, seed: int, quiet: bool) -> Path:
    """Record into a scratch folder and rename it when complete: `dest` is never partial.
    A recording killed part-way resumes there (`record_teacher` keeps its chunks)."""
    from pcdistill.engine.run import checkpoint_and_data
    from pcdistill.records.record import record_teacher
    from pcdistill.transforms import default_shape_augment

    if dest.is_dir():
        return dest
    partial = dest.with_name(dest.name + ".partial")
    if not (partial / "records-00000-of-00001.h5").is_file():
        model, ckpt, _, train = checkpoint_and_data(teacher, "train", data)
        record_teacher(model, ckpt["model"], train, default_shape_augment(), copies, partial,
                       seed=seed, progress=not quiet)  # fmt: skip
    partial.rename(dest)
    return dest


def _train_student(run: Path, recipe: str, overrides: list[str], quiet: bool) -> str:
    from pcdistill.distill.config import DistillConfig
    from pcdistill.distill.run import run_distill
    from pcdistill.engine.config import load_config

    if not (run / "summary.json").is_file():
        cfg = load_config(CONFIGS / "distill" / f"{recipe}.yaml", overrides, schema=DistillConfig)
        run_distill(cfg, quiet=quiet, resume=True)
    return str(run / "last.pt")


def _deploy_and_report(out: Path, teacher: str, student: str, data: str, threads: int) -> dict:
    from pcdistill.deploy.export import export_onnx
    from pcdistill.deploy.profile import profile_models
    from pcdistill.deploy.quantize import quantize_checkpoint
    from pcdistill.report import write_report

    if not (out / "student.onnx").is_file():
        export_onnx(student, out / "student.onnx", data=None)
    if not (out / "student_int8.onnx").is_file():
        report = quantize_checkpoint(student, out / "student_int8.onnx", data=None)
        (out / "int8.json").write_text(json.dumps(vars(report), indent=1) + "\n")
    shipped = _shipped_twin(student)
    sources = [teacher, student, *([shipped] if shipped else [])]
    if not (out / "profile.json").is_file():
        rows = profile_models(sources, threads=threads, repeats=10, batches=(1,))
        (out / "profile.json").write_text(json.dumps(rows, indent=1) + "\n")
    rows = json.loads((out / "profile.json").read_text())
    accuracy = {"teacher": _test_accuracy(teacher, out / "teacher", data),
                "student": _test_accuracy(student, out / "student", data)}  # fmt: skip
    if shipped and any(r["source"] == shipped for r in rows):
        accuracy["shipped student"] = _test_accuracy(shipped, out / "shipped", data)
    runs = [d for d in (out / "teacher", out / "student") if (d / "metrics.jsonl").is_file()]
    params = {r["source"]: r["params"] for r in rows}
    others = [(f"{role} ({source})", params[source], accuracy[role]["oa"])
              for role, source in (("teacher", teacher), ("shipped student", shipped))
              if role in accuracy and source in params
              and not (role == "teacher" and out / "teacher" in runs)]  # fmt: skip
    write_report(runs, out / "report", others)
    table = _table(rows, accuracy, threads)
    (out / "summary.md").write_text(table)
    int8 = json.loads((out / "int8.json").read_text())
    summary = {"profile": rows, "accuracy": accuracy, "int8": int8}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(table)
    return summary


def _shipped_twin(student: str) -> str | None:
    """The shipped, fully trained ModelNet40 entry of the student's architecture, when one
    ships and the student has its classes: the table shows what a full budget gives."""
    from pcdistill.engine.checkpoint import load_checkpoint
    from pcdistill.models import pretrained

    ckpt = load_checkpoint(student)
    spec = ckpt["model"]
    key = pretrained.entry_key(spec["name"], spec["width"], "modelnet40")
    entry = pretrained.manifest().get(key)
    same = entry is not None and list(entry["class_names"]) == list(ckpt["class_names"])
    return key if same else None


def _test_accuracy(ckpt: str, run: Path, data: str) -> dict[str, float]:
    """Last-epoch test OA / mAcc on `data`: the run's own summary, else measured now
    (a teacher given by path or shipped key, trained elsewhere)."""
    if (run / "summary.json").is_file():
        test = json.loads((run / "summary.json").read_text())["test_last"]
        return {"oa": test["oa"], "macc": test["macc"]}
    import torch

    from pcdistill.engine.evaluate import evaluate_set
    from pcdistill.engine.run import checkpoint_and_data

    model, _, _, test = checkpoint_and_data(ckpt, "test", data)
    m = evaluate_set(model, test, torch.device("cpu"))
    return {"oa": m["oa"], "macc": m["macc"]}


def _table(rows: list[dict], accuracy: dict, threads: int) -> str:
    by = {(r["source"], r["runtime"]): r for r in rows}
    sources = list(dict.fromkeys(r["source"] for r in rows))
    lines = [
        "| role | model | params | MFLOPs | test OA | test mAcc | batch-1 ms torch / onnx / "
        "int8 | file KB torch / onnx / int8 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    roles = ("teacher", "student", "shipped student")[: len(sources)]
    for role, source in zip(roles, sources, strict=True):
        r = {rt: by[(source, rt)] for rt in ("torch", "onnx", "int8")}
        acc = accuracy[role]
        ms = " / ".join(f"{r[rt]['b1_median_ms']:.1f}" for rt in r)
        kb = " / ".join(f"{r[rt]['file_bytes'] / 1024:.0f}" for rt in r)
        lines.append(f"| {role} | {r['torch']['model']} | {r['torch']['params']:,} | "
                     f"{r['torch']['flops'] / 1e6:.1f} | {acc['oa']:.4f} | {acc['macc']:.4f} | "
                     f"{ms} | {kb} |")  # fmt: skip
    lines += ["", f"Latency: median of 10 batch-1 calls, {threads} thread(s), sampling and "
              "grouping included; FLOPs: convolutions and matmuls only.", ""]  # fmt: skip
    return "\n".join(lines)
