"""Does a store hold what a model takes? Checked before any work, with both shapes named.

Why: a `small` model given the `tiny` store failed deep inside the first convolution with a
PyTorch RuntimeError about weight sizes, after staging and loader start-up; a checkpoint
trained on other patterns did the same in `evaluate`. The store's schema (per-sample shapes of
`cbed` and `potential`, from the config recorded in it) and the model's `SampleShape` are both
known up front, so the mismatch is refused at once, in words that say which is which.
"""

from __future__ import annotations

from stemdl.configs import SampleShape, StemdlError
from stemdl.datasets.store import open_stemdl_store


class StoreShapeError(StemdlError, ValueError):
    """The store's samples are not the shape the model was built for."""


def check_store_fits(store_url: str, shape: SampleShape, model_from: str) -> None:
    """`StoreShapeError` unless the store's per-sample `cbed` is (P, H, W) = `shape.input_shape`
    and `potential` is (C, H', W'); `model_from` says where the model's shape came from."""
    stemdl_store = open_stemdl_store(str(store_url))
    stored = stemdl_store.config.simulation.sample_shape  # the schema's (and the loader's) sizes
    store = {"cbed": stored.input_shape, "potential": stored.target_shape}
    model = {"cbed": shape.input_shape, "potential": shape.target_shape}
    if store != model:
        sim = stemdl_store.config.simulation
        raise StoreShapeError(
            f"{stemdl_store.url} does not fit the model of {model_from}: the store holds cbed "
            f"{store['cbed']} and potential {store['potential']} per sample (its config "
            f"{stemdl_store.config.name!r}: scan {tuple(sim.scan.gpts)}, pattern_px "
            f"{tuple(sim.detector.pattern_px)}, target_px {tuple(sim.target.target_px)}), the "
            f"model takes cbed {model['cbed']} and gives potential {model['potential']} (scan "
            f"{shape.scan_gpts}, pattern_px {shape.pattern_px}, target_px {shape.target_px}); "
            "use the config the store was made with, or a store made with this config")
