"""`usema predict --save-probabilities`: the class probabilities of each case, in nnU-Net v2's layout.

Beside each segmentation, OUT/<case>.npz holds one array, `probabilities` (classes, *spatial) float32, on the
input image's grid (the segmentation is its argmax), and OUT/<case>.pkl a dict of the image's properties.
nnU-Net writes the same two files with `--save_probabilities`, and `nnUNetv2_ensemble` averages the
`probabilities` arrays of several such folders. The spatial axes are in usema's array order (NIfTI voxel order
i, j, k; rows, columns in 2D); nnU-Net's SimpleITK reader orders them z, y, x instead.

The properties hold what nnU-Net's do where usema has the same notion (`spacing`, `shape_before_cropping`,
`shape_after_cropping_and_before_resampling`, `bbox_used_for_cropping`: usema crops nothing, so the shapes are
the image's and the box is all of it) and usema's own: the case id, the input files, the class names and the
image geometry (`ImageGeometry.to_dict()`). Everything in it is a plain Python value (dict, list, str, int,
float, bool, None), so reading it back runs no code beyond the pickle module's own.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from usema.data.io import ImageGeometry
from usema.inference.inputs import InferenceCase
from usema.planning.plans import Plans
from usema.utils.atomic import atomic_path


def probability_paths(output: str | Path, case_id: str) -> tuple[Path, Path]:
    """OUT/<case>.npz and OUT/<case>.pkl."""
    return Path(output) / f"{case_id}.npz", Path(output) / f"{case_id}.pkl"


def case_properties(geometry: ImageGeometry, case: InferenceCase, plans: Plans) -> dict[str, Any]:
    """The .pkl's dict: nnU-Net's property names where they apply, then usema's (module docstring)."""
    shape = [int(s) for s in geometry.shape]
    return {
        "spacing": [float(s) for s in geometry.spacing],
        "shape_before_cropping": shape,
        "shape_after_cropping_and_before_resampling": shape,
        "bbox_used_for_cropping": [[0, s] for s in shape],
        "case_id": case.case_id,
        "images": [str(path) for path in case.images],
        "classes": dict(plans.dataset.labels),
        "label_mode": plans.dataset.label_mode,
        # the label value the segmentation files give each probability channel (None: instance ids)
        "label_values": plans.dataset.label_values,
        "geometry": geometry.to_dict(),
    }


def write_probabilities(
    probabilities: np.ndarray,
    geometry: ImageGeometry,
    case: InferenceCase,
    plans: Plans,
    output: Path,
) -> tuple[Path, Path]:
    """Write OUT/<case>.npz (`probabilities`, compressed) and OUT/<case>.pkl atomically; returns both."""
    npz, pkl = probability_paths(output, case.case_id)
    with atomic_path(npz) as tmp:
        np.savez_compressed(tmp, probabilities=np.asarray(probabilities, dtype=np.float32))
    with atomic_path(pkl) as tmp, open(tmp, "wb") as handle:
        pickle.dump(case_properties(geometry, case, plans), handle, protocol=pickle.HIGHEST_PROTOCOL)
    return npz, pkl
