"""usema.data: datasets read and checked, and images read, with no plan involved.

The names other packages (the benchmarks, the analysis) use: `load_dataset(root, label_mode=None)` detects a
dataset's layout (MSD, nnU-Net, 2D folders) and returns its `DatasetSpec`; `load_case(spec, case)` reads one
case checked; `read_image(paths)` reads an image (one file, or one per channel) with its `ImageGeometry`;
`convert_channels` converts a 2D colour photograph to the channel count a model takes; `make_phantom_dataset`
writes a small generated dataset.
"""

from usema.data.channels import convert_channels
from usema.data.datasets import Case, DatasetSpec, load_case
from usema.data.io import ImageGeometry, read_image
from usema.data.layouts import load_dataset
from usema.data.phantoms import make_phantom_dataset

__all__ = [
    "Case",
    "DatasetSpec",
    "ImageGeometry",
    "convert_channels",
    "load_case",
    "load_dataset",
    "make_phantom_dataset",
    "read_image",
]
