"""A local cluster closes its workers before its scheduler: no ERROR (nor any warning of
Dask's, such as results lost with a closed worker) at shutdown.

The run is a real `generate` of a cut-down `tiny` store on a 2-worker LocalCluster, in a
Python process of its own so that the workers' stderr (they log there, through their nanny)
is captured with the client's; every record at WARNING and above of every process is kept.
"""

from __future__ import annotations

import json
from pathlib import Path

SCRIPT = """
import json, logging, sys
from stemdl.configs import config_from_dict, load_config
from stemdl.datasets.generate import generate

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    data = load_config("tiny").to_dict()
    data["dataset"].update(num_samples=8, shard_size=2)
    report = generate(config_from_dict(data), sys.argv[1], n_workers=2, progress=False)
    print(json.dumps({"complete": report.complete, "written": report.shards_written}))
"""


def test_generation_shuts_its_cluster_down_without_an_error(tmp_path: Path, run_python) -> None:
    script = tmp_path / "generate_tiny.py"
    script.write_text(SCRIPT)
    result = run_python([str(script), str(tmp_path / "s.zarr")], timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"complete": True, "written": [0, 1, 2, 3]}
    errors = [line for line in result.stderr.splitlines()
              if "ERROR" in line or "Traceback" in line or "heartbeat" in line
              or line.startswith("WARNING distributed")]  # e.g. a worker closed under a result
    assert not errors, result.stderr
