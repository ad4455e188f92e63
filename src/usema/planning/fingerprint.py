"""The dataset fingerprint: what planning needs to know about the data, gathered by reading every case once.

Reading every case through `load_case` is also the up-front check of the whole dataset: a bad file raises
DataError here, before any training time is spent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from usema.data.datasets import Case, DatasetSpec, load_case

# Foreground intensities sampled per case (as nnU-Net): enough for stable percentiles, cheap to hold.
SAMPLES_PER_CASE = 10_000


def compute_fingerprint(
    spec: DatasetSpec, cases: Sequence[Case] | None = None, seed: int = 0
) -> dict[str, Any]:
    """Shapes, spacings, their medians, per-channel intensity statistics over foreground voxels (mean, std,
    0.5 and 99.5 percentiles), voxel counts per foreground class, and each case's foreground voxels (where
    every case has a label)."""
    cases = list(spec.cases if cases is None else cases)
    rng = np.random.default_rng(seed)
    shapes, spacings = [], []
    foreground: list[np.ndarray] = []
    everywhere: list[np.ndarray] = []  # used only when no case has any foreground
    class_voxels = np.zeros(spec.num_classes, dtype=np.int64)
    foreground_voxels: list[int] = []  # per case: what the validation subset is stratified by
    for case in tqdm(cases, desc="fingerprint", unit="case", disable=None):
        image, label, geometry = load_case(spec, case)
        shapes.append(list(geometry.shape))
        spacings.append(list(geometry.spacing))
        flat = image.reshape(image.shape[0], -1)
        everywhere.append(flat[:, rng.integers(0, flat.shape[1], SAMPLES_PER_CASE)])
        if label is not None:
            class_voxels += np.bincount(label.ravel(), minlength=spec.num_classes)[: spec.num_classes]
            inside = np.flatnonzero(label.ravel() > 0)
            foreground_voxels.append(int(inside.size))
            if inside.size:
                foreground.append(flat[:, inside[rng.integers(0, inside.size, SAMPLES_PER_CASE)]])
    samples = np.concatenate(foreground or everywhere, axis=1).astype(np.float64)
    intensity = [
        {
            "mean": float(channel.mean()),
            "std": float(channel.std()),
            "median": float(np.median(channel)),
            "min": float(channel.min()),
            "max": float(channel.max()),
            "p00_5": float(np.percentile(channel, 0.5)),
            "p99_5": float(np.percentile(channel, 99.5)),
        }
        for channel in samples
    ]
    return {
        "num_cases": len(cases),
        "shapes": shapes,
        "spacings": spacings,
        "median_shape": np.median(np.asarray(shapes), axis=0).tolist(),
        "median_spacing": np.median(np.asarray(spacings), axis=0).tolist(),
        "intensity": intensity,
        "intensity_over": "foreground" if foreground else "all voxels",
        "class_voxels": {str(k): int(class_voxels[k]) for k in range(1, spec.num_classes)},
        **({"foreground_voxels": foreground_voxels} if len(foreground_voxels) == len(cases) else {}),
    }
