"""What a run reports: stdout (logging), TensorBoard, and metrics.jsonl, from rank 0 only.

metrics.jsonl has one JSON object per line, `{"kind": "train"|"validation"|..., "step": s, ...}`,
appended across resumes, so a crashed and resumed run has one file with its whole history
(steps redone after a resume appear twice; the later line is the one that counts).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("stemdl.train")


class RunLogger:
    """Writes only when `enabled` (rank 0), so callers need no rank checks."""

    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.jsonl_path = Path(out_dir) / "metrics.jsonl"
        self._writer = None
        if enabled:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(Path(out_dir) / "tb"))

    def info(self, message: str, *args: Any) -> None:
        if self.enabled:
            log.info(message, *args)

    def warning(self, message: str, *args: Any) -> None:
        if self.enabled:
            log.warning(message, *args)

    def record(self, kind: str, step: int, values: dict[str, float]) -> None:
        """One line of metrics.jsonl and one TensorBoard scalar per value."""
        if not self.enabled:
            return
        with open(self.jsonl_path, "a") as handle:
            handle.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")
        if self._writer is not None:
            for name, value in values.items():
                self._writer.add_scalar(f"{kind}/{name}", value, step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_metrics(out_dir: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The lines of metrics.jsonl (of one kind), later lines replacing earlier ones per step."""
    path = Path(out_dir) / "metrics.jsonl"
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if kind is None or row["kind"] == kind:
            latest[(row["kind"], row["step"])] = row
    return sorted(latest.values(), key=lambda row: (row["step"], row["kind"]))
