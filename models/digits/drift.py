"""Data drift scenarios of the digits demo: how live inputs differ from the training data.

Used by the drift demo's traffic (``models/digits/drift_traffic.py``), by the retrain script
(which retrains on training data drifted the same way: the stand-in for freshly labelled live
data) and by the end-to-end test of the drift → retrain → canary → promote loop.
"""

import numpy as np

SCENARIOS = {
    # A scanner writing fainter strokes: every intensity × 0.6 (~70 % of the pixels drift).
    "faded": lambda x: x * np.float32(0.6),
    # Thicker, brighter strokes: + 2, clipped to the 0..16 range.
    "bright": lambda x: np.minimum(x + np.float32(2.0), np.float32(16.0)),
}


def apply(scenario: str, x: np.ndarray) -> np.ndarray:
    """The inputs `x` (float32 pixels 0..16) as they look under `scenario` ("none": as is)."""
    if scenario in ("", "none"):
        return x.astype(np.float32)
    if scenario not in SCENARIOS:
        raise SystemExit(f"unknown drift scenario {scenario!r}: one of {sorted(SCENARIOS)}")
    return SCENARIOS[scenario](x.astype(np.float32)).astype(np.float32)
