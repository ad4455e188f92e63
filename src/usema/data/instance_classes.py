"""Instance maps <-> the three training classes (background, interior, boundary) used to learn instances."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2
INSTANCE_CLASSES = {BACKGROUND: "background", INTERIOR: "interior", BOUNDARY: "boundary"}


def _instance_connectivity(ndim: int) -> np.ndarray:
    # Interiors of different instances are never 8-adjacent in 2D nor 18-adjacent in 3D (a shared face
    # neighbour would have to belong to both), so this connectivity joins each instance's interior, no more.
    return ndimage.generate_binary_structure(ndim, min(ndim, 2))


def instances_to_classes(instances: np.ndarray) -> np.ndarray:
    """Instance ids (0 = background) -> classes 0 background, 1 interior, 2 boundary (an instance's voxels
    that touch another value along an axis). Written with numpy shifts: MONAI has no 3-class instance
    encoding."""
    ids = np.asarray(instances)
    padded = np.pad(ids, 1, mode="edge")
    boundary = np.zeros(ids.shape, dtype=bool)
    for axis in range(ids.ndim):
        for shift in (-1, 1):
            window = [slice(1, -1)] * ids.ndim
            window[axis] = slice(1 + shift, padded.shape[axis] - 1 + shift)
            boundary |= padded[tuple(window)] != ids
    classes = np.where(boundary, BOUNDARY, INTERIOR).astype(np.int64)
    classes[ids == 0] = BACKGROUND
    return classes


def classes_to_instances(classes: np.ndarray, max_distance: float = 3.0, min_size: int = 0) -> np.ndarray:
    """Rebuild instance ids from a class map: connected interiors become instances, boundary voxels within
    `max_distance` join the nearest one, other boundary clusters become instances of their own; instances
    smaller than `min_size` voxels are dropped. Ids are 1..N."""
    classes = np.asarray(classes)
    structure = _instance_connectivity(classes.ndim)
    instances, count = ndimage.label(classes == INTERIOR, structure)
    boundary = classes == BOUNDARY
    if count and boundary.any():
        distance, nearest_index = ndimage.distance_transform_edt(instances == 0, return_indices=True)
        nearest = instances[tuple(nearest_index)]
        joined = boundary & (distance <= max_distance)
        instances[joined] = nearest[joined]
    leftover = boundary & (instances == 0)
    if leftover.any():
        extra, _ = ndimage.label(leftover, structure)
        instances[leftover] = extra[leftover] + count
    if min_size > 0:
        sizes = np.bincount(instances.ravel())
        instances[sizes[instances] < min_size] = 0
    _, relabelled = np.unique(instances, return_inverse=True)
    has_background = instances.size and instances.min() == 0
    return relabelled.reshape(instances.shape) + (0 if has_background else 1)
