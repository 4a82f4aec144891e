"""What the fork server of a local generation cluster imports once, before it forks any worker.

Importing this module is the preload (`datasets/worker_start.py` says why): abTEM, stemdl's
simulate package and the shard task, ~3 s of imports that a spawned worker paid on its own.
Nothing else happens here; the client never imports it.
"""

import abtem  # noqa: F401

import stemdl.datasets.shard
import stemdl.simulate  # noqa: F401
