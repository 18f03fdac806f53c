"""`pcdistill report`: a Markdown page with PNG plots for one or more runs.

Reads only what a run folder holds (metrics.jsonl, summary.json, config.yaml,
test_metrics_last.json), so it works on finished, killed or copied runs alike.
Finished runs whose configs differ only in `seed` (and `out`) are one method run over
several seeds: the report gives their mean ± sample standard deviation, as a table and
an error-bar plot, and one point with an error bar in the accuracy-vs-size plot.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from pcdistill.engine.runlog import read_metrics
from pcdistill.errors import ConfigError


def _load_run(run_dir: Path) -> dict:
    if not (run_dir / "metrics.jsonl").is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no metrics.jsonl)")
    run = {"dir": run_dir, "name": run_dir.name, "events": read_metrics(run_dir)}
    for key, file in (("summary", "summary.json"), ("test", "test_metrics_last.json")):
        path = run_dir / file
        run[key] = json.loads(path.read_text()) if path.is_file() else None
    config = run_dir / "config.yaml"
    run["config"] = yaml.safe_load(config.read_text()) if config.is_file() else None
    return run


def seed_groups(runs: list[dict]) -> list[tuple[str, list[dict]]]:
    """Finished runs grouped by their config without `seed` and `out`, in first-seen
    order, each named after its runs' common folder name (a `_seed<N>` suffix dropped).
    A run without a config.yaml is a group of its own."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        if run["summary"] is None:
            continue
        if run["config"] is None:
            key = f"dir:{run['dir']}"
        else:
            rest = {k: v for k, v in run["config"].items() if k not in ("seed", "out")}
            key = json.dumps(rest, sort_keys=True, default=str)
        groups.setdefault(key, []).append(run)
    return [(_group_name(members), members) for members in groups.values()]


def _group_name(members: list[dict]) -> str:
    if len(members) == 1:
        return members[0]["name"]
    names = sorted({re.sub(r"_seed\d+$", "", run["name"]) for run in members}, key=len)
    return names[0]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for one value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def write_report(
    run_dirs: list[str | Path],
    out: str | Path,
    others: Sequence[tuple[str, int, float]] = (),
) -> Path:
    """Write out/report.md with curves, confusion matrices and accuracy vs parameters.

    `others` are models without a run folder here, as (name, params, test OA) measured
    on the same test split (e.g. a shipped teacher): rows of the table and points of
    the accuracy plot."""
    try:
        import matplotlib
    except ImportError:
        msg = "pcdistill report needs matplotlib: pip install 'pcdistill[viz]'"
        raise ConfigError(msg) from None

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [_load_run(Path(d)) for d in run_dirs]
    for name in ("curves.png", "accuracy_vs_params.png", "seeds.png",
                 *out.glob("confusion_*.png")):  # fmt: skip
        Path(out / name).unlink(missing_ok=True)  # an earlier report's plots, not this one's
    md = ["# pcdistill report", ""]

    _plot_curves(runs, out / "curves.png", plt)
    md += ["## Training curves", "", "![curves](curves.png)", ""]

    md += [
        "## Results",
        "",
        "| run | model | params | epochs | wall time (s) | test OA | test mAcc |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    points: list[tuple[int, float, float, str]] = []  # params, OA, OA std, label
    for run in runs:
        s = run["summary"]
        if s is None:  # in flight or stopped: where it stands, never a final number
            epochs = [e for e in run["events"] if e["event"] == "epoch"]
            if not epochs:
                md.append(f"| {run['name']} | (unfinished, no epoch yet) | | | | | |")
                continue
            e = epochs[-1]
            oa, macc = e["test_oa"], e["test_macc"]
            md.append(f"| {run['name']} | (unfinished) | | {e['epoch']} so far | "
                      f"{e['elapsed']:.0f} | {oa:.4f} | {macc:.4f} |")  # fmt: skip
            continue
        name = f"{s['model']['name']} x{s['model']['width']:g}"
        oa, macc = s["test_last"]["oa"], s["test_last"]["macc"]
        md.append(f"| {run['name']} | {name} | {s['params']:,} | {s['epochs']} | "
                  f"{s['wall_time_s']:.0f} | {oa:.4f} | {macc:.4f} |")  # fmt: skip
    for name, params, oa in others:
        md.append(f"| {name} | (no run here) | {params:,} | | | {oa:.4f} | |")
        points.append((params, oa, 0.0, name))
    md.append("")

    groups = seed_groups(runs)
    for name, members in groups:
        oa, oa_std = mean_std([r["summary"]["test_last"]["oa"] for r in members])
        label = name if len(members) == 1 else f"{name} ({len(members)} seeds)"
        points.append((members[0]["summary"]["params"], oa, oa_std, label))
    if any(len(members) > 1 for _, members in groups):
        md += _seed_section(groups, out, plt)

    if points:
        # a legend, not labels beside the points: students of one size stack up in a column
        fig, ax = plt.subplots(figsize=(7, 4 + _legend_height(len(points), 2)))
        low, high = min(p for p, *_ in points), max(p for p, *_ in points)
        colours = _palette(plt, len(points))
        for i, (params, oa, std, name) in enumerate(points):
            ax.errorbar(params, oa, yerr=std or None, fmt="o", capsize=3,
                        color=colours(i % colours.N), label=f"{name}: {oa:.4f}")  # fmt: skip
        ax.set(xscale="log", xlabel="parameters", ylabel="test OA", title="accuracy vs size",
               xlim=(low / 2, high * 2), ylim=(0, 1))  # fmt: skip
        ax.grid(alpha=0.3, which="both")
        _legend_under(fig, *ax.get_legend_handles_labels(), ncol=2)
        fig.savefig(out / "accuracy_vs_params.png", dpi=110)
        plt.close(fig)
        md += ["## Accuracy vs parameters", "", "![size](accuracy_vs_params.png)", ""]

    for run in runs:
        if run["test"] is None:
            continue
        cm = np.asarray(run["test"]["confusion"], dtype=float)
        names = list(run["test"]["per_class"])
        rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        fig, ax = plt.subplots(figsize=(9, 8))
        im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
        ax.set_yticks(range(len(names)), names, fontsize=6)
        ax.set(
            xlabel="predicted", ylabel="true", title=f"{run['name']}: confusion (row-normalised)"
        )
        fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        png = f"confusion_{run['name']}.png"
        fig.savefig(out / png, dpi=110)
        plt.close(fig)
        md += [f"## Confusion matrix: {run['name']}", "", f"![confusion]({png})", ""]

    path = out / "report.md"
    path.write_text("\n".join(md))
    return path


def epoch_curve(
    members: list[dict], key: str
) -> tuple[list[int], list[float], list[float], list[float]]:
    """One metric per epoch over a group of runs: the epochs every run has it for, and
    the runs' mean, min and max there (one run: its own values three times)."""
    per_run = [{e["epoch"]: e[key] for e in run["events"] if e["event"] == "epoch" and key in e}
               for run in members]  # fmt: skip
    epochs = sorted(set.intersection(*(set(values) for values in per_run)))
    if not epochs:
        return [], [], [], []
    rows = np.array([[values[e] for e in epochs] for values in per_run], dtype=float)
    return epochs, rows.mean(0).tolist(), rows.min(0).tolist(), rows.max(0).tolist()


def _plot_curves(runs: list[dict], path: Path, plt) -> None:
    """curves.png: one colour per method, runs differing only in seed drawn as their mean
    with the seeds' range shaded (23 runs drawn one by one were unreadable), unfinished
    runs one by one; the legend goes under the plots."""
    curves = seed_groups(runs) + [(run["name"], [run]) for run in runs if run["summary"] is None]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4 + _legend_height(len(curves), 3)))
    colours = _palette(plt, len(curves))
    # a distillation run's training loss is its whole objective (KD terms x tau^2),
    # not the cross-entropy the test loss is
    lines = ((ax_loss, "train_loss", "-"), (ax_loss, "test_loss", "--"),
             (ax_acc, "test_oa", "-"), (ax_acc, "val_oa", ":"))  # fmt: skip
    for i, (name, members) in enumerate(curves):
        colour = colours(i % colours.N)
        label = name if len(members) == 1 else f"{name} ({len(members)} seeds)"
        for ax, key, style in lines:
            x, mean, low, high = epoch_curve(members, key)
            if not x:
                continue
            ax.plot(x, mean, style, color=colour, label=label if key == "test_oa" else None)
            if len(members) > 1:
                ax.fill_between(x, low, high, color=colour, alpha=0.15, linewidth=0)
    ax_loss.set(xlabel="epoch", ylabel="loss",
                title="training objective (solid), test cross-entropy (dashed)")  # fmt: skip
    ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1),
               title="test OA (solid), val OA (dotted); shaded: range over seeds")  # fmt: skip
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    _legend_under(fig, *ax_acc.get_legend_handles_labels(), ncol=3)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _palette(plt, count: int):
    """A colour map with a distinct colour for each of count entries (up to 20)."""
    return plt.get_cmap("tab10" if count <= 10 else "tab20")


