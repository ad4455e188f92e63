"""usema.load: from a run to a segmentation in three lines."""

import numpy as np
import pytest
import torch
from PIL import Image

import usema
from usema.errors import CheckpointError


def test_three_lines_from_a_run_to_a_segmentation(two_fold_run, one_thread):
    data, run = two_fold_run
    image = sorted((data / "images").iterdir())[0]

    predictor = usema.load(run, device="cpu")
    segmentation = predictor.predict(image)

    assert [path.parent.name for path in predictor.checkpoints] == ["fold_0", "fold_1"]  # every trained fold
    assert predictor.tta and predictor.step_size == 0.5
    with Image.open(image) as opened:
        assert segmentation.shape == (opened.height, opened.width)
    assert segmentation.dtype == np.int64 and set(np.unique(segmentation)) <= {0, 1, 2}
    pixels = np.asarray(Image.open(image), dtype=np.float32)
    np.testing.assert_array_equal(predictor.predict(pixels, spacing=[1.0, 1.0]), segmentation)


def test_one_fold_predicts_with_its_own_network(two_fold_run, one_thread):
    _, run = two_fold_run
    single = usema.load(run, fold=1, device="cpu", tta=False)
    reference = torch.load(run / "fold_1" / "checkpoint_best.pt", weights_only=True)["model_state"]
    assert [path.parent.name for path in single.checkpoints] == ["fold_1"]
    for name, tensor in single.model.state_dict().items():
        torch.testing.assert_close(tensor, reference[name])
    with pytest.raises(CheckpointError, match="fold_2: fold 2 was never trained"):
        usema.load(run, folds=[1, 2])
