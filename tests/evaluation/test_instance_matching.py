import numpy as np
import pytest

from usema.evaluation.instance_matching import instance_scores, match_instances, pairwise_iou


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """Reference with 4 nuclei and a prediction with 2 true matches, 1 weak overlap and 2 spurious objects."""
    ref = np.zeros((20, 30), dtype=np.int64)
    pred = np.zeros_like(ref)
    ref[1:4, 1:4] = 5  # 9 px
    pred[1:4, 1:4] = 70  # identical: IoU 1 -> match
    ref[6:8, 1:6] = 9  # 10 px
    pred[6:8, 1:4] = 3  # 6 px inside it: IoU 6/10 = 0.6 -> match
    ref[10:12, 1:6] = 12  # 10 px
    pred[10:12, 1:3] = 300  # 4 px inside it: IoU 4/10 = 0.4 -> no match
    ref[15:18, 20:23] = 2  # missed entirely
    pred[1:3, 20:22] = 8  # spurious
    pred[15:17, 1:3] = 9  # spurious
    return pred, ref


def test_pairwise_iou_of_constructed_instances():
    pred, ref = _scene()
    iou, ref_ids, pred_ids = pairwise_iou(pred, ref)
    assert list(ref_ids) == [2, 5, 9, 12]
    assert list(pred_ids) == [3, 8, 9, 70, 300]
    expected = np.zeros((4, 5))
    expected[1, 3] = 1.0  # ref 5 / pred 70
    expected[2, 0] = 6 / 10  # ref 9 / pred 3
    expected[3, 4] = 4 / 10  # ref 12 / pred 300
    np.testing.assert_allclose(iou, expected)


def test_instance_f1_counts_matches_at_iou_half():
    pred, ref = _scene()
    match = match_instances(pred, ref)
    assert (match.tp, match.fp, match.fn) == (2, 3, 2)
    assert sorted(match.matched_iou) == pytest.approx([0.6, 1.0])
    scores = instance_scores(pred, ref)
    assert scores["precision"] == pytest.approx(2 / 5)
    assert scores["recall"] == pytest.approx(2 / 4)
    assert scores["f1"] == pytest.approx(2 * 2 / (2 * 2 + 3 + 2))
    assert (scores["tp"], scores["fp"], scores["fn"]) == (2, 3, 2)


def test_iou_of_exactly_half_is_a_match():
    ref = np.zeros((4, 8), dtype=np.int64)
    pred = np.zeros_like(ref)
    ref[0, 0:4] = 1  # 4 px
    pred[0, 0:2] = 1  # 2 px inside: IoU 2/4
    assert (match_instances(pred, ref).tp, match_instances(pred, ref).fn) == (1, 0)
    pred[0, 1] = 0  # 1 px inside: IoU 1/4
    assert match_instances(pred, ref).tp == 0


def test_a_prediction_spanning_two_nuclei_matches_neither():
    ref = np.zeros((6, 12), dtype=np.int64)
    ref[1:5, 1:5] = 1  # 16 px
    ref[1:5, 7:11] = 2  # 16 px
    pred = np.zeros_like(ref)
    pred[1:5, 1:11] = 4  # 40 px covering both: IoU 16/40 with each
    scores = instance_scores(pred, ref)
    assert (scores["tp"], scores["fp"], scores["fn"], scores["f1"]) == (0, 1, 2, 0.0)


def test_empty_maps_score_one_and_missing_everything_scores_zero():
    empty = np.zeros((5, 5), dtype=np.int64)
    assert instance_scores(empty, empty) == {"f1": 1.0, "precision": 1.0, "recall": 1.0, "tp": 0, "fp": 0, "fn": 0}
    ref = empty.copy()
    ref[1:3, 1:3] = 1
    scores = instance_scores(empty, ref)
    assert (scores["f1"], scores["precision"], scores["recall"], scores["fn"]) == (0.0, 0.0, 0.0, 1)
