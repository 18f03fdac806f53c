"""Where a run reports: a progress bar, metrics.jsonl, and TensorBoard."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm


class RunLog:
    """Appends one JSON object per event to metrics.jsonl and mirrors scalars to TensorBoard."""

    def __init__(
        self, out_dir: Path, quiet: bool = False, tensorboard: bool = True, enabled: bool = True
    ) -> None:
        """`enabled=False` (ranks other than 0) writes and prints nothing."""
        self.out_dir = out_dir
        self.quiet = quiet or not enabled
        self.enabled = enabled
        self.path = out_dir / "metrics.jsonl"
        self.tb = None
        if tensorboard and enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # optional extra; JSON lines stay the source of truth
                self.info("tensorboard is not installed; logging to metrics.jsonl only")
            else:
                self.tb = SummaryWriter(str(out_dir / "tb"))

    def info(self, msg: str) -> None:
        if not self.quiet:
            tqdm.write(msg, file=sys.stderr)

    def log(self, event: str, step: int, **values: Any) -> None:
        if not self.enabled:
            return
        record = {"event": event, "step": step, "time": time.time(), **values}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(f"{event}/{key}", v, step)

    def progress(self, total: int, initial: int, desc: str) -> tqdm:
        """A bar only when a person is watching (a TTY) and not --quiet."""
        disable = self.quiet or not sys.stderr.isatty()
        return tqdm(
            total=total,
            initial=initial,
            desc=desc,
            disable=disable,
            leave=False,
            dynamic_ncols=True,
        )

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
