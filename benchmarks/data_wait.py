"""Fraction of training step time spent waiting for data, from a run folder's metrics.jsonl.

    python -m benchmarks.data_wait RUN_DIR [--goal 0.05]

Why: the design's rule is that the loader must never be what the trainer waits on (goal:
data wait < 5 % of step time). The trainer (`train/loop.py`) logs, per log window, the mean
per-step `data_s` (waiting for the next batch), `compute_s` (forward, backward, optimizer,
excluding the allreduce wait) and `allreduce_wait_s` (time in `synchronize()`), so a step
is data_s + compute_s + allreduce_wait_s. Windows hold different numbers of steps (the last
one of a run is usually short), so each window is weighted by its steps, read from the
`step` field; the first window counts from step 0 (or from the first logged step's own
window when a resumed run's history starts later).

Exit status 0 whether or not the goal is met (it is a report), 2 if there is nothing to read.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from stemdl.train.run_log import read_metrics


@dataclass(frozen=True)
class StepTimeSplit:
    """Seconds summed over the logged training steps."""

    steps: int
    data_s: float
    compute_s: float
    allreduce_wait_s: float

    @property
    def step_s(self) -> float:
        return self.data_s + self.compute_s + self.allreduce_wait_s

    @property
    def data_fraction(self) -> float:
        return self.data_s / self.step_s if self.step_s > 0 else 0.0


def split_step_time(run_dir: Path) -> StepTimeSplit:
    """Sum the per-window means of metrics.jsonl's `train` lines, weighted by window steps."""
    rows = read_metrics(run_dir, kind="train")
    if not rows:
        raise ValueError(f"{run_dir}/metrics.jsonl has no 'train' lines")
    steps = data = compute = wait = 0.0
    previous = 0
    for row in rows:
        window = max(1, int(row["step"]) - previous)
        previous = int(row["step"])
        steps += window
        data += window * float(row["data_s"])
        compute += window * float(row["compute_s"])
        wait += window * float(row["allreduce_wait_s"])
    return StepTimeSplit(int(steps), data, compute, wait)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--goal", type=float, default=0.05, help="data-wait fraction goal")
    args = parser.parse_args()
    try:
        split = split_step_time(args.run_dir)
    except (OSError, ValueError) as error:
        print(f"data_wait: {error}", file=sys.stderr)
        return 2
    verdict = "meets" if split.data_fraction < args.goal else "MISSES"
    print(f"{args.run_dir}: {split.steps} steps, mean step {split.step_s / split.steps:.4f} s = "
          f"data {split.data_s / split.steps:.4f} + compute {split.compute_s / split.steps:.4f} "
          f"+ allreduce wait {split.allreduce_wait_s / split.steps:.4f}")
    print(f"data wait {split.data_fraction:.2%} of step time ({verdict} the < {args.goal:.0%} "
          f"goal); allreduce wait {split.allreduce_wait_s / split.step_s:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
