"""usema: medical image segmentation with SEMA attention (window softmax + global mean).

From a trained run to a segmentation in Python:

    import usema
    predictor = usema.load("RUN")                    # every trained fold (an ensemble), mirroring TTA on
    segmentation = predictor.predict("image.nii.gz")  # or an array (C, *spatial), optionally with its spacing
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # torch is imported only when a run is loaded
    from pathlib import Path

    from usema.inference.predictor import Predictor


def load(run_dir: str | Path, **options: Any) -> Predictor:
    """A predictor ready to segment with the run in `run_dir`: `.predict(image)` returns the label map of an
    image file or array on the image's own grid. `options` are `usema.inference.predictor.load_predictor`'s:
    `fold` or `folds` (default: every trained fold), `checkpoint` ("best" or "latest"), `device`, `precision`,
    `tta` (default True), `step_size` (default 0.5)."""
    from usema.inference.predictor import load_predictor

    return load_predictor(run_dir, **options)
