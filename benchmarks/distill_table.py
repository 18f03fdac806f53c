"""Run configs/distill recipes on ModelNet40 and write the comparison table.

    python benchmarks/distill_table.py run --workers 2 --threads 1 offline_kd kd scratch ...
    python benchmarks/distill_table.py table offline_kd kd scratch ... > table.md
    python benchmarks/distill_table.py run scratch kd --seeds 1 2   # more seeds: <out>_seed1, ...
    python benchmarks/distill_table.py run scratch kd --seeds 0 1 2 --tag e10 --set train.epochs=10
        # a budget of its own: <out>_e10, <out>_e10_seed1, ...; --set goes to new runs only

`run` works through the recipes with `--workers` processes of `--threads` threads each
(two one-thread workers get ~1.7x the throughput of one two-thread run on this 2-core
CPU for the tiny student), resuming any run that was interrupted and skipping finished
ones. Each child's peak resident memory comes from wait4(), so it is that run's own.
`table` reads the run folders: test OA / mAcc after the last epoch (never selected on
test), epochs, training wall time, samples/s, peak RSS, one row per run and then one per
recipe with the mean ± sample std over its finished seeds.

Run folders (`runs/`) need not outlive a session, so each finished run's figures (its
config, summaries, per-epoch log and process records: a few KB) are kept in
`benchmarks/results/<run folder name>/`, which is committed; `table` reads a run from
there when its folder is gone, and `pcdistill report` takes those folders as runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "configs" / "distill"
PCDISTILL = [str(Path(sys.executable).with_name("pcdistill"))]
RESULTS = ROOT / "benchmarks" / "results"


def run_folder(recipe: str, seed: int = 0, tag: str = "") -> Path:
    """The recipe's `out:` folder (+ `_tag`); seed 0 is the recipe's own seed, others get a
    suffix."""
    text = (RECIPES / f"{recipe}.yaml").read_text()
    out = next(line.split(":", 1)[1].strip() for line in text.splitlines()
               if line.startswith("out:"))  # fmt: skip
    out += f"_{tag}" if tag else ""
    return ROOT / (f"{out}_seed{seed}" if seed else out)


def run_one(recipe: str, threads: int, seed: int = 0, tag: str = "", sets: tuple = ()) -> str:
    out = run_folder(recipe, seed, tag)
    label = f"{recipe} seed {seed}" if seed else recipe
    if (out / "summary.json").is_file() or (_kept(out) / "summary.json").is_file():
        keep(out)
        return f"{label}: already finished"
    lock = out / "running.pid"  # another runner may be training this recipe right now
    if lock.is_file() and Path(f"/proc/{lock.read_text().strip()}").exists():
        return f"{label}: running in process {lock.read_text().strip()}, skipped"
    started = (out / "last.pt").is_file() or (out / "netaug" / "last.pt").is_file()
    if started:
        argv = [*PCDISTILL, "distill", "--resume", str(out), "--quiet"]
    else:
        argv = [*PCDISTILL, "distill", "--config", str(RECIPES / f"{recipe}.yaml"),
                "--quiet", f"train.threads={threads}", "train.checkpoint_every=50",
                f"seed={seed}", f"out={out}", *sets]  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(out / "stdout.log", "a") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        lock.write_text(str(proc.pid))
        _, status, usage = os.wait4(proc.pid, 0)
        lock.unlink(missing_ok=True)
    peak = {"peak_rss_mib": usage.ru_maxrss / 1024, "wall_s": time.time() - t0,
            "resumed": started, "exit": os.waitstatus_to_exitcode(status)}  # fmt: skip
    with open(out / "process.jsonl", "a") as f:
        f.write(json.dumps(peak) + "\n")
    keep(out)
    return f"{label}: exit {peak['exit']}, {peak['wall_s']:.0f} s, {peak['peak_rss_mib']:.0f} MiB"


def _kept(out: Path) -> Path:
    return RESULTS / out.name


def keep(out: Path) -> None:
    """Copy a finished run's figures to benchmarks/results/<run folder name>/, itself a
    run folder `pcdistill report` reads: config, summaries, process records and the
    per-epoch log (per-step lines dropped: they are most of the bytes). No-op while the
    run is unfinished or once kept."""
    kept = _kept(out)
    if not (out / "summary.json").is_file() or (kept / "summary.json").is_file():
        return
    for name in ("config.yaml", "process.jsonl", "netaug/summary.json", "netaug/config.yaml"):
        if (out / name).is_file():
            (kept / name).parent.mkdir(parents=True, exist_ok=True)
            (kept / name).write_bytes((out / name).read_bytes())
    lines = (out / "metrics.jsonl").read_text().splitlines()
    epochs = [line for line in lines if json.loads(line)["event"] != "train_step"]
    (kept / "metrics.jsonl").write_text("\n".join(epochs) + "\n")
    (kept / "summary.json").write_bytes((out / "summary.json").read_bytes())  # last: complete


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def load_result(out: Path) -> dict | None:
    """A finished run's figures, from its folder or else benchmarks/results; None if
    unfinished. Only `run` keeps runs: it appends the process record last."""
    folder = out if (out / "summary.json").is_file() else _kept(out)
    if not (folder / "summary.json").is_file():
        return None
    stage1 = folder / "netaug" / "summary.json"
    return {
        "summary": json.loads((folder / "summary.json").read_text()),
        "netaug_summary": json.loads(stage1.read_text()) if stage1.is_file() else None,
        "epochs": [e for e in _jsonl(folder / "metrics.jsonl") if e["event"] == "epoch"],
        "processes": _jsonl(folder / "process.jsonl"),
    }


def table(recipes: list[str], seeds: list[int], tag: str = "") -> str:
    rows = ["| method (configs/distill/) | seed | test OA | test mAcc | epochs | train time | "
            "samples/s (last epoch) | peak RSS |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    means = ["| method | seeds | test OA mean ± std | test mAcc mean ± std | train time (mean) | "
             "peak RSS (max) |", "|---|---|---|---|---|---|"]  # fmt: skip
    for recipe in recipes:
        finished = []
        for seed in seeds:
            result = load_result(run_folder(recipe, seed, tag))
            if result is None:
                rows.append(f"| {recipe} | {seed} | not finished | | | | | |")
                continue
            summary, stage1 = result["summary"], result["netaug_summary"]
            wall, n_epochs = summary["wall_time_s"], summary["epochs"]
            if stage1 is not None:
                wall += stage1["wall_time_s"]
                n_epochs = f"{stage1['epochs']} netaug + {n_epochs} KD"
            rss = max(p["peak_rss_mib"] for p in result["processes"])
            test = summary["test_last"]
            finished.append((test["oa"], test["macc"], wall, rss))
            rows.append(
                f"| {recipe} | {seed} | {test['oa']:.4f} | {test['macc']:.4f} | {n_epochs} | "
                f"{wall / 60:.1f} min | {result['epochs'][-1]['samples_per_s']:.1f} | "
                f"{rss:,.0f} MiB |"
            )
        if finished:
            oa, macc, wall, rss = zip(*finished, strict=True)
            means.append(
                f"| {recipe} | {len(finished)} | {_mean_std(oa)} | {_mean_std(macc)} | "
                f"{statistics.mean(wall) / 60:.1f} min | {max(rss):,.0f} MiB |"
            )
    return "\n".join(rows) + "\n\n" + "\n".join(means)


def _mean_std(values: tuple[float, ...]) -> str:
    """mean ± sample standard deviation (n - 1), as `pcdistill report` gives it; a single
    seed has no spread to show."""
    from pcdistill.report import mean_std

    if len(values) == 1:
        return f"{values[0]:.4f} (1 seed)"
    return "{:.4f} ± {:.4f}".format(*mean_std(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["run", "table"])
    parser.add_argument("recipes", nargs="+")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--tag", default="", help="run folders <out>_TAG: a budget's own set")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for new runs, e.g. train.epochs=10")  # fmt: skip
    args = parser.parse_args()
    if args.action == "table":
        print(table(args.recipes, args.seeds, args.tag))
        return
    jobs = [(r, s) for s in args.seeds for r in args.recipes]

    def run(job: tuple[str, int]) -> str:
        return run_one(job[0], args.threads, job[1], args.tag, tuple(args.set))

    with ThreadPoolExecutor(args.workers) as pool:
        for line in pool.map(run, jobs):
            print(line, flush=True)


if __name__ == "__main__":
    main()
