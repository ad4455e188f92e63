"""usema.preprocessing: the images of a dataset as the plan wants them (channels, normalisation, spacing), stored
once per run for training to stream from disk.

`preprocess_dataset(plans, run_dir)` stores every case of the plan under `run_dir/PREPROCESSED_DIR` (once);
`preprocess_image(image, geometry, plans)` is one image as the plan's network takes it.
"""

from usema.preprocessing.dataset import PREPROCESSED_DIR, preprocess_dataset
from usema.preprocessing.image import preprocess_image

__all__ = ["PREPROCESSED_DIR", "preprocess_dataset", "preprocess_image"]