def _legend_height(entries: int, ncol: int) -> float:
    """Inches a legend of `entries` in `ncol` columns takes under the plots."""
    return 0.2 * -(-entries // ncol)


def _legend_under(fig, handles: list, labels: list, ncol: int) -> None:
    """The figure's legend under its plots, in the room `_legend_height` added."""
    room = (_legend_height(len(labels), ncol) + 0.3) / fig.get_figheight()
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, room, 1, 1))


def _seed_section(groups: list[tuple[str, list[dict]]], out: Path, plt) -> list[str]:
    """The across-seeds table and seeds.png: per group, last-epoch test OA and mAcc as
    mean ± sample std, each seed a dot beside its group's error bar."""
    md = [
        "## Across seeds",
        "",
        "Last-epoch test OA and mAcc, mean ± sample standard deviation over the seeds.",
        "",
        "| method | seeds | test OA | test mAcc | wall time (s, mean) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(groups) + 1.5))
    for row, (name, members) in enumerate(groups):
        oas = [r["summary"]["test_last"]["oa"] for r in members]
        maccs = [r["summary"]["test_last"]["macc"] for r in members]
        (oa, oa_std), (macc, macc_std) = mean_std(oas), mean_std(maccs)
        wall = statistics.mean(r["summary"]["wall_time_s"] for r in members)
        seeds = ", ".join(str(r["summary"].get("seed", "?")) for r in members)
        if len(members) > 1:
            oa_text, macc_text = f"{oa:.4f} ± {oa_std:.4f}", f"{macc:.4f} ± {macc_std:.4f}"
        else:  # no spread from one seed
            oa_text, macc_text = f"{oa:.4f} (1 seed)", f"{macc:.4f} (1 seed)"
        md.append(f"| {name} | {len(members)} ({seeds}) | {oa_text} | {macc_text} | "
                  f"{wall:.0f} |")  # fmt: skip
        ax.errorbar(oa, row, xerr=oa_std, fmt="o", color="C0", capsize=4)
        ax.scatter(oas, [row + 0.15] * len(oas), s=10, color="C1")
    ax.set_yticks(range(len(groups)), [name for name, _ in groups], fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="last-epoch test OA (mean ± std; dots: seeds)", title="across seeds")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(out / "seeds.png", dpi=110)
    plt.close(fig)
    return [*md, "", "![seeds](seeds.png)", ""]
