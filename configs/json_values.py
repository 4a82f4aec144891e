"""`to_json_value`: numbers from NumPy and tuples made plain for `json.dumps`.

The one converter that `stemdl run` (metrics.json) and `stemdl predict` (prediction.json) both
use. It lives in the bottom layer because both layers above write JSON records of configs and
measurements, and neither may import the other.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def to_json_value(value: Any) -> Any:
    """`value` with dict keys as strings, tuples as lists and NumPy scalars as Python ones."""
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
