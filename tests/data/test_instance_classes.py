"""The instance <-> class encoding of instance labels (background, interior, boundary) and back."""

import numpy as np
import pytest

from usema.data.instance_classes import BOUNDARY, classes_to_instances, instances_to_classes


def _touching_instances(shape):
    """Discs (2D) or balls (3D) of several sizes, two of them touching, plus a 2-voxel speck."""
    grid = np.indices(shape)
    centres = [np.array(shape) * f for f in (0.25, 0.5, 0.75)]
    instances = np.zeros(shape, dtype=np.int64)
    for i, (centre, radius) in enumerate(zip(centres, (4.5, 5.5, 3.5), strict=True), start=1):
        ball = ((grid - centre.reshape(-1, *[1] * len(shape))) ** 2).sum(axis=0) <= radius**2
        instances[ball & (instances == 0)] = 10 * i  # ids need not be consecutive
    instances[(0,) * len(shape)] = 99
    instances[(1,) + (0,) * (len(shape) - 1)] = 99
    return instances


@pytest.mark.parametrize("shape", [(40, 36), (24, 22, 26)])
def test_instances_classes_round_trip(shape):
    instances = _touching_instances(shape)
    classes = instances_to_classes(instances)
    assert set(np.unique(classes)) == {0, 1, 2}
    assert np.all((classes > 0) == (instances > 0))
    rebuilt = classes_to_instances(classes)
    # the same partition up to renumbering: a one-to-one map between old and new ids
    pairs = set(zip(instances.ravel().tolist(), rebuilt.ravel().tolist(), strict=True))
    assert len(pairs) == len(np.unique(instances)) == len(np.unique(rebuilt))
    assert sorted(np.unique(rebuilt)) == list(range(len(np.unique(instances))))
    assert len(np.unique(classes_to_instances(classes, min_size=5))) == len(np.unique(instances)) - 1


def test_touching_instances_stay_apart():
    instances = np.zeros((12, 20), dtype=np.int64)
    instances[2:10, 2:10] = 1
    instances[2:10, 10:18] = 2  # shares an edge with instance 1
    classes = instances_to_classes(instances)
    assert np.all(classes[2:10, 9] == BOUNDARY) and np.all(classes[2:10, 10] == BOUNDARY)
    rebuilt = classes_to_instances(classes)
    assert len(np.unique(rebuilt[instances == 1])) == 1 and len(np.unique(rebuilt[instances == 2])) == 1
    assert rebuilt[5, 5] != rebuilt[5, 15]
