"""Write a finished training run into BENCHMARKS.md: budget, per-epoch curve, final metrics.

    .venv/bin/python benchmarks/run_summary.py RUN_DIR --command "the command that trained it" \
        [--title "..."] [--write BENCHMARKS.md]

Every figure comes from the run folder (summary.json, metrics.jsonl, config.yaml,
best_eval.json if present), so nothing in the section is typed by hand.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path

import yaml

from train_step import cpu_model, emit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--command", required=True)
    parser.add_argument("--title", default=None)
    parser.add_argument("--write")
    args = parser.parse_args()

    run = args.run
    summary = json.loads((run / "summary.json").read_text())
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    epochs = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
              if r["event"] == "epoch"]  # fmt: skip
    m = summary["model"]
    title = args.title or f"Teacher run: {m['name']} x{m['width']:g} on ModelNet40"
    finished = datetime.datetime.fromtimestamp(
        (run / "metrics.jsonl").stat().st_mtime, datetime.timezone.utc
    )

    lines = [
        f"## {title}",
        "",
        f"- Command: `{args.command}`",
        f"- Machine: {cpu_model()}, {os.cpu_count()} logical CPUs (shared with other work "
        "during the run)",
        f"- Finished: {finished:%Y-%m-%d %H:%M} UTC",
        f"- Budget: {summary['epochs']} epochs, batch {cfg['train']['batch_size']}, "
        f"{cfg['optim']['name']} lr {cfg['optim']['lr']}, {cfg['sched']['name']} schedule, "
        f"seed {summary['seed']}; wall time {summary['wall_time_s'] / 60:.1f} min of training "
        "(evaluation excluded)",
        f"- Data: {cfg['data']['root']}, {cfg['data']['num_points']} points, "
        f"val_fraction {cfg['data']['val_fraction']} of the train split held out for picking "
        "best.pt (never the test split)",
        f"- Parameters: {summary['params']:,}",
        "",
        "| epoch | train loss | train acc | val OA | test OA | test mAcc | samples/s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in epochs:
        val = f"{e['val_oa']:.4f}" if "val_oa" in e else "-"
        lines.append(
            f"| {e['epoch']} | {e['train_loss']:.4f} | {e['train_acc']:.4f} | {val} | "
            f"{e['test_oa']:.4f} | {e['test_macc']:.4f} | {e['samples_per_s']:.1f} |"
        )
    t = summary["test_last"]
    lines += ["", f"Final (last epoch) test OA {t['oa']:.4f}, mAcc {t['macc']:.4f} on "
              f"{t['num_samples']} shapes, no voting."]  # fmt: skip
    best = run / "best_eval.json"
    if best.is_file():
        b = json.loads(best.read_text())
        lines.append(f"best.pt (highest val OA): test OA {b['oa']:.4f}, mAcc {b['macc']:.4f}.")
    lines.append("")
    emit("\n".join(lines), args.write)


if __name__ == "__main__":
    main()
