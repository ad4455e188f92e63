import math

import numpy as np
import pytest

from usema.evaluation.metrics import binary_scores, default_tolerance, image_diagonal_mm, score_classes


def _cubes(shift_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """A 4x4x4 reference cube and the same cube shifted by 2 voxels along `shift_axis`."""
    ref = np.zeros((12, 12, 12), dtype=bool)
    ref[2:6, 2:6, 2:6] = True
    pred = np.roll(ref, 2, axis=shift_axis)
    return pred, ref


def test_dice_equals_hand_count_on_two_boxes():
    ref = np.zeros((10, 10), dtype=bool)
    pred = np.zeros((10, 10), dtype=bool)
    ref[1:5, 1:4] = True  # 4 x 3 = 12 pixels
    pred[3:8, 2:4] = True  # 5 x 2 = 10 pixels
    # overlap: rows 3-4, columns 2-3 = 4 pixels
    expected = 2 * 4 / (12 + 10)
    assert binary_scores(pred, ref, (1.0, 1.0), 2.0)["dice"] == pytest.approx(expected)


def test_dice_equals_counted_voxels_on_random_masks():
    rng = np.random.default_rng(0)
    ref = rng.random((9, 8, 7)) > 0.6
    pred = rng.random((9, 8, 7)) > 0.5
    expected = 2 * np.count_nonzero(ref & pred) / (np.count_nonzero(ref) + np.count_nonzero(pred))
    assert binary_scores(pred, ref, (1.0, 1.0, 1.0), 1.0)["dice"] == pytest.approx(expected)


# Surface voxels of the 4x4x4 cube: 64 - 8 interior = 56. With the prediction shifted by 2 along one axis,
# the distances from either cube's surface to the other's are (by symmetry the same both ways):
#   16 voxels (the face left behind) at 2 steps along the shift axis,
#   12 voxels (the ring next to it) at 1 step along the shift axis,
#   24 voxels (the two rings where the cubes' surfaces coincide) at 0,
#    4 voxels (interior of the face inside the other cube) at 1 step along the closest axis.
# HD95: the top 16 of 56 sorted distances (indices 40..55) include the 95th percentile (index 52.25): 2 steps.
@pytest.mark.parametrize(
    ("shift_axis", "spacing", "step_mm", "closest_mm"),
    [
        (0, (2.0, 0.5, 0.5), 2.0, 0.5),
        (2, (0.5, 0.5, 2.0), 2.0, 0.5),
        (0, (0.5, 0.5, 2.0), 0.5, 0.5),
    ],
)
def test_nsd_and_hd95_of_shifted_cubes_with_anisotropic_spacing(shift_axis, spacing, step_mm, closest_mm):
    pred, ref = _cubes(shift_axis)
    distances = [2 * step_mm] * 16 + [step_mm] * 12 + [0.0] * 24 + [closest_mm] * 4
    for tolerance in (0.25, 0.5, 1.0, 2.0, 4.0):
        within = sum(d <= tolerance for d in distances)
        scores = binary_scores(pred, ref, spacing, tolerance)
        assert scores["nsd"] == pytest.approx(2 * within / (2 * 56)), tolerance
    assert scores["hd95"] == pytest.approx(2 * step_mm)
    # overlap: 2 of the 4 slices along the shift axis = 32 voxels of 64
    assert scores["dice"] == pytest.approx(2 * 32 / (64 + 64))


def test_nsd_values_spelled_out_for_the_2mm_axis():
    pred, ref = _cubes(0)
    spacing = (2.0, 0.5, 0.5)
    assert binary_scores(pred, ref, spacing, 1.0)["nsd"] == pytest.approx(28 / 56)  # 24 at 0 + 4 at 0.5 mm
    assert binary_scores(pred, ref, spacing, 2.0)["nsd"] == pytest.approx(40 / 56)  # + 12 at 2 mm
    assert binary_scores(pred, ref, spacing, 4.0)["nsd"] == pytest.approx(1.0)


def test_identical_masks_score_perfectly():
    _, ref = _cubes(0)
    scores = binary_scores(ref.copy(), ref, (1.0, 2.0, 3.0), 0.0)
    assert scores == pytest.approx({"dice": 1.0, "nsd": 1.0, "hd95": 0.0})


def test_empty_prediction_and_empty_reference_is_a_perfect_score():
    empty = np.zeros((6, 7, 8), dtype=bool)
    assert binary_scores(empty, empty, (1.0, 1.0, 1.0), 1.0) == {"dice": 1.0, "nsd": 1.0, "hd95": 0.0}


@pytest.mark.parametrize("predicted", [True, False])
def test_class_in_only_one_mask_scores_zero_and_the_image_diagonal(predicted):
    shape, spacing = (10, 20), (1.5, 0.5)
    empty = np.zeros(shape, dtype=bool)
    present = empty.copy()
    present[2:4, 5:9] = True
    pred, ref = (present, empty) if predicted else (empty, present)
    scores = binary_scores(pred, ref, spacing, 2.0)
    diagonal = math.sqrt((10 * 1.5) ** 2 + (20 * 0.5) ** 2)
    assert scores == pytest.approx({"dice": 0.0, "nsd": 0.0, "hd95": diagonal})
    assert image_diagonal_mm(shape, spacing) == pytest.approx(diagonal)


def test_score_classes_scores_each_label_with_its_own_tolerance():
    ref = np.zeros((8, 8), dtype=np.int64)
    pred = np.zeros((8, 8), dtype=np.int64)
    ref[1:4, 1:4] = 1
    pred[1:4, 1:4] = 1
    ref[5:7, 5:7] = 2
    pred[5:7, 4:6] = 2  # shifted by one column: half the pixels overlap
    scores = score_classes(pred, ref, [1, 2, 3], (1.0, 1.0), [2.0, 0.5, 1.0])
    assert scores[1] == pytest.approx({"dice": 1.0, "nsd": 1.0, "hd95": 0.0})
    assert scores[2]["dice"] == pytest.approx(2 * 2 / (4 + 4))
    # tolerance 0.5 px: the two shared columns of the 2x2 squares match, the shifted ones (1 px away) do not
    assert scores[2]["nsd"] == pytest.approx(4 / 8)
    assert scores[2]["hd95"] == pytest.approx(1.0)
    assert scores[3] == {"dice": 1.0, "nsd": 1.0, "hd95": 0.0}  # absent from both
    with pytest.raises(ValueError, match="tolerances"):
        score_classes(pred, ref, [1, 2], (1.0, 1.0), [1.0])


def test_shape_and_spacing_mismatches_are_refused():
    with pytest.raises(ValueError, match="shape"):
        binary_scores(np.ones((3, 3), bool), np.ones((3, 4), bool), (1.0, 1.0), 1.0)
    with pytest.raises(ValueError, match="spacing"):
        binary_scores(np.ones((3, 3), bool), np.ones((3, 3), bool), (1.0, 1.0, 1.0), 1.0)


def test_default_tolerance_is_1mm_in_3d_and_2px_in_2d():
    assert default_tolerance(3) == 1.0
    assert default_tolerance(2) == 2.0
