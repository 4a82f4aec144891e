"""The small reconstruction run (simulate, train `scan_pixels`), made once per test session.

`tests/test_reconstruction.py` scores it against the baselines and `tests/test_predict.py`
applies it to measured-like scans, so the model is trained once (~25 s on 2 cores), not twice.
The configuration: 10 prototype families, 2 zone axes, drawn thickness, defocus, C3 and
semi-angle; 192 samples of 4×4 patterns (21×21 px), 16×16 target; D4 augmentation, 40 epochs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stemdl.configs import StemdlConfig, config_from_dict, load_config

CHANGES = {
    "simulation": {
        "seed": 11,
        "structures": {"families": ["rocksalt", "zincblende", "wurtzite", "perovskite",
                                    "fluorite", "rutile", "bcc", "fcc", "hcp", "diamond"],
                       "materials_per_family": 5, "zone_axes": [[0, 0, 1], [0, 1, 1]],
                       "max_base_atoms": 64, "split_fractions": [0.7, 0.1, 0.2]},
        "thickness_a": [8.0, 32.0], "semiangle_mrad": [6.0, 12.0],
        "defocus_a": [-50.0, 50.0], "c30_a": [0.0, 10000.0],
        "scan": {"shift_a": 2.5},  # every placement on the lattice (see ScanConfig)
        "detector": {"pattern_px": [21, 21], "binning": 1},
        "target": {"target_px": [16, 16], "depth_sections": 1, "smoothing_px": 1.0},
    },
    "dataset": {"num_samples": 192, "shard_size": 8},
    # Standardized targets, as when the margins of test_reconstruction.py and
    # test_predict.py were measured: with the V·Å targets of the presets (issue 20) this model
    # kept its margins over the baselines, but its windows of the measured-like scan of
    # test_predict.py fell to r 0.44-0.51 (from above 0.75), an open problem of the physical
    # recipe at this size (benchmarks/RESULTS.md, "Physical units").
    "loader": {"shuffle_buffer": 32, "num_workers": 0, "augment": "d4",
               "standardize_targets": True},
    "model": {"thickness_head": False, "arrangement": "scan_pixels", "initial_features": 16, "growth_rate": 8,
              "n_pool": 1, "layers_per_block": [2, 2, 2], "norm": "batch",
              "scan_pixel_pool": 3},
    "train": {"batch_size": 8, "epochs": 40, "lr": 0.003, "warmup_steps": 10,
              "checkpoint_every": 10000, "validate_every": 10000,
              "validate_at_start": False, "log_every": 50},
}


def reconstruction_config() -> StemdlConfig:
    data = load_config("tiny").to_dict()
    for section, values in CHANGES.items():
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(data[section].get(key), dict):
                data[section][key].update(value)
            else:
                data[section][key] = value
    data["name"] = "beat-baselines"
    return config_from_dict(data, source="test_reconstruction")


@dataclass(frozen=True)
class ReconstructionRun:
    config: StemdlConfig
    store: str
    checkpoint: Path


_BUILT: dict[str, ReconstructionRun] = {}


def trained_reconstruction(root: Path) -> ReconstructionRun:
    """Simulate the store and train the model once per session (under `root`)."""
    from stemdl.datasets.generate import generate
    from stemdl.train.loop import train_main

    if "run" not in _BUILT:
        config = reconstruction_config()
        store = str(root / "reconstruction.zarr")
        report = generate(config, store, n_workers=2, progress=False)
        assert report.complete, report.summary()
        result = train_main(config, store, root / "reconstruction-run")
        _BUILT["run"] = ReconstructionRun(config, store, Path(result.checkpoint))
    return _BUILT["run"]


def reconstruction_checkpoint(root: Path) -> tuple[StemdlConfig, Path]:
    """The model's config and checkpoint under `root`: the checkpoint an earlier benchmark run
    left there if there is one (training is deterministic, so it is the same model), else
    trained now."""
    checkpoint = root / "reconstruction-run" / "checkpoint.pt"
    if checkpoint.exists():
        return reconstruction_config(), checkpoint
    run = trained_reconstruction(root)
    return run.config, run.checkpoint
