"""A simulate/-shaped module whose worker process SIGKILLs itself once, at sample
`KILL_AT`, the first time (a flag file named by $STEMDL_TEST_KILL_FLAG remembers it): the
synthetic samples of `datasets_fixtures` otherwise. For the test that a worker dying loses
nothing that the run cannot recover, the catalogue it held included."""

from __future__ import annotations

import os
import signal
from typing import Any

import datasets_fixtures as fx

KILL_AT = 2
build_catalogue = fx.build_catalogue


def simulate_sample(simulation: Any, index: int, catalogue: Any = None) -> Any:
    flag = os.environ["STEMDL_TEST_KILL_FLAG"]
    if index == KILL_AT and not os.path.exists(flag):
        with open(flag, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        os.kill(os.getpid(), signal.SIGKILL)
    return fx.synthetic_sample(simulation, index, catalogue)
